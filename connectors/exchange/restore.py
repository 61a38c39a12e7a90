"""Executing an Exchange restore plan: check the target, lay down the files, soft recovery, verify.

1. Refuse before writing anything: the EDB must not exist, the log folder must be empty (or absent).
2. Fetch every planned file (size-checked) to its place, crash-safe (``.partial``, fsync, rename).
3. ``eseutil /r PREFIX /lLOGS /sLOGS /dEDBDIR`` (soft recovery), then ``eseutil /mh EDB``: the database
   must be in Clean Shutdown, else ConnectorError with eseutil's words.  Without eseutil on PATH (a
   Linux machine restoring for a Windows one) the files are laid down and the commands are reported.
4. A Recovery Database target (``recovery-db=1``): ``New-MailboxDatabase -Recovery`` first,
   ``Mount-Database`` last, both through PowerShell.
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path

from dtstore.connectors.base import RepositoryView
from dtstore.connectors.exchange.plan import ExchangeRestorePlan
from dtstore.connectors.exchange.server import powershell
from dtstore.connectors.fetch import StoredFile, fetch
from dtstore.connectors.runner import LocalRunner
from dtstore.errors import ConnectorError
from dtstore.progress import ProgressCallback, ProgressEvent


def _ps_quote(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def check_target(plan: ExchangeRestorePlan) -> None:
    if os.path.lexists(plan.edb_dest) or os.path.lexists(plan.laid_down_as):
        raise ConnectorError(f"{plan.edb_dest if os.path.lexists(plan.edb_dest) else plan.laid_down_as} already "
                             "exists: a restore never overwrites a database (move it away or pick another edb=)")
    if os.path.isdir(plan.logs_dest) and os.listdir(plan.logs_dest):
        raise ConnectorError(f"the log folder {plan.logs_dest} is not empty: a restore lays down its own log "
                             "generations into an empty folder")
    for item in plan.files:
        if os.path.lexists(item.dest):
            raise ConnectorError(f"{item.dest} already exists; refusing to overwrite it")


def execute_restore(plan: ExchangeRestorePlan, repo: RepositoryView, progress: ProgressCallback) -> list[str]:
    """Returns notes for the user (e.g. recovery left to them)."""
    check_target(plan)
    runner = LocalRunner()
    notes: list[str] = []
    if plan.recovery_db is not None:
        progress(ProgressEvent("restore", current=plan.recovery_db, message="New-MailboxDatabase -Recovery"))
        runner.run(powershell(
            "$ErrorActionPreference = 'Stop'; Add-PSSnapin Microsoft.Exchange.Management.PowerShell.SnapIn "
            f"-ErrorAction SilentlyContinue; New-MailboxDatabase -Recovery -Name {_ps_quote(plan.recovery_db)} "
            f"-Server $env:COMPUTERNAME -EdbFilePath {_ps_quote(plan.edb_dest)} "
            f"-LogFolderPath {_ps_quote(plan.logs_dest)} | ConvertTo-Json -Compress"),
            label="powershell New-MailboxDatabase")
    ids = {plan.full.id, *(s.id for s in plan.logs)}
    snaps = {s.id: s for s in repo.snapshots() if s.id in ids}
    Path(plan.logs_dest).mkdir(parents=True, exist_ok=True)
    Path(plan.laid_down_as).parent.mkdir(parents=True, exist_ok=True)
    for item in plan.files:
        progress(ProgressEvent("restore", current=os.path.basename(item.dest), message="lay down"))
        fetch(repo, StoredFile(snaps[item.snapshot_id], item.item, item.size), Path(item.dest))
    if not plan.recover:
        return [f"recovery skipped (recover=0): run {' '.join(plan.commands[0]) if plan.commands else 'eseutil /r'}"]
    eseutil = shutil.which("eseutil") or shutil.which("eseutil.exe")
    if eseutil is None:
        notes.append("eseutil is not on PATH: the files are laid down; on the Exchange server run "
                     + " then ".join(" ".join(argv) for argv in plan.commands))
        return notes
    recover, verify = ([eseutil, *argv[1:]] for argv in plan.commands)
    progress(ProgressEvent("restore", current=plan.database, message="eseutil /r (soft recovery)"))
    result = runner.run(recover, check=False, label="eseutil /r")
    if result.exit_status != 0:
        raise ConnectorError(f"soft recovery failed (eseutil /r, status {result.exit_status}): "
                             f"{_eseutil_error(result.stdout)}; the files are laid down in {plan.logs_dest}")
    progress(ProgressEvent("restore", current=plan.database, message="eseutil /mh"))
    result = runner.run(verify, check=False, label="eseutil /mh")
    text = result.stdout.decode("utf-8", "replace")
    state = re.search(r"^\s*State:\s*(.+?)\s*$", text, re.MULTILINE)
    if result.exit_status != 0 or state is None or state.group(1) != "Clean Shutdown":
        raise ConnectorError(f"after soft recovery eseutil /mh reports State: {state.group(1) if state else '?'} "
                             f"(status {result.exit_status}): {_eseutil_error(result.stdout)}")
    if plan.laid_down_as != plan.edb_dest:
        os.replace(plan.laid_down_as, plan.edb_dest)
    if plan.recovery_db is not None:
        progress(ProgressEvent("restore", current=plan.recovery_db, message="Mount-Database"))
        runner.run(powershell("$ErrorActionPreference = 'Stop'; Add-PSSnapin "
                              "Microsoft.Exchange.Management.PowerShell.SnapIn -ErrorAction SilentlyContinue; "
                              f"Mount-Database {_ps_quote(plan.recovery_db)}"), label="powershell Mount-Database")
    progress(ProgressEvent("restore", current=plan.database, message="Clean Shutdown"))
    return notes


def _eseutil_error(stdout: bytes) -> str:
    text = stdout.decode("utf-8", "replace")
    match = re.search(r"Operation terminated with error (-?\d+) \(([^)]*)\)", text)
    return f"error {match.group(1)} ({match.group(2)})" if match else text.strip().splitlines()[-1:][0] \
        if text.strip() else "no output"


__all__ = ["check_target", "execute_restore"]
