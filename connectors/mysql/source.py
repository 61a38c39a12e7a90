"""What ``dtstore snapshot mysql://…`` reads: a full dump, or the binary logs since the last snapshot.

* **Full**: one dump of every database (see ``dump.py``), streamed straight into the repository or,
  with ``--stage DIR``, written there first; then ``mysql/_grants.sql`` (``SHOW CREATE USER`` +
  ``SHOW GRANTS`` per account).  Recorded: the coordinates (``binlog``), the consistent time, and
  ``binlog_next``, where the next log snapshot must start.
* **Log**: ``FLUSH BINARY LOGS``, then every closed binlog from ``binlog_next`` of the newest
  snapshot, as ``binlog/<file>``: read from the binlog directory when the server is local, else
  fetched with ``mariadb-binlog --read-from-remote-server --raw``.  Before that the chain is checked
  (``chain.py``): the file the archive needs next must still be on the server and start with the
  recorded GTID state.  Nothing is ever purged.
* **Auto**: log when the chain allows it, else a full, with the reason recorded (``auto_reason``).

The core holds this server's source lock for the whole run (``exclusive``), and ``prepare()`` reads
the history under it, so two runs can never both continue one base.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from dtstore import clock
from dtstore.connectors import _proc
from dtstore.connectors.base import ChainCheck, RepositoryView, iso
from dtstore.connectors.entries import BLOCK, ChunkStream, bytes_entry, dir_entry, file_entry, path_entry
from dtstore.connectors.modes import choose_mode
from dtstore.connectors.mysql import meta
from dtstore.connectors.mysql.binlog import scan_binlog, utc_text
from dtstore.connectors.mysql.chain import KIND, NextBinlog, check_log_base, check_server_continuity
from dtstore.connectors.mysql.dump import (
    VIEWS_DIR,
    DumpSplitter,
    DumpTruncated,
    dump_command,
    item_path,
    views_item_path,
)
from dtstore.connectors.mysql.plan import coordinates
from dtstore.connectors.mysql.server import (
    Server,
    ServerInfo,
    binary_logs,
    binlog_start_state,
    data_size,
    grants_sql,
    non_transactional_tables,
    server_epoch,
    server_warnings,
)
from dtstore.connectors.mysql.url import MysqlUrl
from dtstore.connectors.source import ChainedSource
from dtstore.connectors.stage import OWNER_FILE, Stage
from dtstore.errors import ChainError, ConnectorError
from dtstore.sources.base import Entry, Reporter

GRANTS_PATH = "mysql/_grants.sql"



class MysqlSource(ChainedSource):
    """One ``dtstore snapshot mysql://…`` run (full, log, or auto = log when possible)."""

    kind = KIND

    def __init__(
        self,
        url: MysqlUrl,
        info: ServerInfo,
        databases: list[str],
        repo: RepositoryView | None,
        mode: str,
        stage_dir: Path | None,
    ) -> None:
        self.url, self.info, self.databases, self.repo = url, info, databases, repo
        self.mode, self.stage_dir = mode, stage_dir
        self.history = []
        self._meta: dict[str, Any] = {}

    def metadata(self) -> dict[str, Any]:
        meta.check(self._meta)  # what the planner will read back, checked before the commit
        return self._meta

    def estimated_size(self) -> int:
        """For the progress bar: binlog bytes not yet archived (log/auto), else InnoDB data size."""
        with Server(self.url) as server:
            expected = NextBinlog.of(self.history[-1].meta) if self.history and self.mode != "full" else None
            logs = binary_logs(server) if expected and self.info.log_bin else []
            names = [n for n, _ in logs]
            if expected and expected.file in names:
                return sum(size for _, size in logs[names.index(expected.file) :])
            return data_size(server, self.databases)

    def entries(self, reporter: Reporter) -> Iterator[Entry]:
        self._meta = {
            "format": meta.METADATA_FORMAT,
            "requested_mode": self.mode,
            "server": self.info.to_json(),
            "started_at": iso(clock.now()),
            "url": self.url.display(),
            "warnings": server_warnings(self.info),
        }
        mode, reason = self._decide_mode()
        if reason:
            self._meta["auto_reason"] = reason
        self._meta["mode"] = mode
        yield from (self._full_entries() if mode == "full" else self._log_entries())
        self._meta["finished_at"] = iso(clock.now())
        for warning in self._meta["warnings"]:  # the snapshot is made, but promises less: exit 3
            reporter.warn(b"mysql", warning)

    # -- mode -----------------------------------------------------------------------------------

    def _decide_mode(self) -> tuple[str, str | None]:
        if self.mode == "log" and not self.info.log_bin:
            raise ConnectorError(
                "log mode needs binary logging: start the server with --log-bin and a "
                "server_id (full snapshots work without it)"
            )
        choice = choose_mode(self.mode, log=self._log_check)
        return choice.mode, choice.reason

    def _log_check(self) -> ChainCheck:
        if not self.info.log_bin:
            return ChainCheck.broken("binary logging is off on the server")
        check = check_log_base(self.history)
        if not check.ok:
            return check
        expected = NextBinlog.of(self.history[-1].meta)
        if expected is None:  # check_log_base has ruled this out
            return ChainCheck.broken("the latest snapshot has no binlog coordinates")
        with Server(self.url) as server:
            logs = binary_logs(server)
            state = binlog_start_state(server, expected.file) if expected.file in dict(logs) else None
        return check_server_continuity(expected, logs, state)

    # -- full -----------------------------------------------------------------------------------

    def _full_entries(self) -> Iterator[Entry]:
        self._meta.update(all_databases=not self.url.databases, databases=[], views=[], binlog=None, gtid=None,
                          dump=None)
        with Server(self.url) as server:
            offset = server_epoch(server) - clock.now().timestamp()
            risky = self._meta["non_transactional_tables"] = non_transactional_tables(server, self.databases)
            if not self.databases:
                self._record_master_status(server)
        if risky:
            self._meta["warnings"].append(f"non-InnoDB tables are not covered by --single-transaction: {risky}")
        yield dir_entry("mysql")
        if self.databases:
            dump = self._staged_dump if self.stage_dir else self._streamed_dump
            yield from dump(offset)
        with Server(self.url) as server:
            data, accounts = grants_sql(server, self.info.flavor)
            self._record_next(server)
        self._meta["grants"] = {"path": GRANTS_PATH, "accounts": accounts, "bytes": len(data)}
        yield bytes_entry(GRANTS_PATH, data)

    def _record_master_status(self, server: Server) -> None:
        sql = "SHOW MASTER STATUS"
        if self.info.flavor == "mysql" and self.info.version_tuple >= (8, 2):
            sql = "SHOW BINARY LOG STATUS"
        rows = server.query(sql) if self.info.log_bin else []
        self._meta["binlog"] = {"file": rows[0][0], "pos": int(rows[0][1])} if rows else None
        self._meta["gtid"] = (
            str(server.value("SELECT @@gtid_binlog_pos")) if rows and self.info.flavor == "mariadb" else None
        )
        self._meta["consistent_at"] = utc_text(server_epoch(server))

    def _record_next(self, server: Server) -> None:
        """Where the next log snapshot must start: the binlog that held the full's position."""
        coords = coordinates(self._meta)
        nxt = NextBinlog(coords.file, binlog_start_state(server, coords.file)) if coords else None
        self._meta["binlog_next"] = nxt.to_json() if nxt else None

    def _dump_tool(self) -> str:
        names = ("mariadb-dump", "mysqldump") if self.info.flavor == "mariadb" else ("mysqldump",)
        return _proc.find_tool(*names)

    def _start_dump(self) -> _proc.ToolProcess:
        argv = dump_command(self._dump_tool(), self.url, self.info, self.databases)
        self._meta["dump"] = {
            "tool": os.path.basename(argv[0]),
            "options": argv[1 + len(self.url.client_args()) :],
            "exit_status": None,
            "bytes": 0,
            "staged": self.stage_dir is not None,
        }
        return _proc.ToolProcess(argv, env=self.url.env(), secrets=[self.url.password() or ""])

    def _on_header(self, splitter: DumpSplitter, offset: float) -> None:
        """The dump's consistent point is fixed once its header is out: record coordinates and time."""
        if "consistent_at" not in self._meta:
            self._meta["consistent_at"] = utc_text(clock.now().timestamp() + offset)
            coords = splitter.coordinates
            self._meta["binlog"] = {"file": coords.file, "pos": coords.pos} if coords else None
            if self.info.log_bin and coords is None:
                raise ConnectorError("the dump did not report binlog coordinates (CHANGE MASTER comment missing)")

    def _finish_dump(self, proc: _proc.ToolProcess, splitter: DumpSplitter) -> None:
        """Called after the last section: the dump must have exited 0 and written its trailer."""
        code = proc.wait()
        self._meta["dump"]["exit_status"] = code
        proc.check()
        if not splitter.completed:
            raise ConnectorError(f"{proc.label} exited 0 but its output has no '-- Dump completed' trailer")
        self._meta["gtid"] = splitter.gtid

    def _record_database(self, name: str, size: int) -> None:
        self._meta["databases"].append({"name": name, "path": item_path(name), "bytes": size})
        self._meta["dump"]["bytes"] += size

    def _streamed_dump(self, offset: float) -> Iterator[Entry]:
        with self._start_dump() as proc:
            splitter = DumpSplitter(proc.stdout, self.databases)
            for i, name in enumerate(self.databases):
                last = i == len(self.databases) - 1
                opener = partial(self._open_section, proc, splitter, name, offset, last)
                yield file_entry(item_path(name), opener)
            yield from self._view_entries(splitter.views)

    def _view_entries(self, views: dict[str, bytes]) -> Iterator[Entry]:
        """The real view definitions, one item per database that has views (see DumpSplitter)."""
        if views:
            yield dir_entry(VIEWS_DIR)
        for name, data in views.items():
            self._meta["views"].append({"name": name, "path": views_item_path(name), "bytes": len(data)})
            self._meta["dump"]["bytes"] += len(data)
            yield bytes_entry(views_item_path(name), data)

    @contextlib.contextmanager
    def _open_section(
        self, proc: _proc.ToolProcess, splitter: DumpSplitter, name: str, offset: float, last: bool
    ) -> Iterator[BinaryIO]:
        raw = ChunkStream(self._section_chunks(proc, splitter, name, offset))
        try:
            with io.BufferedReader(raw, BLOCK) as stream:
                yield stream
                raw.drain()  # the next section starts where this one ends, read or not
        except BaseException:
            proc.kill()
            raise
        self._record_database(name, raw.count)
        if last:
            self._finish_dump(proc, splitter)

    def _section_chunks(
        self, proc: _proc.ToolProcess, splitter: DumpSplitter, name: str, offset: float
    ) -> Iterator[bytes]:
        chunks = splitter.section(name)
        try:
            first = next(chunks)  # the header: the consistent point is now fixed
            self._on_header(splitter, offset)
            yield first
            yield from chunks
        except DumpTruncated as exc:
            self._meta["dump"]["exit_status"] = proc.wait()
            proc.check()  # a failed dump explains itself through its exit status and stderr
            raise ConnectorError(f"{proc.label} exited 0 but its output ends before database {exc}") from exc

    def _staged_dump(self, offset: float) -> Iterator[Entry]:
        if self.stage_dir is None:
            raise ConnectorError("a staged dump needs --stage DIR")
        with Server(self.url) as server:
            need = data_size(server, self.databases)  # the dump text is about as large as the data
        with Stage(self.stage_dir, KIND, need_bytes=need) as stage:
            files, views = self._dump_to_stage(stage, offset)
            for name, path in zip(self.databases, files, strict=True):
                yield path_entry(item_path(name), path)
            yield from self._view_entries(views)

    def _dump_to_stage(self, stage: Stage, offset: float) -> tuple[list[Path], dict[str, bytes]]:
        files = []
        with self._start_dump() as proc:
            splitter = DumpSplitter(proc.stdout, self.databases)
            for i, name in enumerate(self.databases):
                path, size = stage.write(f"{i:05d}.sql", self._section_chunks(proc, splitter, name, offset))
                self._record_database(name, size)
                files.append(path)
            self._finish_dump(proc, splitter)
        return files, splitter.views

    # -- log ------------------------------------------------------------------------------------

    def _log_entries(self) -> Iterator[Entry]:
        base = self.history[-1]
        expected = NextBinlog.of(base.meta)
        if expected is None:  # _decide_mode chose log only after check_log_base
            raise ChainError(f"snapshot {base.short_id} has no binlog coordinates to continue from")
        with Server(self.url) as server:
            server.query("FLUSH BINARY LOGS")
            logs = binary_logs(server)
            names = [n for n, _ in logs]
            if expected.file not in names:
                raise ChainError(f"binlog {expected.file} disappeared from the server during the snapshot")
            closed = logs[names.index(expected.file) : -1]
            nxt = NextBinlog(names[-1], binlog_start_state(server, names[-1]))
        self._meta.update(parent=base.id, binlog_from=expected.to_json(), binlog_next=nxt.to_json(), binlogs=[])
        yield dir_entry("binlog")
        with self._binlog_fetcher() as fetch:
            for name, size in closed:
                path = fetch(name)
                self._record_binlog(name, size, path, expected if name == expected.file else None, logs)
                yield path_entry(f"binlog/{name}", path)
        first, last = self._meta["binlogs"][0], self._meta["binlogs"][-1]
        self._meta.update(
            binlog_first=first["name"],
            binlog_last=last["name"],
            binlog_end={"file": last["name"], "pos": last["size"]},
            covered_until=last["last_event_time"],
        )

    def _record_binlog(
        self, name: str, size: int, path: Path, expected: NextBinlog | None, logs: Sequence[tuple[str, int]]
    ) -> None:
        scan = scan_binlog(path)
        names = [n for n, _ in logs]
        following = names[names.index(name) + 1]
        if scan.size != size or not scan.closed or scan.rotate_to != following:
            raise ConnectorError(
                f"binlog {name} is not the closed file the server lists ({scan.size} bytes, "
                f"server says {size}; rotates to {scan.rotate_to}, expected {following})"
            )
        if expected and self.info.flavor == "mariadb" and scan.start_state != expected.start_state:
            raise ChainError(f"binlog {name} starts at GTID state {scan.start_state}, expected {expected.start_state}")
        self._meta["binlogs"].append(
            {
                "name": name,
                "path": f"binlog/{name}",
                "size": size,
                "first_event_time": utc_text(scan.first_event_time),
                "last_event_time": utc_text(scan.last_event_time),
                "start_state": scan.start_state,
                "rotate_to": scan.rotate_to,
            }
        )

    @contextlib.contextmanager
    def _binlog_fetcher(self) -> Iterator[Callable[[str], Path]]:
        """Yields ``fetch(name) -> path``: the server's own file, or a copy fetched over the protocol."""
        directory = Path(self.info.log_bin_basename or "").parent
        first = self._meta["binlog_from"]["file"]
        local = self.url.binlogs == "local" or (
            self.url.binlogs == "auto" and self.url.is_local() and os.access(directory / first, os.R_OK)
        )
        self._meta["transfer"] = "local" if local else "remote"
        if local:
            if not os.access(directory / first, os.R_OK):
                raise ConnectorError(f"binlogs=local but {directory / first} is not readable here")
            yield lambda name: directory / name
            return
        with Stage(self.stage_dir or Path(tempfile.gettempdir()), KIND) as stage:
            yield partial(self._fetch_remote, stage.path)

    def _fetch_remote(self, directory: Path, name: str) -> Path:
        for old in directory.glob("*.*"):  # keep at most one fetched file on disk (owner.pid stays)
            if old.name != OWNER_FILE:
                old.unlink()
        tool = (
            _proc.find_tool("mariadb-binlog", "mysqlbinlog")
            if self.info.flavor == "mariadb"
            else _proc.find_tool("mysqlbinlog")
        )
        argv = [
            tool,
            *self.url.client_args(),
            "--read-from-remote-server",
            "--raw",
            f"--result-file={directory}{os.sep}",
            name,
        ]
        _proc.run(argv, env=self.url.env(), secrets=[self.url.password() or ""])
        return directory / name
