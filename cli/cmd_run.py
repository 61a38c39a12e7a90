"""dtstore run: run one job of the configuration file once, as the agent would."""

from __future__ import annotations

import argparse
from typing import Any

from dtstore.cli.helptext import EXIT_MEANINGS
from dtstore.cli.output import Output
from dtstore.errors import UsageError

MODES = ("full", "diff", "log", "retention", "prune", "drill")
CODES = (0, 1, 2, 3, 10, 11, 12, 13, 14, 15, 16, 17, 130)

DESCRIPTION = """\
Run the job JOB of the configuration file once, with exactly what the agent does: the job's host
lock (a second run of the job at the same time exits 11), the hooks, the snapshot with promotion
(a log or diff run whose chain is broken, whose base is missing or older than full_every, or whose
server reports a break, runs as a full and says why), retention and prune as configured, the run
record, metrics and notifications.  A drill job runs its drill.  The run stops itself at the job's
timeout, and on SIGTERM: then nothing is committed."""


def epilog(examples: list[str], codes: tuple[int, ...], note: str | None = None) -> str:
    lines = [f"  {code:>3}  {EXIT_MEANINGS[code]}" for code in codes]
    text = "examples:\n" + "\n".join(f"  {e}" for e in examples) + "\n\nexit status:\n" + "\n".join(lines)
    return text + (f"\n  ({note})" if note else "")


def add_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH",
                   help="the configuration file (default: $DTSTORE_CONFIG, else the platform default)")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("run", parents=[common], help="run one job of the configuration once",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=epilog(["dtstore run shop", "dtstore run shop --mode log",
                                      "dtstore run shop --mode prune --config /etc/dtstore/dtstore.toml"], CODES,
                                     "11 also when the job is running already; 1 also for a timeout"))
    p.add_argument("job", metavar="JOB", help="the job's name (a [jobs.NAME] table)")
    p.add_argument("--mode", choices=MODES, default=None,
                   help="full, diff or log (default: the largest the job schedules), or retention / prune "
                        "alone, without a snapshot; drill for a drill job (its only mode)")
    p.add_argument("--scheduled-at", metavar="TIME",
                   help="the fire time this run is for (ISO 8601; the agent passes it, it goes into the record)")
    add_config_option(p)
    p.set_defaults(run=run)


def parse_time(text: str | None) -> Any:
    if text is None:
        return None
    from dtstore.agent.state import parse_time as parse

    try:
        return parse(text)
    except ValueError:
        raise UsageError(f"--scheduled-at {text!r}: not an ISO 8601 time") from None


def load_job(args: argparse.Namespace) -> tuple[Any, Any]:
    from dtstore.agent.config import find_config, load

    config = load(find_config(args.config))
    return config, config.job(args.job)


def report(result: Any, out: Output) -> int:
    if out.json:
        out.emit(result.record)
        out.emit({"type": "summary", "job": result.record["job"], "result": result.record["result"],
                  "exit_code": result.exit_code})
    else:
        for line in result.lines:
            out.line(line)
    if result.exit_code != 0 and result.record.get("error"):
        out.error(f"job {result.record['job']}: {result.record['result']}: {result.record['error']}",
                  result.exit_code)
    return int(result.exit_code)


def run(args: argparse.Namespace, out: Output) -> int:
    from dtstore.agent.run import run_job

    config, job = load_job(args)
    if job.kind == "drill" and args.mode not in (None, "drill"):
        raise UsageError(f"job {job.name} is a drill: its only mode is drill")
    if job.kind != "drill" and args.mode == "drill":
        raise UsageError(f"job {job.name} is a backup job, not a drill: --mode full, diff, log, retention or prune")
    result = run_job(config, job, args.mode, scheduled_at=parse_time(args.scheduled_at))
    return report(result, out)
