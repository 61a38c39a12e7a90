"""NOTES.INI: the keys the connector needs, read the way Domino writes them.

NOTES.INI is ``KEY=VALUE`` lines under a ``[Notes]`` section (keys are case-insensitive, the last
one wins, CRLF on Windows).  Relative paths (``DAOSBasePath=DAOS``, a relative ``TRANSLOG_Path``)
are relative to the data directory; the transaction log defaults to ``<data>/LOGDIR``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from dtstore.errors import ConnectorError

STYLES = {0: "circular", 1: "archive", 2: "linear"}


@dataclass(frozen=True)
class NotesIni:
    path: Path
    values: dict[str, str]

    def get(self, key: str, default: str = "") -> str:
        return self.values.get(key.lower(), default)

    @property
    def directory(self) -> Path | None:
        value = self.get("Directory")
        return Path(value) if value else None

    def data_dir(self, fallback: Path) -> Path:
        return self.directory or fallback

    def translog_path(self, data: Path) -> Path:
        value = self.get("TRANSLOG_Path")
        if not value:
            return data / "LOGDIR"
        path = Path(value)
        return path if path.is_absolute() else data / path

    @property
    def translog_status(self) -> bool:
        return self.get("TRANSLOG_Status", "0").strip() == "1"

    @property
    def translog_style(self) -> str:
        raw = self.get("TRANSLOG_Style", "0").strip()
        try:
            return STYLES.get(int(raw), f"unknown ({raw})")
        except ValueError:
            return f"unknown ({raw})"

    def daos_path(self, data: Path) -> Path | None:
        value = self.get("DAOSBasePath")
        if not value:
            return None
        path = Path(value)
        return path if path.is_absolute() else data / path

    @property
    def server_name(self) -> str:
        return self.get("ServerName")

    @property
    def version(self) -> str:
        return self.get("Domino_Version") or self.get("KitVersion") or "unknown"

    def node(self) -> str:
        """What Domino Backup calls the BackupNode: the server's CN, spaces replaced by underscores."""
        name = self.server_name
        first = name.split("/")[0]
        cn = first[3:] if first.upper().startswith("CN=") else first
        return cn.strip().replace(" ", "_")


def read_ini(path: Path) -> NotesIni:
    try:
        text = path.read_bytes().decode("utf-8", errors="replace")
    except OSError as exc:
        raise ConnectorError(f"cannot read NOTES.INI {path}: {exc.strerror or exc}") from exc
    values: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith((";", "[")) or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key.strip().lower()] = value.strip()
    return NotesIni(path, values)


def find_ini(data: Path) -> Path:
    """NOTES.INI in the data directory (Linux) — on Windows it usually lives in the program directory,
    so give ``?ini=PATH`` there."""
    for name in ("notes.ini", "NOTES.INI", "Notes.ini"):
        if (data / name).is_file():
            return data / name
    raise ConnectorError(
        f"no notes.ini in {data}; give its path with ?ini=PATH (on Windows it is in the program directory, "
        f"e.g. C:{os.sep}Program Files{os.sep}HCL{os.sep}Domino{os.sep}notes.ini)"
    )


__all__ = ["STYLES", "NotesIni", "find_ini", "read_ini"]
