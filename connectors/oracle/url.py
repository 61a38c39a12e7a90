"""The ``oracle://`` URL: who to connect as, where, how to reach the host's files; never a password.

``oracle://USER@HOST[:PORT]/SERVICE?files=local|sftp://OSUSER@DBHOST[:PORT][&stage=PATH][&driver=MODULE]
[&password_file=PATH][&privilege=sysdba|sysbackup][&windows=yes][&sqlplus=PATH][&pfile=PATH]
[&target_dir=PATH]``.
The password comes from ``ORACLE_PWD`` or ``password_file=`` (a file on this machine), never from the
URL or argv.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import PurePath, PurePosixPath, PureWindowsPath
from urllib.parse import parse_qs, quote, unquote, urlsplit

from dtstore.errors import UsageError

SCHEMES = ("oracle",)
URL_FORM = ("oracle://USER@HOST[:PORT]/SERVICE[?files=local|sftp://OSUSER@DBHOST[:PORT]&stage=PATH"
            "&driver=MODULE&password_file=PATH&privilege=sysdba|sysbackup&windows=yes&sqlplus=PATH]")
PARAMS = ("files", "stage", "driver", "password_file", "privilege", "windows", "sqlplus", "pfile", "target_dir")


def _bad(message: str) -> UsageError:
    return UsageError(f"{message}; expected {URL_FORM}")


@dataclass(frozen=True)
class FilesAccess:
    """How dtstore reaches the database host's files: ``local`` or over SSH/SFTP."""

    user: str | None = None
    host: str | None = None
    port: int = 22

    @property
    def local(self) -> bool:
        return self.host is None

    def display(self) -> str:
        if self.local:
            return "local"
        return f"sftp://{self.user}@{self.host}" + (f":{self.port}" if self.port != 22 else "")


@dataclass(frozen=True)
class OracleUrl:
    user: str
    host: str
    port: int
    service: str
    files: FilesAccess = field(default_factory=FilesAccess)
    stage: str | None = None
    driver: str = "oracledb"
    password_file: str | None = None
    privilege: str = "sysdba"
    windows: bool = False
    sqlplus: str = "sqlplus"
    pfile: str | None = None
    target_dir: str | None = None
    """restore: lay the files out below this folder on the host (as ``--target-dir``, which wins)"""

    @property
    def dsn(self) -> str:
        return f"{self.host}:{self.port}/{self.service}"

    def host_path(self, text: str) -> PurePath:
        return PureWindowsPath(text) if self.windows else PurePosixPath(text)

    def display(self) -> str:
        params = [f"files={self.files.display()}"]
        for key, value, default in (("stage", self.stage, None), ("driver", self.driver, "oracledb"),
                                    ("privilege", self.privilege, "sysdba"), ("sqlplus", self.sqlplus, "sqlplus"),
                                    ("pfile", self.pfile, None), ("password_file", self.password_file, None),
                                    ("target_dir", self.target_dir, None)):
            if value != default:
                params.append(f"{key}={value}")
        if self.windows:
            params.append("windows=yes")
        return f"oracle://{quote(self.user, safe='')}@{self.host}:{self.port}/{self.service}?{'&'.join(params)}"

    def password(self) -> str:
        if self.password_file:
            try:
                with open(self.password_file, encoding="utf-8") as handle:
                    return handle.readline().rstrip("\r\n")
            except OSError as exc:
                raise UsageError(f"cannot read the password file {self.password_file}: {exc.strerror}") from exc
        value = os.environ.get("ORACLE_PWD")
        if value is None:
            raise UsageError("no Oracle password: set ORACLE_PWD or give &password_file=PATH in the URL")
        return value


def _files(text: str) -> FilesAccess:
    if text == "local":
        return FilesAccess()
    parts = urlsplit(text)
    if parts.scheme != "sftp" or not parts.hostname or not parts.username:
        raise _bad(f"files= must be local or sftp://OSUSER@DBHOST[:PORT], not {text!r}")
    if parts.password:
        raise _bad("a password in files= is refused (SSH keys are used)")
    try:
        port = parts.port or 22
    except ValueError:
        raise _bad(f"invalid port in files={text}") from None
    return FilesAccess(unquote(parts.username), parts.hostname, port)


def parse_url(url: str) -> OracleUrl:
    parts = urlsplit(url)
    if parts.scheme.lower() not in SCHEMES:
        raise _bad(f"not an oracle:// URL: {parts.scheme}://")
    if parts.password is not None:
        raise _bad("a password in the URL is refused (use ORACLE_PWD or &password_file=PATH)")
    if not parts.username:
        raise _bad("the URL needs a user (oracle://USER@HOST…)")
    try:
        port = parts.port or 1521
    except ValueError:
        raise _bad("invalid port") from None
    service = parts.path.strip("/")
    if not service or "/" in service:
        raise _bad("the URL needs one service name after the host (oracle://USER@HOST:PORT/SERVICE)")
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(set(query) - set(PARAMS))
    if unknown:
        raise _bad(f"unknown Oracle URL parameter {', '.join(unknown)}")
    one = {k: v[-1] for k, v in query.items()}
    privilege = one.get("privilege", "sysdba").lower()
    if privilege not in ("sysdba", "sysbackup"):
        raise _bad(f"privilege= must be sysdba or sysbackup, not {privilege!r}")
    windows = one.get("windows", "no").lower()
    if windows not in ("yes", "no"):
        raise _bad("windows= must be yes or no")
    driver = one.get("driver", "oracledb")
    if not driver or not all(p.isidentifier() for p in driver.split(".")):
        raise _bad(f"driver= must name a Python module, not {driver!r}")
    return OracleUrl(
        user=unquote(parts.username), host=parts.hostname or "localhost", port=port, service=service,
        files=_files(one.get("files", "local")), stage=one.get("stage") or None, driver=driver,
        password_file=one.get("password_file") or None, privilege=privilege, windows=windows == "yes",
        sqlplus=one.get("sqlplus") or "sqlplus", pfile=one.get("pfile") or None,
        target_dir=one.get("target_dir") or None,
    )


__all__ = ["PARAMS", "SCHEMES", "URL_FORM", "FilesAccess", "OracleUrl", "parse_url"]
