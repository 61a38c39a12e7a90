"""The end of every command's ``--help``: examples and the exit statuses it can return (restic's
EXAMPLES and EXIT STATUS sections).  ``main.build_parser`` attaches them; ``generate`` puts them
into the man pages."""

from __future__ import annotations

import argparse

EXIT_MEANINGS = {
    0: "ok",
    1: "error",
    2: "usage: bad or contradictory options",
    3: "snapshot made, but some files could not be read",
    10: "no repository at the URL",
    11: "repository locked",
    12: "wrong password",
    13: "storage access denied",
    14: "untrusted SSH host key",
    15: "remote unavailable",
    16: "data integrity error",
    17: "broken log chain, or a restore target outside the archive",
    18: "needs an admin key: opened with a backup key",
    19: "no room on the restore target: no partly written file is left",
    130: "interrupted (Ctrl-C)",
}

_OPEN = (0, 1, 2, 10, 12, 13, 14, 15, 18)
"""what every command that opens a repository can return"""

EXIT_CODES: dict[str, tuple[int, ...]] = {
    "init": (0, 1, 2, 13, 14, 15),
    "snapshot": (*_OPEN, 3, 11, 16, 17, 130),
    "snapshots": (*_OPEN, 16),
    "ls": (*_OPEN, 16),
    "find": (*_OPEN, 16),
    "diff": (*_OPEN, 16),
    "restore": (*_OPEN, 16, 17, 19, 130),
    "dump": (*_OPEN, 16),
    "tag": (*_OPEN, 11, 16),
    "forget": (*_OPEN, 11),
    "prune": (*_OPEN, 11, 16),
    "check": (*_OPEN, 16),
    "index": (*_OPEN, 11),
    "repair": (*_OPEN, 11, 16),
    "copy": (*_OPEN, 11, 16, 130),
    "mount": (*_OPEN, 16),
    "generate": (0, 1, 2),
    "wal-push": (*_OPEN, 16),
    "wal-fetch": (*_OPEN, 16),
}

EXIT_NOTES = {
    "wal-fetch": "1 also (quietly) when the archive does not hold the file, as PostgreSQL's recovery expects",
    "wal-push": "1 also when another file is archived under that name (never overwritten)",
    "check": "16 also means that problems were found",
    "repair": "repair index: 1 also means that a pack's trailer was unreadable; repair snapshots: 16 also means "
              "that a snapshot could not be repaired and was not forgotten",
    "index": "1 also means that a pack's trailer was unreadable",
    "find": "0 also when nothing matches",
    "copy": "10, 12 and 13-15 concern either repository (the target's password: DTSTORE_TO_PASSWORD…)",
}

EXAMPLES: dict[str, list[str]] = {
    "init": ["dtstore init --repo /srv/backup/repo", "dtstore init --repo s3://bucket/repo --compression-level 1",
             "DTSTORE_FROM_PASSWORD_FILE=/etc/dtstore/password dtstore init --repo s3://offsite/repo "
             "--copy-chunker-from /srv/backup/repo"],
    "snapshot": [
        "dtstore snapshot --tag nightly /var/backups/sql",
        "dtstore snapshot /home --exclude '*.tmp' --iexclude '*.ISO' --exclude-caches --one-file-system",
        "dtstore snapshot --files-from-raw list.nul --exclude-larger-than 2G",
        "mysqldump --all-databases | dtstore snapshot - --stdin-name all.sql",
        "dtstore snapshot --from-command 'pg_dump shop' --stdin-name shop.sql",
    ],
    "snapshots": ["dtstore snapshots", "dtstore snapshots --host db1 --tag nightly --utc", "dtstore snapshots --json"],
    "ls": ["dtstore ls latest", "dtstore ls -l latest /var/backups/sql",
           "dtstore ls --host db1 latest /etc --recursive"],
    "find": ["dtstore find '*.sql'", "dtstore find -i 'readme*' --snapshot 1a2b3c4d",
             "dtstore find '/var/backups/**/shop.sql' --host db1"],
    "diff": ["dtstore diff 1a2b3c4d 5e6f7a8b", "dtstore diff 1a2b3c4d latest --json"],
    "restore": ["dtstore restore latest --target /tmp/restore",
                "dtstore restore latest --host db1 --tag nightly --target /tmp/r --include /var/backups/sql/shop.sql",
                "dtstore restore --to 'mysql://root@localhost/' --until '2026-11-28 14:03:00' --dry-run",
                "dtstore restore --to 'postgresql:///?pgdata=/srv/pg/new&start=yes' --until '2026-11-28 14:03:00'"],
    "dump": ["dtstore dump latest /var/backups/sql/shop.sql | mysql shop",
             "dtstore dump --tag nightly latest /etc/fstab"],
    "tag": ["dtstore tag --add keep 1a2b3c4d", "dtstore tag --host db1 --tag nightly --remove nightly --add weekly",
            "dtstore tag --set monthly 1a2b3c4d 5e6f7a8b"],
    "forget": ["dtstore forget 1a2b3c4d", "dtstore forget --keep-daily 7 --keep-weekly 5 --keep-monthly 12 --prune",
               "dtstore forget --keep-last 3 --dry-run"],
    "prune": ["dtstore prune", "dtstore prune --dry-run", "dtstore prune --exclusive --grace 0"],
    "check": ["dtstore check", "dtstore check --read-data-subset 5%", "dtstore check --read-data-subset 1/7"],
    "unlock": ["dtstore unlock", "dtstore unlock --remove-all"],
    "key": ["dtstore key list", "dtstore key add --new-password-file /root/second-password",
            "dtstore key remove 1a2b3c4d"],
    "index": ["dtstore index rebuild", "dtstore index rebuild --cache-only"],
    "repair": ["dtstore check --read-data", "dtstore repair packs --dry-run", "dtstore repair packs",
               "dtstore repair snapshots --forget", "dtstore repair index"],
    "stats": ["dtstore stats", "dtstore stats --utc --json"],
    "copy": ["dtstore copy --to-repo s3://offsite/repo", "dtstore copy --to-repo /mnt/usb/repo --host db1 latest",
             "dtstore copy --to-repo sftp://backup@vault/srv/repo --json"],
    "mount": ["dtstore mount /mnt/dtstore", "dtstore mount --utc --host db1 /mnt/dtstore",
              "fusermount3 -u /mnt/dtstore"],
    "wal-push": ["dtstore wal-push pg_wal/000000010000000000000003   # archive_command = 'dtstore wal-push %p'",
                 "dtstore wal-push --no-daemon pg_wal/000000010000000000000003"],
    "wal-fetch": ["dtstore wal-fetch 000000010000000000000003 pg_wal/RECOVERYXLOG   # restore_command"],
    "generate": ["dtstore generate --man /usr/local/share/man/man1",
                 "dtstore generate --completion bash > /etc/bash_completion.d/dtstore",
                 "dtstore generate --completion zsh > ~/.zfunc/_dtstore",
                 "dtstore generate --completion fish > ~/.config/fish/completions/dtstore.fish"],
}


def exit_status(command: str) -> str:
    codes = sorted(EXIT_CODES.get(command, _OPEN))
    lines = [f"  {code:>3}  {EXIT_MEANINGS[code]}" for code in codes]
    note = EXIT_NOTES.get(command)
    return "exit status:\n" + "\n".join(lines) + (f"\n  ({note})" if note else "")


def epilog(command: str) -> str:
    parts = []
    if command in EXAMPLES:
        parts.append("examples:\n" + "\n".join(f"  {line}" for line in EXAMPLES[command]))
    parts.append(exit_status(command))
    return "\n\n".join(parts)


def decorate(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """Give every command's help its examples and exit statuses (keeping any epilog it has)."""
    for name, parser in sub.choices.items():
        if parser.epilog and "exit status" in parser.epilog:
            continue
        parser.epilog = (parser.epilog + "\n\n" if parser.epilog else "") + epilog(name)
        if parser.formatter_class is argparse.HelpFormatter:
            parser.formatter_class = argparse.RawDescriptionHelpFormatter
