"""``python -m tests.sim.domino --root DIR init|write|backup-task|start|stop``: the simulated Domino server.

    init                             data directory DIR/notesdata, log directory DIR/translog
    write --extents N [--compact DB] changes in the mail files, N more extents; --compact: a new DBIID
    backup-task full|translog        the simulated backup task, with dtstore as its backend (the DXL's commands)
    start / stop                     pid.nbf names a live process / is removed
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

from tests.sim.domino.server import DEFAULT_EXTENT, DominoSim
from tests.sim.domino.task import CONFIG, BackupTask, read_config


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tests.sim.domino", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--root", required=True, type=Path, help="the server's folder")
    sub = p.add_subparsers(dest="command", required=True)
    init = sub.add_parser("init", help="create the server")
    init.add_argument("--extent-size", type=int, default=DEFAULT_EXTENT, help="bytes per extent (64 MiB)")
    init.add_argument("--db-size", type=int, default=256 << 10, help="bytes per database body")
    init.add_argument("--mail-users", type=int, default=4, help="mail/userNNN.nsf files")
    init.add_argument("--style", type=int, default=1, help="TRANSLOG_Style (0 circular, 1 archive, 2 linear)")
    init.add_argument("--seed", type=int, default=1)
    write = sub.add_parser("write", help="change databases and fill extents")
    write.add_argument("--extents", type=int, default=1, help="how many more extents to start")
    write.add_argument("--compact", action="append", default=[], metavar="DB", help="give DB a new DBIID")
    write.add_argument("--databases", type=int, default=2, help="mail files changed besides the records")
    task = sub.add_parser("backup-task", help="run the simulated Domino Backup task with dtstore as its backend")
    task.add_argument("what", choices=["full", "translog"])
    task.add_argument("--config", type=Path, default=CONFIG, help="the configuration document (DXL)")
    task.add_argument("--script-dir", help="overrides the configuration's ScriptDir")
    task.add_argument("--node", default="sim1", help="BackupNode")
    sub.add_parser("start", help="mark the server running (pid.nbf with a live process)")
    sub.add_parser("stop", help="mark the server stopped")
    args = p.parse_args(argv)
    sim = DominoSim(args.root)
    if args.command == "init":
        state = sim.init(extent_size=args.extent_size, db_size=args.db_size, mail_users=args.mail_users,
                         style=args.style, seed=args.seed)
        print(json.dumps({"data": str(sim.data), "translog": str(sim.translog), "log_id": state.log_id}))
    elif args.command == "write":
        state = sim.write(extents=args.extents, compact=args.compact, databases=args.databases)
        print(json.dumps({"sequence": state.sequence, "log_id": state.log_id}))
    elif args.command == "backup-task":
        runner = BackupTask(sim, config=read_config(args.config), script_dir=args.script_dir, node=args.node)
        log = runner.full() if args.what == "full" else runner.translog()
        print(json.dumps({"archived": log.archived, "failed": log.failed,
                          "commands": [{"argv": r.command, "exit": r.exit_status, "ok": r.ok} for r in log.results]}))
        return 1 if log.failed else 0
    elif args.command == "start":
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(86400)"], start_new_session=True)
        sim.mark_running(child.pid)
        print(child.pid)
    else:
        sim.mark_stopped()
    return 0


if __name__ == "__main__":
    sys.exit(main())
