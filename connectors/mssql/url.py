"""The ``mssql://`` URL: who to connect as, where, which databases, the stage folder; never a password.

``mssql://USER@HOST[:PORT][/DB1,DB2]?driver=NAME&stage=PATH[&trusted=1][&password_file=PATH]
[&copy_only=1][&compression=1][&encrypt=no|yes|strict][&tds_version=7.4]``.  The password comes
from ``SQLCMDPASSWORD`` (sqlcmd's variable) or ``password_file``, never from the URL or argv.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qs, quote, unquote, urlsplit

from dtstore.errors import UsageError

URL_FORM = ("mssql://USER@HOST[:PORT][/DB1,DB2]?driver=NAME&stage=PATH[&trusted=1][&password_file=PATH]"
            "[&copy_only=1][&compression=1][&encrypt=no|yes|strict]")
PASSWORD_ENV = "SQLCMDPASSWORD"
PARAMS = ("driver", "stage", "trusted", "password_file", "copy_only", "compression", "encrypt", "tds_version")
DEFAULT_PORT = 1433


@dataclass(frozen=True)
class MssqlUrl:
    """A parsed ``mssql://`` URL; holds no password."""

    user: str
    host: str = "localhost"
    port: int | None = None
    databases: tuple[str, ...] = ()
    driver: str | None = None
    stage: str | None = None
    trusted: bool = False
    password_file: str | None = None
    copy_only: bool = False
    compression: bool = False
    encrypt: str | None = None
    tds_version: str = "7.4"

    def display(self) -> str:
        """The URL as shown to users and stored in the manifest (no secret in it)."""
        netloc = f"{quote(self.user, safe='')}@{self.host}" + (f":{self.port}" if self.port else "")
        path = ",".join(quote(d, safe="") for d in self.databases)
        params = [f"{k}={v}" for k, v in (("driver", self.driver), ("stage", self.stage),
                                          ("password_file", self.password_file), ("encrypt", self.encrypt)) if v]
        params += [f"{k}=1" for k, v in (("trusted", self.trusted), ("copy_only", self.copy_only),
                                         ("compression", self.compression)) if v]
        return f"mssql://{netloc}/{path}" + (f"?{'&'.join(params)}" if params else "")

    def stage_dir(self) -> Path:
        if not self.stage:
            raise UsageError("the mssql URL needs &stage=PATH: a folder the SQL Server service can write and "
                             f"dtstore can read (the .bak files are written there); expected {URL_FORM}")
        return Path(self.stage)

    def password(self) -> str:
        """``SQLCMDPASSWORD``, or the first line of ``password_file``; never logged."""
        if self.trusted:
            return ""
        if self.password_file:
            try:
                with open(self.password_file, encoding="utf-8") as f:
                    return f.readline().rstrip("\r\n")
            except OSError as exc:
                raise UsageError(f"cannot read password_file {self.password_file}: {exc.strerror}") from None
        value = os.environ.get(PASSWORD_ENV)
        if value is None:
            raise UsageError(f"no SQL Server password: set {PASSWORD_ENV} or add &password_file=PATH "
                             "(or &trusted=1 for Windows authentication)")
        return value

    def is_freetds(self, driver: str) -> bool:
        return "freetds" in driver.lower() or "libtdsodbc" in driver.lower()

    def connection_string(self, driver: str) -> str:
        """The ODBC connection string (it holds the password: never shown, never in argv)."""
        parts = [f"DRIVER={{{driver}}}" if not driver.startswith("/") else f"DRIVER={driver}"]
        port = self.port or DEFAULT_PORT
        if self.is_freetds(driver):
            parts += [f"SERVER={self.host}", f"PORT={port}", f"TDS_Version={self.tds_version}",
                      f"Encrypt={self.encrypt or 'no'}"]
        else:
            parts += [f"SERVER={self.host},{port}"]
            if self.encrypt:
                parts.append(f"Encrypt={self.encrypt}")
        if self.trusted:
            parts.append("Trusted_Connection=yes")
        else:
            parts += [f"UID={_braced(self.user)}", f"PWD={_braced(self.password())}"]
        parts.append("APP=dtstore")
        return ";".join(parts)


def _braced(value: str) -> str:
    return "{" + value.replace("}", "}}") + "}"


def parse_url(text: str) -> MssqlUrl:
    """Parse an ``mssql://`` URL; every mistake is a UsageError that ends with the expected form."""
    try:
        return _parse(text)
    except UsageError as exc:
        raise UsageError(f"{exc}; expected {URL_FORM}") from None


def _flag(params: dict[str, str], name: str) -> bool:
    value = params.get(name, "0")
    if value not in ("0", "1", "yes", "no", "true", "false"):
        raise UsageError(f"{name}= must be 1 or 0")
    return value in ("1", "yes", "true")


def _parse(text: str) -> MssqlUrl:
    parts = urlsplit(text)
    if parts.scheme != "mssql":
        raise UsageError(f"not a SQL Server URL: {parts.scheme}://…")
    if parts.password is not None:
        raise UsageError(f"a password in the URL is refused: set {PASSWORD_ENV} or use &password_file=PATH")
    params = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
    unknown = set(params) - set(PARAMS)
    if unknown:
        raise UsageError(f"unknown SQL Server URL parameter(s): {', '.join(sorted(unknown))}")
    trusted = _flag(params, "trusted")
    if not parts.username and not trusted:
        raise UsageError("the SQL Server URL needs a user (or &trusted=1)")
    try:
        port = parts.port
    except ValueError as exc:
        raise UsageError("invalid port in the SQL Server URL") from exc
    encrypt = params.get("encrypt") or None
    if encrypt not in (None, "no", "yes", "strict", "optional", "mandatory"):
        raise UsageError("encrypt= must be no, yes or strict")
    databases = tuple(unquote(d) for d in parts.path.strip("/").split(",") if d)
    for name in databases:
        if name.lower() == "tempdb":
            raise UsageError("tempdb cannot be backed up")
    return MssqlUrl(
        user=unquote(parts.username or ""),
        host=parts.hostname or "localhost",
        port=port,
        databases=databases,
        driver=params.get("driver") or None,
        stage=params.get("stage") or None,
        trusted=trusted,
        password_file=params.get("password_file") or None,
        copy_only=_flag(params, "copy_only"),
        compression=_flag(params, "compression"),
        encrypt=encrypt,
        tds_version=params.get("tds_version") or "7.4",
    )


__all__ = ["PASSWORD_ENV", "URL_FORM", "MssqlUrl", "parse_url"]
