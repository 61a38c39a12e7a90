"""dtstore agent: the foreground daemon that runs every job of the configuration file at its times."""

from __future__ import annotations

import argparse
from typing import Any

from dtstore.cli.cmd_run import add_config_option, epilog
from dtstore.cli.output import Output

DESCRIPTION = """\
Run every job of the configuration file at its times, in the foreground (a systemd service of
Type=notify, or a Windows service through NSSM).  Each run is a child process `dtstore run JOB`:
one run per job at a time (a run due while the previous one is going is skipped and reported),
missed runs after downtime are caught up once, each run stops at its timeout with nothing
committed.  SIGTERM or SIGINT: start nothing more, let the current runs finish for up to
--stop-timeout seconds, then stop them; exit 0.  SIGHUP rereads the configuration."""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("agent", parents=[common], help="run the jobs of the configuration at their times",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=epilog(["dtstore agent --config /etc/dtstore/dtstore.toml",
                                      "systemctl enable --now dtstore-agent"], (0, 1, 2),
                                     "2 also for a configuration with problems"))
    add_config_option(p)
    p.add_argument("--stop-timeout", type=float, default=60.0, metavar="SECONDS",
                   help="on SIGTERM, how long the current runs may go on before they are stopped (default 60)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    from dtstore.agent.config import find_config, load
    from dtstore.agent.daemon import Daemon

    path = find_config(args.config)
    daemon = Daemon(path, load, stop_timeout=args.stop_timeout)
    if args.quiet:
        daemon.log = lambda line: None
    daemon.start()
    return daemon.serve()
