"""dtstore schedule install|remove --systemd|--cron|--windows: the agent's schedules as OS entries."""

from __future__ import annotations

import argparse
import os
import shutil
import sys
from pathlib import Path
from typing import Any

from dtstore.cli.helptext import EXIT_MEANINGS
from dtstore.cli.output import Output
from dtstore.errors import DtstoreError, UsageError

DESCRIPTION = """\
Write the configuration's schedules as OS scheduler entries, for shops that prefer the OS scheduler
to dtstore agent.  Each entry calls `dtstore run JOB --mode M --config PATH` (a drill job: `dtstore
drill JOB`) at the schedule's times, one per job and scheduled mode (and per prune or
retention_after schedule).

--systemd: dtstore-JOB-MODE.service and .timer units (OnCalendar= with the configuration's zone,
Persistent=true, RandomizedDelaySec= from jitter) in /etc/systemd/system as root, else
~/.config/systemd/user, then systemctl daemon-reload and enable --now.  --cron: a block between
"# BEGIN dtstore PATH" and "# END dtstore PATH" in the user's crontab.  --windows: schtasks
/Create commands for tasks dtstore\\JOB-MODE, run as SYSTEM.

install first removes the entries it wrote before for the same configuration file that the file no
longer has; remove deletes exactly what install wrote for it.  --dry-run prints what would be done."""

CODES = (0, 1, 2)


def _epilog() -> str:
    examples = ["dtstore schedule install --systemd", "dtstore schedule install --cron --dry-run",
                "dtstore schedule install --windows --config C:\\ProgramData\\dtstore\\dtstore.toml",
                "dtstore schedule remove --systemd"]
    codes = "\n".join(f"  {code:>3}  {EXIT_MEANINGS[code]}" for code in CODES)
    return ("examples:\n" + "\n".join(f"  {e}" for e in examples) + "\n\nexit status:\n" + codes
            + "\n  (2 also when a schedule cannot be expressed for the chosen scheduler)")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("schedule", parents=[common], help="install the schedules as systemd timers, cron lines "
                       "or Windows tasks", description=DESCRIPTION, epilog=_epilog(),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["install", "remove"],
                   help="install: write the entries (replacing earlier ones); remove: delete them")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--systemd", dest="scheduler", action="store_const", const="systemd",
                       help="systemd timers and services")
    which.add_argument("--cron", dest="scheduler", action="store_const", const="cron", help="crontab lines")
    which.add_argument("--windows", dest="scheduler", action="store_const", const="windows",
                       help="Windows Task Scheduler (schtasks)")
    p.add_argument("--config", metavar="PATH",
                   help="the configuration file (default: $DTSTORE_CONFIG, else the platform default)")
    p.add_argument("--dry-run", "-n", action="store_true", help="print the files, crontab and commands; change nothing")
    p.add_argument("--unit-dir", metavar="DIR",
                   help="systemd: the folder for the units (default: /etc/systemd/system as root, "
                        "else ~/.config/systemd/user)")
    p.add_argument("--no-enable", action="store_true",
                   help="systemd: only write or delete the unit files, do not run systemctl")
    p.add_argument("--program", metavar="PATH",
                   help="the dtstore executable the entries call (default: dtstore on PATH, else this Python "
                        "with -m dtstore.cli)")
    p.set_defaults(run=run)


def _is_root() -> bool:
    geteuid = getattr(os, "geteuid", None)
    return bool(geteuid is not None and geteuid() == 0)


def _program(args: argparse.Namespace) -> list[str]:
    if args.program:
        return [args.program]
    found = shutil.which("dtstore")
    if found:
        return [os.path.abspath(found)]
    return [sys.executable, "-m", "dtstore.cli"]


def _unit_dir(args: argparse.Namespace) -> Path:
    if args.unit_dir:
        return Path(args.unit_dir)
    if _is_root():
        return Path("/etc/systemd/system")
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "systemd" / "user"


def run(args: argparse.Namespace, out: Output) -> int:
    from dtstore.agent import install
    from dtstore.agent.config import find_config, load

    path = find_config(args.config)
    config_path = str(path.absolute())
    program = _program(args)
    needs_config = args.action == "install" or (args.scheduler == "windows" and sys.platform != "win32")
    config = load(path) if needs_config else None
    if config is not None:
        for warning in config.warnings:
            if out.json:
                out.emit({"type": "problem", **warning.as_dict()})
            else:
                out.err.write(f"{warning}\n")
    if args.scheduler == "systemd":
        unit_dir = _unit_dir(args)
        units = install.read_unit_dir(unit_dir)
        enable = not args.no_enable
        plan = (install.systemd_install(config, config_path, program, unit_dir, units, user=not _is_root(),
                                        enable=enable)
                if config is not None else
                install.systemd_remove(config_path, unit_dir, units, user=not _is_root(), enable=enable))
    elif args.scheduler == "cron":
        try:
            crontab = install.read_crontab()
        except DtstoreError:
            if not args.dry_run:
                raise
            crontab = ""
        plan = (install.cron_install(config, config_path, program, crontab) if config is not None
                else install.cron_remove(config_path, crontab))
    else:
        if sys.platform != "win32":
            if not args.dry_run:
                raise UsageError("schtasks exists only on Windows: add --dry-run to print the commands")
            assert config is not None
            tasks = install.windows_tasks(config, config_path, program)
            existing = [(name, argv[argv.index("/TR") + 1]) for name, argv in tasks.items()]
        else:
            existing = install.query_tasks()
        plan = (install.windows_install(config, config_path, program, existing) if args.action == "install"
                else install.windows_remove(config_path, existing))
    if args.dry_run:
        if out.json:
            out.emit({"type": "plan", "write": {str(p): t for p, t in plan.files.items()},
                      "delete": [str(p) for p in plan.delete],
                      "commands": [{"argv": list(c.argv), "input": c.input} for c in (*plan.before, *plan.commands)],
                      "notes": list(plan.notes)})
        else:
            for line in plan.describe():
                out.line(line)
        done: list[str] = []
    else:
        for note in plan.notes:
            out.info(f"note: {note}")
        done = install.apply(plan)
        for line in done:
            out.line(line) if not out.json else out.emit({"type": "done", "what": line})
    entries = [e.name for e in install.entries(config, config_path, program)] if config is not None else []
    if out.json:
        out.emit({"type": "summary", "action": args.action, "scheduler": args.scheduler, "config": config_path,
                  "dry_run": args.dry_run, "entries": entries if args.action == "install" else [],
                  "changes": len(done)})
    elif not args.dry_run:
        if args.action == "install":
            out.line(f"{len(entries)} entr{'y' if len(entries) == 1 else 'ies'} installed for {config_path}")
        elif not done:
            out.line(f"nothing to remove for {config_path}")
    return 0
