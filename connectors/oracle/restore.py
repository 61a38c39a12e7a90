"""Executing an Oracle restore plan on the database host (locally, or over SSH/SFTP).

1. Before anything is written: every snapshot the plan reads must exist, and no destination data
   file or control file may exist: the files of a database (running or not) are never overwritten;
   restore beside it with ``--target-dir`` or move its files away first.
2. The folders are made (``mkdir -p``; ``cmd /c mkdir`` on Windows hosts), then each data file,
   the control file backup (to every ``control_files`` location), the PFILE (its paths converted
   like the files) and the archived logs (into the stage folder, named by ``log_archive_format``)
   are written through the runner: ``*.partial``, fsync, rename; every item's SHA-256 and size are
   checked against the manifest.
3. ``sqlplus -S /nolog`` runs the plan's script on the host (``ORACLE_SID`` set).  A non-zero exit is
   a ConnectorError carrying SQL*Plus's ORA- lines.  The staged logs are then removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
from collections.abc import Iterator
from typing import Any

from dtstore.connectors.base import RepositoryView
from dtstore.connectors.entries import BLOCK
from dtstore.connectors.oracle.plan import OracleRestorePlan, PlannedFile, host_path
from dtstore.connectors.oracle.session import runner_for
from dtstore.connectors.oracle.url import OracleUrl
from dtstore.connectors.runner import CommandRunner
from dtstore.errors import ConnectorError, IntegrityError
from dtstore.progress import ProgressCallback, ProgressEvent


def _blocks(repo: RepositoryView, snapshot: Any, item: PlannedFile, digest: Any) -> Iterator[bytes]:
    with contextlib.closing(repo.open_item(snapshot, item.item)) as src:
        while block := src.read(BLOCK):
            digest.update(block)
            yield block


def _put(runner: CommandRunner, repo: RepositoryView, snapshot: Any, item: PlannedFile, *,
         overwrite: bool = False) -> None:
    digest = hashlib.sha256()
    size = runner.write_file(item.dest, _blocks(repo, snapshot, item, digest), overwrite=overwrite, mode=0o640)
    bad = (item.size is not None and size != item.size) or (item.sha256 and digest.hexdigest() != item.sha256)
    if bad:
        with contextlib.suppress(ConnectorError):
            runner.remove(item.dest)
        raise IntegrityError(f"{item.item} from snapshot {snapshot.short_id} does not match the size and hash its "
                             "manifest records")


def convert_pfile(text: str, convert: list[tuple[str, str]]) -> str:
    for old, new in convert:
        text = re.sub(re.escape(old) + r"(?=[/\\'\",\s]|$)", new.replace("\\", "\\\\"), text, flags=re.MULTILINE)
    return text


def _mkdirs(runner: CommandRunner, folders: list[str], windows: bool) -> None:
    if windows:
        for folder in folders:
            if not runner.exists(folder):
                runner.run(["cmd", "/c", "mkdir", folder], label="mkdir")
    else:
        runner.run(["mkdir", "-p", "--", *folders], label="mkdir")


def execute_restore(plan: OracleRestorePlan, url: OracleUrl, repo: RepositoryView, progress: ProgressCallback) -> None:
    needed = {plan.full.id, *(f.snapshot_id for f in plan.logs)}
    snaps = {s.id: s for s in repo.snapshots() if s.id in needed}
    missing = sorted(needed - set(snaps))
    if missing:
        gone = ", ".join(m[:8] for m in missing)
        raise ConnectorError(f"snapshot(s) {gone} of the plan are gone from the repository")
    with runner_for(url) as runner:
        present = [f.dest for f in [*plan.datafiles, *plan.control_files] if runner.exists(f.dest)]
        if present:
            shown = ", ".join(present[:3]) + (f" and {len(present) - 3} more" if len(present) > 3 else "")
            raise ConnectorError(f"refusing to overwrite the files of a database: {shown} exist on {runner.host}; "
                                 "restore beside it with --target-dir DIR, or shut it down and move its files away")
        folders = sorted({str(host_path(f.dest, plan.windows).parent)
                          for f in [*plan.datafiles, *plan.control_files, plan.pfile]} | {plan.stage_dir})
        _mkdirs(runner, folders, plan.windows)
        full = snaps[plan.full.id]
        for f in plan.datafiles:
            progress(ProgressEvent("restore", current=f.dest, message="data file"))
            _put(runner, repo, full, f)
        for f in plan.control_files:
            progress(ProgressEvent("restore", current=f.dest, message="control file"))
            _put(runner, repo, full, f)
        with contextlib.closing(repo.open_item(full, plan.pfile.item)) as src:
            text = src.read().decode()
        runner.write_file(plan.pfile.dest, [convert_pfile(text, plan.convert).encode()], overwrite=True, mode=0o640)
        for f in plan.logs:
            progress(ProgressEvent("restore", current=f.label, message="archived log"))
            _put(runner, repo, snaps[f.snapshot_id], f, overwrite=True)
        progress(ProgressEvent("restore", message="SQL*Plus: mount, recover, open resetlogs"))
        name = str(plan.full.meta.get("name", ""))
        result = runner.run([url.sqlplus, "-S", "/nolog"], stdin=plan.script.encode(), env={"ORACLE_SID": name},
                            check=False, label="sqlplus")
        output = result.stdout.decode(errors="replace")
        if result.exit_status != 0:
            errors = [line for line in output.splitlines() if re.match(r"(ORA|SP2|LRM)-\d+", line.strip())]
            raise ConnectorError(f"sqlplus exited with status {result.exit_status} on {runner.host}: "
                                 + (" | ".join(errors[-6:]) or output[-1000:] or result.stderr))
        for f in plan.logs:
            with contextlib.suppress(ConnectorError):
                runner.remove(f.dest)
    progress(ProgressEvent("restore", message="done"))


__all__ = ["convert_pfile", "execute_restore"]
