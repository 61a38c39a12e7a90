"""dtstore status: per job of the configuration, the last run, the next runs, the recovery point now
and the last drill, from the agent's state folder."""

from __future__ import annotations

import argparse
import datetime as dt
from typing import Any

from dtstore.cli.helptext import EXIT_MEANINGS
from dtstore.cli.output import Output, human_size
from dtstore.errors import UsageError

CODES = (0, 1, 2)

DESCRIPTION = """\
For every job of the configuration file (or the JOBs named): the last run (when it finished, the
mode it took, its result, the bytes it added, how long it took), a run skipped since, the next
run of each mode, the recovery point now (the newest restorable moment of the job's source as its
runs recorded it from restore-points, its age, and whether that is within the job's rpo), the last
drill (result and measured restore time), and the pid of a run going now.  Read from the state
folder: no repository is opened."""


EXAMPLES = ["dtstore status", "dtstore status shop --utc", "dtstore status --json --config /etc/dtstore/dtstore.toml"]


def _epilog() -> str:
    codes = "\n".join(f"  {code:>3}  {EXIT_MEANINGS[code]}" for code in CODES)
    return "examples:\n" + "\n".join(f"  {e}" for e in EXAMPLES) + "\n\nexit status:\n" + codes


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("status", parents=[common], help="show each job's last run, next run, recovery point and drill",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter,
                       epilog=_epilog())
    p.add_argument("jobs", nargs="*", metavar="JOB", help="only these jobs (default: every job)")
    p.add_argument("--config", metavar="PATH",
                   help="the configuration file (default: $DTSTORE_CONFIG, else the platform default)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    from dtstore import clock
    from dtstore.agent.config import find_config, load
    from dtstore.agent.state import StateDir, iso
    from dtstore.agent.status import current

    config = load(find_config(args.config))
    unknown = [name for name in args.jobs if name not in config.jobs]
    if unknown:
        raise UsageError(f"no job {', '.join(unknown)} in {config.path} (jobs: {', '.join(config.jobs) or 'none'})")
    settings = config.agent
    state = StateDir(settings.state_dir, max_bytes=settings.run_log_max_bytes, keep=settings.run_log_keep)
    now = clock.now()
    rows = [row for row in current(config, state, now, with_running=True) if not args.jobs or row.job in args.jobs]
    if out.json:
        for row in rows:
            out.emit({"type": "job", **row.to_json()})
        out.emit({"type": "summary", "jobs": len(rows), "time": iso(now),
                  "rpo_missed": sum(1 for r in rows if r.rpo_ok is False)})
        return 0
    for n, row in enumerate(rows):
        if n:
            out.line("")
        for line in describe(row, out, now):
            out.line(line)
    if not rows:
        out.line(f"no jobs in {config.path}")
    return 0


def _ago(delta: dt.timedelta) -> str:
    seconds = max(0, int(delta.total_seconds()))
    if seconds == 0:
        return "0s"
    parts = []
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        value, seconds = divmod(seconds, size)
        if value:
            parts.append(f"{value}{unit}")
    return " ".join(parts[:2])


def _run_text(info: Any, out: Output) -> str:
    when = out.when(info.time) if info.time else "?"
    parts = [when]
    if info.kind == "drill":
        parts.append(info.result)
        if info.restore_seconds is not None:
            parts.append(f"restore {info.restore_seconds:.1f} s")
    else:
        mode = info.mode or info.requested_mode or "?"
        if info.requested_mode and info.mode and info.requested_mode != info.mode:
            mode = f"{info.mode} (for {info.requested_mode})"
        parts += [mode, info.result]
        if info.bytes_added is not None:
            parts.append(f"{human_size(info.bytes_added)} added")
    if info.duration_seconds is not None:
        parts.append(f"{info.duration_seconds:.1f} s" + (" in all" if info.kind == "drill" else ""))
    text = ", ".join(parts[1:])
    line = f"{parts[0]}  {text}"
    if info.error and info.result not in ("ok", "partial"):
        line += f": {info.error}"
    return line


def describe(row: Any, out: Output, now: dt.datetime) -> list[str]:
    """The text lines of one job's status."""
    lines = [f"{row.job} ({row.kind})" + (f": running, pid {row.running_pid}" if row.running_pid else "")]
    lines.append(f"  last run        {_run_text(row.last_run, out) if row.last_run else 'never'}")
    if row.kind != "drill":
        lines.append(f"  last success    {out.when(row.last_success) if row.last_success else 'never'}")
    if row.last_skipped is not None:
        lines.append(f"  skipped         {out.when(row.last_skipped)} (the previous run was still going)")
    if row.next_runs:
        ordered = sorted(row.next_runs.items(), key=lambda kv: kv[1])
        lines.append("  next run        " + "; ".join(
            f"{mode} {'now (due)' if moment <= now else out.when(moment)}" for mode, moment in ordered))
    if row.kind != "drill":
        rpo = f"rpo {_ago(row.rpo)}" if row.rpo is not None else "no rpo"
        if row.recovery_point is None:
            lines.append(f"  recovery point  none yet ({rpo})")
        else:
            verdict = "" if row.rpo_ok is None else (": ok" if row.rpo_ok else ": MISSED")
            lines.append(f"  recovery point  {out.when(row.recovery_point)}, {_ago(row.recovery_point_age)} ago "
                         f"({rpo}{verdict})")
    drill = row.last_drill
    if drill is not None and row.kind != "drill":
        lines.append(f"  last drill      {_run_text(drill, out)} ({drill.job})")
    return lines
