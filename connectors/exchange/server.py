"""What the connector runs on the Exchange server: discovery (PowerShell), VSS (``diskshadow``), ``wbadmin``.

* **Discovery** (Exchange 2007 onwards): one ``powershell -NoProfile -NonInteractive -Command SCRIPT``
  whose script loads the Exchange snap-in and prints ``Get-MailboxDatabase -Server $env:COMPUTERNAME
  -Status`` as JSON: name, GUID, EDB path, log folder, log prefix, mount state, circular logging, and
  the volume (``GetPathRoot``) of the EDB and the logs.  Exchange 2000/2003 have no such cmdlet: their
  databases are backed up in file mode or through the streaming API (``spec/connectors-exchange.md`` §2).
* **VSS**: ``diskshadow`` started once per run, its commands written to its standard input:
  ``set context persistent``, ``set metadata``, ``writer verify`` (the Exchange writer), ``begin
  backup``, ``add volume … alias …``, ``create``, ``expose %alias% FOLDER``.  The files are read from the
  exposed folders.  The session stays open until the snapshot is committed: :meth:`ShadowSession.complete`
  writes ``end backup`` (BackupComplete, after which Exchange truncates its logs) only then, from
  ``committed()``.  :meth:`ShadowSession.abort` (a failed run), or the end of its input (dtstore killed),
  ends the session without ``end backup``: Exchange truncates nothing.
* **System state**: ``wbadmin start systemstatebackup -backupTarget:TARGET -quiet``.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from dtstore.connectors import _proc
from dtstore.connectors.exchange.ese import windows_aware
from dtstore.connectors.runner import CommandRunner
from dtstore.errors import ConnectorError

EXCHANGE_WRITER = "{76fe1ac4-15f7-4bcd-987e-8e1acb462fb7}"
DISCOVERY_SCRIPT = (
    "$ErrorActionPreference = 'Stop'; "
    "Add-PSSnapin Microsoft.Exchange.Management.PowerShell.SnapIn -ErrorAction SilentlyContinue; "
    "$dbs = Get-MailboxDatabase -Server $env:COMPUTERNAME -Status | Where-Object { -not $_.Recovery }; "
    "$rows = @(foreach ($d in $dbs) { [pscustomobject]@{ Name = $d.Name; Guid = $d.Guid.ToString(); "
    "EdbFilePath = $d.EdbFilePath.PathName; LogFolderPath = $d.LogFolderPath.PathName; "
    "LogFilePrefix = $d.LogFilePrefix; Mounted = [bool]$d.Mounted; "
    "CircularLoggingEnabled = [bool]$d.CircularLoggingEnabled; "
    "EdbVolume = [System.IO.Path]::GetPathRoot($d.EdbFilePath.PathName); "
    "LogVolume = [System.IO.Path]::GetPathRoot($d.LogFolderPath.PathName) } }); "
    "$version = (Get-ExchangeServer -Identity $env:COMPUTERNAME).AdminDisplayVersion.ToString(); "
    "[pscustomobject]@{ Server = $env:COMPUTERNAME; Version = $version; Databases = $rows } "
    "| ConvertTo-Json -Depth 4 -Compress"
)


def powershell(script: str) -> list[str]:
    return [_proc.find_tool("powershell", "powershell.exe", "pwsh"), "-NoProfile", "-NonInteractive", "-Command",
            script]


@dataclass(frozen=True)
class Database:
    name: str
    guid: str
    edb: str
    log_folder: str
    prefix: str
    mounted: bool
    circular: bool
    edb_volume: str
    log_volume: str


@dataclass(frozen=True)
class Discovery:
    server: str
    version: str
    databases: list[Database]


def discover(runner: CommandRunner) -> Discovery:
    result = runner.run(powershell(DISCOVERY_SCRIPT), check=False, label="powershell Get-MailboxDatabase")
    if result.exit_status != 0:
        if "not recognized" in result.stderr:
            raise ConnectorError(
                "Get-MailboxDatabase does not exist on this server (Exchange 2000/2003, or the Exchange "
                "Management Shell is not installed): back up its databases in file mode, "
                "exchange:///?edb=PATH&logs=DIR, from a copy or a dismounted database")
        raise ConnectorError(f"powershell Get-MailboxDatabase exited with status {result.exit_status} on "
                             f"{runner.host}: {result.stderr}")
    try:
        data = json.loads(result.stdout.decode("utf-8-sig"))
        rows = data["Databases"] or []
        if isinstance(rows, dict):  # ConvertTo-Json writes a one-element array as the element
            rows = [rows]
        dbs = [Database(str(r["Name"]), str(r["Guid"]), str(r["EdbFilePath"]), str(r["LogFolderPath"]),
                        str(r["LogFilePrefix"]).upper(), bool(r["Mounted"]), bool(r["CircularLoggingEnabled"]),
                        str(r["EdbVolume"]), str(r["LogVolume"])) for r in rows]
        return Discovery(str(data["Server"]), str(data.get("Version") or ""), dbs)
    except (ValueError, KeyError, TypeError) as exc:
        raise ConnectorError(f"unexpected output from Get-MailboxDatabase: {exc}") from exc


class ShadowSession:
    """One ``diskshadow`` backup session: the shadow copies stay exposed until complete() or abort()."""

    def __init__(self, runner: CommandRunner, volumes: Sequence[str], expose_to: Sequence[PurePath], *,
                 metadata_file: PurePath, timeout: float = 600.0) -> None:
        self.runner, self.volumes, self.expose_to = runner, list(volumes), list(expose_to)
        self.output: list[str] = []
        self._done = threading.Event()
        self._tool = _proc.ToolProcess([_proc.find_tool("diskshadow", "diskshadow.exe")], env=_proc.tool_env(),
                                       stdin=subprocess.PIPE, label="diskshadow")
        self._reader = threading.Thread(target=self._read, args=(self._tool.stdout,), daemon=True,
                                        name="dtstore-diskshadow")
        self._reader.start()
        self.finished = False
        # a session that is dropped (or a dtstore that dies) closes diskshadow's input: never BackupComplete
        self._finalizer = weakref.finalize(self, _close_quietly, self._tool.stdin)
        self.send("set verbose on", "set context persistent", f'set metadata "{metadata_file}"',
                           f"writer verify {EXCHANGE_WRITER}", "begin backup")
        for i, volume in enumerate(self.volumes, 1):
            self.send(f'add volume "{volume}" alias dtstore{i}')
        self.send("create")
        for i, where in enumerate(self.expose_to, 1):
            self.send(f'expose %dtstore{i}% "{where}"')
        deadline = time.monotonic() + timeout
        while not all(self._exposed(w) for w in self.expose_to):
            if self._done.is_set() or time.monotonic() > deadline:
                self.abort()
                tail = "\n".join(self.output[-8:])
                raise ConnectorError(f"diskshadow did not expose the shadow copies: {tail}")
            time.sleep(0.05)

    def send(self, *lines: str) -> None:
        try:
            for line in lines:
                self._tool.stdin.write((line + "\r\n").encode())
            self._tool.stdin.flush()
        except (OSError, ValueError):
            pass  # diskshadow ended: its exit status and output say why

    def _exposed(self, where: PurePath) -> bool:
        return any(f"successfully exposed as {where}" in line for line in self.output)

    def _read(self, stdout: Any) -> None:
        try:
            for raw in stdout:
                self.output.append(raw.decode("utf-8", "replace").rstrip())
        finally:
            self._done.set()

    def shadow_path(self, live: str, volume: str, exposed: PurePath) -> PurePath:
        """Where a live path of ``volume`` is inside the exposed shadow copy."""
        path, root = windows_aware(live), windows_aware(volume)
        try:
            relative = path.relative_to(root)
        except ValueError:
            raise ConnectorError(f"{live} is not on volume {volume}") from None
        return exposed / relative

    def _end(self, *lines: str) -> None:
        if self.finished:
            return
        self.finished = True
        unexpose = [f'unexpose "{where}"' for where in self.expose_to]
        self.send(*lines, *unexpose, "delete shadows set %VSS_SHADOW_SET%", "exit")
        _close_quietly(self._tool.stdin)
        self._reader.join(120)
        code = self._tool.wait()
        self._tool.close()
        if code != 0:
            raise ConnectorError(f"diskshadow exited with status {code}: " + "\n".join(self.output[-8:]))

    def complete(self) -> None:
        """BackupComplete: Exchange may now truncate the logs the snapshot holds (after the commit only)."""
        self._end("end backup")

    def abort(self) -> None:
        """End the session without BackupComplete: nothing is truncated."""
        with contextlib.suppress(ConnectorError):
            self._end()


def _close_quietly(stream: Any) -> None:
    with contextlib.suppress(OSError, ValueError):
        stream.close()


def system_state_backup(runner: CommandRunner, target: str) -> None:
    """``wbadmin start systemstatebackup`` into ``target`` (a volume on Windows: ``E:``)."""
    argv = [_proc.find_tool("wbadmin", "wbadmin.exe"), "start", "systemstatebackup", f"-backupTarget:{target}",
            "-quiet"]
    result = runner.run(argv, check=False, label="wbadmin")
    if result.exit_status != 0 or b"successfully completed" not in result.stdout:
        raise ConnectorError(f"wbadmin start systemstatebackup failed (status {result.exit_status}): "
                             f"{result.stderr or result.stdout.decode('utf-8', 'replace')[-500:]}")


__all__ = ["DISCOVERY_SCRIPT", "EXCHANGE_WRITER", "Database", "Discovery", "ShadowSession", "discover", "powershell",
           "system_state_backup"]
