"""A simulated Domino Backup task (``load backup``) that runs its configuration's commands.

It reads a configuration document (the DXL dtstore ships, ``connectors/domino/config/``), and runs
each command as Domino runs a native OS command (type ``sCMD``), as documented by HCL: the command
text, a relative program name found in the Script Directory, with the parameters appended
(1 PhysicalFileName, 2 FileName, 3 BackupReference, 4 BackupNode, 5 BackupName, 6 BackupMode,
7 BackupStartDT, 8 BackupTargetDir, 9 RetentionDays / RestoreFileName, 10 RefString).  A result is
an error when the Error string is found in the output, a success only when the OK string is found
(HCL: "If error is matched the result is always error.  If OK String is set the OK string must be
matched").  A killed command prints nothing: no success.

* ``full`` (``load backup``): per database, backup mode on, a change made while it is on (it ends
  up in a ``.DELTA`` file), the Backup DB Command with the NSF, backup mode off, the Backup DB
  Command with the ``.DELTA``; in snapshot mode the file list (``PHYSICAL;LOGICAL`` lines) goes to
  the Backup Snapshot Command instead, then the ``.DELTA`` files to the Backup DB Command.
* ``translog`` (``load backup -t``): every complete extent not yet archived, in order, to the Backup
  Translog Command; an extent is marked archived (``NSFDoneArchivingLog``) only after its command
  reports success, and the first failure stops the run.
* ``restore``: the Restore DB Command per database and the Restore Translog Command per extent the
  media recovery asks for.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from tests.sim.domino.server import DominoSim

CONFIG = Path(__file__).resolve().parents[3] / "connectors" / "domino" / "config" / "dtstore_linux.dxl"
NS = {"dxl": "http://www.lotus.com/dxl"}


def read_config(path: Path = CONFIG) -> dict[str, str]:
    root = ET.parse(path).getroot()
    fields: dict[str, str] = {}
    for item in root.iter("{http://www.lotus.com/dxl}item"):
        text = item.find("dxl:text", NS)
        fields[item.attrib["name"]] = (text.text or "") if text is not None else ""
    return fields


@dataclass
class Result:
    command: list[str]
    exit_status: int
    output: str
    ok: bool


@dataclass
class TaskLog:
    results: list[Result] = field(default_factory=list)
    archived: list[int] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)


class BackupTask:
    def __init__(self, sim: DominoSim, *, config: dict[str, str] | None = None, script_dir: str | None = None,
                 env: dict[str, str] | None = None, node: str = "sim1", timeout: float = 300) -> None:
        self.sim = sim
        self.config = config if config is not None else read_config()
        self.script_dir = script_dir or self.config.get("ScriptDir", "")
        self.env = env
        self.node = node
        self.timeout = timeout
        self.log = TaskLog()
        self.start = time.strftime("%Y%m%dT%H%M%S", time.gmtime())

    # -- running one command ---------------------------------------------------------------------

    def argv(self, field_name: str, params: list[str]) -> list[str]:
        text = self.config.get(field_name, "")
        if not text:
            raise RuntimeError(f"the configuration has no {field_name}")
        if self.config.get(f"{field_name}_Type", "sCMD") != "sCMD":
            raise RuntimeError(f"{field_name}: only native OS commands (sCMD) are simulated")
        words = shlex.split(text)
        program = Path(self.script_dir) / words[0] if self.script_dir else Path(words[0])
        if not os.path.isabs(words[0]) and program.exists():
            words[0] = str(program)
        return [*words, *params]

    def run(self, field_name: str, params: list[str], ok_field: str, err_field: str) -> Result:
        argv = self.argv(field_name, params)
        try:
            done = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=self.timeout,
                                  check=False)
            output, status = done.stdout + done.stderr, done.returncode
        except subprocess.TimeoutExpired as exc:
            output, status = f"{exc.stdout or ''}{exc.stderr or ''}", -9
        ok_text, err_text = self.config.get(ok_field, ""), self.config.get(err_field, "")
        ok = not (err_text and err_text in output) and (not ok_text or ok_text in output) and status >= 0
        result = Result(argv, status, output, ok)
        self.log.results.append(result)
        if not ok:
            self.log.failed.append(f"{params[1] if len(params) > 1 else argv}: {output.strip()[-300:]}")
        return result

    def params(self, physical: Path | str, name: str, reference: str, mode: str, ninth: str = "") -> list[str]:
        return [str(physical), name, reference, self.node, "Default", mode, self.start,
                self.config.get("BackupTargetDirTranslog" if mode == "TRANSLOG" else "BackupTargetDirDb", ""),
                ninth or self.config.get("BackupRetentionDays", "30")]

    # -- backup ----------------------------------------------------------------------------------

    def full(self) -> TaskLog:
        state = self.sim.load()
        deltas: list[tuple[Path, str, str]] = []
        if self.config.get("BackupSnapshotMode") == "1":
            listing = self.sim.root / f"dominobackup_{self.start}.lst"
            lines = [f"{self.sim.data / name};{name}" for name in self.sim.databases()]
            listing.write_text("\n".join(lines) + "\n")
            for name in self.sim.databases():
                deltas.append(self._during_backup(name, state))
            self.run("BackupSnapshotCommand", self.params(listing, "", "", "SNAP"), "SnapshotOkString",
                     "SnapshotErrString")
        else:
            for name in self.sim.databases():
                dbiid = f"{state.dbiids.get(name, 0):016X}"
                self.run("BackupDbCommand", self.params(self.sim.data / name, name, dbiid, "FULL"),
                         "BackupOkString", "BackupErrString")
                deltas.append(self._during_backup(name, state))
        for delta, name, dbiid in deltas:
            self.run("BackupDbCommand", self.params(delta, name, dbiid, "DELTA"), "BackupOkString", "BackupErrString")
            delta.unlink()
        self.sim.save(state)
        return self.log

    def _during_backup(self, name: str, state: object) -> tuple[Path, str, str]:
        """A change while the database is in backup mode: its before-image goes to ``NAME.DELTA``."""
        path = self.sim.data / name
        delta = path.with_name(path.name + ".DELTA")
        delta.write_bytes(b"DTSIMDELTA" + os.urandom(256))
        return delta, name, "0"

    def translog(self) -> TaskLog:
        state = self.sim.load()
        for seq in self.sim.complete_extents():
            if seq <= self.sim.archived_through():
                continue
            path = self.sim.extent_path(seq)
            result = self.run("BackupTranslogCommand", self.params(path, path.name, state.log_id, "TRANSLOG"),
                              "BackupOkString", "BackupErrString")
            if not result.ok:
                break  # Domino retries this extent next time; nothing after it is archived meanwhile
            self.sim.mark_archived(seq)
            self.log.archived.append(seq)
        return self.log

    # -- restore ---------------------------------------------------------------------------------

    def restore(self, target: Path, databases: list[str], extents: list[int], *, start: str | None = None) -> TaskLog:
        state = self.sim.load()
        for name in databases:
            dest = target / f"{name}.DAD"
            dest.parent.mkdir(parents=True, exist_ok=True)
            params = self.params(self.sim.data / name, name, "", "FULL", str(dest))
            params[6] = start or self.start
            self.run("RestoreDbCommand", params, "RestoreOkString", "RestoreErrString")
        for seq in extents:
            name = f"S{seq:07d}.TXN"
            params = self.params(self.sim.extent_path(seq), name, state.log_id, "TRANSLOG", str(target / name))
            self.run("RestoreTranslogCommand", params, "RestoreOkString", "RestoreErrString")
        return self.log


__all__ = ["CONFIG", "BackupTask", "Result", "TaskLog", "read_config"]
