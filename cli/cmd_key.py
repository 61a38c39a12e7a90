"""dtstore key list|add|remove|passwd: the passwords that open the repository."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from dtstore.cli._repo import open_repo, prompt
from dtstore.cli.output import Output
from dtstore.errors import UsageError


def register(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("key", parents=[common], help="manage passwords (key slots)")
    p.add_argument("action", choices=["list", "add", "remove", "passwd", "convert"],
                   help="list the key slots, add one, remove one, change this password (passwd), or give a "
                        "repository key roles (convert: exclusive; older dtstore versions then refuse it)")
    p.add_argument("slot", nargs="?", metavar="KEY_ID", help="for remove: the key slot ID (or prefix)")
    p.add_argument("--new-password-file", metavar="FILE", help="read the new password from FILE")
    p.add_argument("--role", choices=["admin", "backup"], default="admin",
                   help="for add: admin (everything) or backup (writes new backups and deduplicates, but cannot "
                        "read, restore, forget or prune stored data; needs key roles: init --key-roles or key convert)")
    p.set_defaults(run=run)


def new_password(args: argparse.Namespace) -> str:
    if args.new_password_file:
        try:
            with open(args.new_password_file, encoding="utf-8") as f:
                return f.read().rstrip("\r\n")
        except OSError as exc:
            raise UsageError(f"cannot read {args.new_password_file}: {exc.strerror}") from None
    if sys.stdin.isatty():
        return prompt("new password: ", confirm=True)
    raise UsageError("give the new password with --new-password-file FILE (or run on a terminal)")


def run(args: argparse.Namespace, out: Output) -> int:
    with open_repo(args) as repo:
        if args.action == "list":
            for slot in repo.keys():
                if out.json:
                    out.emit({"type": "key", "id": slot.slot_id, "current": slot.current, "kdf": slot.kdf,
                              "role": slot.role})
                else:
                    out.line(f"{'*' if slot.current else ' '} {slot.slot_id}  {slot.role:<6}  {slot.kdf}")
        elif args.action == "add":
            slot_id = repo.add_key(new_password(args), role=args.role)
            _done(out, f"added {args.role} key" if args.role != "admin" else "added", slot_id)
        elif args.action == "convert":
            changed = repo.convert_to_key_roles()
            _done(out, "converted to key roles; repository" if changed else "already has key roles; repository",
                  repo.config.repository_id)
        elif args.action == "remove":
            if not args.slot:
                raise UsageError("key remove needs KEY_ID (see dtstore key list)")
            repo.remove_key(args.slot)
            _done(out, "removed", args.slot)
        else:
            slot_id = repo.change_password(new_password(args))
            _done(out, "password changed; new key", slot_id)
    return 0


def _done(out: Output, what: str, slot: str) -> None:
    if out.json:
        out.emit({"type": "summary", "action": what, "id": slot})
    else:
        out.line(f"{what} {slot}")



