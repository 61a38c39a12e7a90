"""dtstore drill: run a restore drill of the configuration file now."""

from __future__ import annotations

import argparse
from typing import Any

from dtstore.cli.cmd_run import add_config_option, epilog, load_job, report
from dtstore.cli.output import Output
from dtstore.errors import UsageError

DESCRIPTION = """\
Run the drill job JOB now: restore the latest point (or, with --point random, a random moment of
the newest restorable window) of its backup job into the scratch target, run the application's
check (MySQL/MariaDB: CHECK TABLE of every restored table; PostgreSQL: pg_amcheck on a server
started on the scratch data directory; files: every file read back and its size compared with the
manifest's) or the job's check queries, record how long the restore took
(the measured recovery time), drop the scratch copy, and notify.  A damaged snapshot fails the
drill with 16."""


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("drill", parents=[common],
                       help="restore a job's latest backup into a scratch target and check it",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=epilog(["dtstore drill shop-drill", "dtstore drill shop-drill --point random --json"],
                                     (0, 1, 2, 10, 11, 12, 13, 14, 15, 16, 17, 130),
                                     "1 also when the check fails; 11 when the drill is running already"))
    p.add_argument("job", metavar="JOB", help="the drill job's name (a [jobs.NAME] table with kind = \"drill\")")
    p.add_argument("--point", choices=("latest", "random"), default=None,
                   help="what to restore (default: the job's point, else latest)")
    add_config_option(p)
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    from dtstore.agent.drill import run_drill

    config, job = load_job(args)
    if job.kind != "drill":
        raise UsageError(f"job {job.name} is not a drill (kind = \"{job.kind}\"); dtstore run {job.name} runs it")
    return report(run_drill(config, job, point=args.point), out)
