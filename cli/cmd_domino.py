"""dtstore domino: the commands Domino Backup's configuration calls (the backup-task backend).

Each sub-command takes the parameters Domino appends to a native OS command (1 PhysicalFileName,
2 FileName, 3 BackupReference, 4 BackupNode, 5 BackupName, 6 BackupMode, 7 BackupStartDT,
8 BackupTargetDir, 9 RetentionDays or RestoreFileName, 10 RefString) and prints the lines Domino
matches: ``BackupRef: <snapshot id>`` and ``Return: PROCESSED …`` only once the snapshot holding
the file is committed; ``Return: ERROR …`` and a non-zero exit otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from pathlib import Path
from typing import Any

from dtstore.cli import helptext
from dtstore.cli._repo import open_repo
from dtstore.cli.output import Output
from dtstore.errors import DtstoreError

SUBCOMMANDS = {
    "backup-snapshot": "Backup Snapshot Command: every file of the file list (parameter 1) as one snapshot",
    "backup-db": "Backup DB Command: one NSF/NTF/BOX or .DELTA file as one snapshot",
    "backup-translog": "Backup Translog Command: one S#######.TXN extent as one snapshot",
    "restore-db": "Restore DB Command: write the stored NSF or .DELTA to RestoreFileName (parameter 9)",
    "restore-translog": "Restore Translog Command: write the stored extent to RestoreFileName (parameter 9)",
    "prune-db": "Prune DB Command: forget the snapshot of that database (and its .DELTA) in that backup set",
    "prune-translog": "Prune Translog Command: forget the snapshot of that extent",
    "prune-snapshot": "Prune Snapshot Command: forget every snapshot of that backup set",
}

EXAMPLES = [
    "dtstore domino backup-translog /local/translog/S0000042.TXN S0000042.TXN 5F0A… mail1 Default TRANSLOG "
    "20261202T010000 /backup 30",
    "dtstore domino backup-snapshot --data /local/notesdata /tmp/filelist.txt '' '' mail1 Default SNAP "
    "20261202T010000 /backup 30",
]


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    epilog = "examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES) + "\n\n" + helptext.exit_status("domino")
    p = sub.add_parser("domino", parents=[common], help="commands for Domino Backup's configuration (backup task)",
                       description="The Domino 12+ backup task's backend: its configuration runs these as native "
                                   "OS commands with the parameters Domino appends (spec/connectors-domino.md §5). "
                                   "Success is 'Return: PROCESSED', printed only after the commit.",
                       epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    actions = p.add_subparsers(dest="domino_command", metavar="ACTION")
    actions.required = True
    for name, text in SUBCOMMANDS.items():
        a = actions.add_parser(name, parents=[common], help=text, description=text)
        if name == "backup-snapshot":
            a.add_argument("--data", metavar="DIR",
                           help="the data directory, to name files when the file list holds physical paths only")
        if name == "backup-snapshot":
            a.add_argument("--keep-list", action="store_true",
                           help="do not delete the file list afterwards (Domino expects the command to remove it)")
        a.add_argument("params", nargs="*", metavar="PARAM",
                       help="the parameters Domino appends (PhysicalFileName FileName BackupReference BackupNode "
                            "BackupName BackupMode BackupStartDT BackupTargetDir [RetentionDays|RestoreFileName "
                            "[RefString]])")
        a.set_defaults(run=run, domino_action=name)
    p.set_defaults(run=run, domino_action=None)


def _say(out: Output, text: str) -> None:
    print(text, flush=True)


def run(args: argparse.Namespace, out: Output) -> int:
    from dtstore.connectors.domino import task

    action = args.domino_action
    try:
        call = task.Call.of(args.params)
        with open_repo(args) as repo:
            if action == "backup-snapshot":
                try:
                    snap = task.backup_snapshot(repo, call, data=Path(args.data) if args.data else None)
                finally:
                    if not args.keep_list:
                        with contextlib.suppress(OSError):
                            os.remove(call.physical)  # Domino leaves removing the file list to the command
                _say(out, f"{task.REF} {snap.id}")
                _say(out, f"{task.OK} snapshot {snap.short_id}: {len(snap.source_metadata['task']['files'])} files")
            elif action == "backup-db":
                snap = task.backup_db(repo, call)
                _say(out, f"{task.REF} {snap.id}")
                _say(out, f"{task.OK} snapshot {snap.short_id}: {Path(call.physical).name}")
            elif action == "backup-translog":
                snap, note = task.backup_translog(repo, call)
                _say(out, f"{task.REF} {snap.id}")
                _say(out, f"{task.OK} snapshot {snap.short_id}: {Path(call.physical).name}" + (f" ({note})" if note
                                                                                               else ""))
            elif action in ("restore-db", "restore-translog"):
                dest = task.restore_file(repo, call, extent=action == "restore-translog")
                _say(out, f"{task.OK} ({dest})")
            else:
                ids = task.prune(repo, call, what=action.removeprefix("prune-"))
                _say(out, f"{task.OK} forgot {len(ids)} snapshot(s)" + (f": {' '.join(i[:8] for i in ids)}"
                                                                       if ids else ""))
    except DtstoreError as exc:
        _say(out, f"{task.ERROR} {exc}")
        return exc.exit_code
    except OSError as exc:
        _say(out, f"{task.ERROR} {exc.strerror or exc}")
        return 1
    return 0
