"""dtstore config check|show: validate the agent's configuration file, or print it resolved."""

from __future__ import annotations

import argparse
from typing import Any

from dtstore import clock
from dtstore.cli.helptext import EXIT_MEANINGS
from dtstore.cli.output import Output

DESCRIPTION = """\
check: validate the configuration file (spec/agent.md §2) and report every problem, each with its
line: unknown tables and keys (with a close match), bad schedules, durations and windows, a job
naming an unknown repository or notify target, a connector whose extra is not installed, a
password source or exclude file that does not exist, and a repository that cannot be opened.
Warnings (a diff schedule of a connector without diff mode: those runs take a full) do not fail
the check.  --offline skips opening the repositories and makes missing password and exclude files
warnings, for checking a file on another machine than the one it is for.

show: print the configuration resolved (defaults filled in, derived RPOs, the mode each scheduled
mode runs as, next fire times) with secrets masked: password sources, SMTP passwords, passwords in
URLs, webhook query strings, and env values whose names look secret."""

CODES = (0, 1, 2)


def add_config_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="PATH",
                   help="the configuration file (default: $DTSTORE_CONFIG, else the platform default)")


def _epilog() -> str:
    examples = ["dtstore config check", "dtstore config check --offline --config ./dtstore.toml",
                "dtstore config show --json"]
    codes = "\n".join(f"  {code:>3}  {EXIT_MEANINGS[code]}" for code in CODES)
    return ("examples:\n" + "\n".join(f"  {e}" for e in examples) + "\n\nexit status:\n" + codes
            + "\n  (check: 2 also means that problems were found)")


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("config", parents=[common], help="check the agent's configuration file, or show it resolved",
                       description=DESCRIPTION, epilog=_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["check", "show"],
                   help="check: validate it and report problems by line; show: print it resolved, secrets masked")
    add_config_option(p)
    p.add_argument("--offline", action="store_true",
                   help="check: do not open the repositories; missing password and exclude files are warnings")
    p.set_defaults(run=run)


def run(args: argparse.Namespace, out: Output) -> int:
    from dtstore.agent.config import Config, ConfigError, Problem, check, find_config, load, mask, to_toml

    path = find_config(args.config)
    found: list[Problem] = []
    config: Config | None
    try:
        config = load(path)
    except ConfigError as exc:
        if args.action == "show":
            raise
        found = list(exc.problems)
        if exc.config is not None:  # the machine's checks too, on what could be read
            found += check(exc.config, offline=args.offline, known=exc.problems)
        config = None
    else:
        found = list(config.warnings)
        if args.action == "check":
            found += check(config, offline=args.offline)
    for problem in sorted(found, key=lambda p: (p.line or 0, p.severity != "error")):
        if out.json:
            out.emit({"type": "problem", **problem.as_dict()})
        else:
            out.err.write(f"{problem}\n")
    errors = sum(1 for p in found if p.severity == "error")
    warnings = len(found) - errors
    if args.action == "show":
        assert config is not None
        data = mask(config, clock.now())
        if out.json:
            out.emit({"type": "config", "path": str(path), "config": data})
            out.emit({"type": "summary", "path": str(path), "warnings": warnings})
        else:
            out.out.write(f"# {path}, resolved; secrets masked\n" + to_toml(data))
        return 0
    if out.json:
        out.emit({"type": "summary", "path": str(path), "ok": errors == 0, "errors": errors, "warnings": warnings,
                  "offline": args.offline})
    elif errors:
        out.line(f"{path}: {errors} error(s), {warnings} warning(s)")
    else:
        assert config is not None
        out.line(f"{path}: {len(config.jobs)} job(s), {len(config.repositories)} repository(ies), "
                 f"{len(config.notify)} notify target(s): ok" + (f", {warnings} warning(s)" if warnings else ""))
    return 2 if errors else 0
