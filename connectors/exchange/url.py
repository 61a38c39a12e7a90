"""The ``exchange://`` URLs: a server's databases, a file-mode copy, and the restore targets.

* ``exchange://localhost/[DB1,DB2][?stage=PATH&system-state=1&vss=full|copy]``: run on the Exchange
  server (2007 onwards): discovery through PowerShell, a VSS shadow copy through ``diskshadow``.
* ``exchange:///?edb=PATH&logs=DIR[&prefix=E00]``: file mode, the given EDB and log folder read
  directly (offline copies, dismounted databases, third-party snapshots): no discovery, no VSS, no
  truncation.
* Restore: ``exchange:///?edb=DEST.edb&logs=DESTDIR[&recover=0]`` or
  ``exchange://localhost/NAME?recovery-db=1[&edb=PATH&logs=DIR]`` (a Recovery Database on the server).

Exchange runs as the Windows account dtstore runs under: nothing secret is ever part of a URL.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qs, unquote, urlsplit

from dtstore.errors import UsageError

URL_FORM = ("exchange://localhost/[DB1,DB2][?stage=PATH&system-state=1&vss=full|copy] or "
            "exchange:///?edb=PATH&logs=DIR[&prefix=E00]")
RESTORE_FORM = "exchange:///?edb=DEST.edb&logs=DESTDIR[&recover=0] or exchange://localhost/NAME?recovery-db=1"
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", ".")


@dataclass(frozen=True)
class ExchangeUrl:
    file_mode: bool
    databases: tuple[str, ...] = ()
    edb: str | None = None
    logs: str | None = None
    prefix: str | None = None
    stage: str | None = None
    system_state: bool = False
    vss: str = "full"
    recovery_db: bool = False
    recover: bool = True

    def display(self) -> str:
        if self.file_mode:
            params = [f"edb={self.edb}", f"logs={self.logs}"] + ([f"prefix={self.prefix}"] if self.prefix else [])
            if not self.recover:
                params.append("recover=0")
            return "exchange:///?" + "&".join(params)
        params = [f"stage={self.stage}"] if self.stage else []
        if self.system_state:
            params.append("system-state=1")
        if self.vss != "full":
            params.append(f"vss={self.vss}")
        if self.recovery_db:
            params.append("recovery-db=1")
            params += [f"{k}={v}" for k, v in (("edb", self.edb), ("logs", self.logs)) if v]
        return "exchange://localhost/" + ",".join(self.databases) + ("?" + "&".join(params) if params else "")


def _flag(params: dict[str, str], name: str, default: bool = False) -> bool:
    value = params.get(name)
    if value is None:
        return default
    if value not in ("0", "1"):
        raise UsageError(f"{name}= must be 0 or 1")
    return value == "1"


def parse_url(text: str, *, restore: bool = False) -> ExchangeUrl:
    """Parse an ``exchange://`` URL; every mistake is a UsageError ending with the expected form."""
    try:
        return _parse(text, restore)
    except UsageError as exc:
        raise UsageError(f"{exc}; expected {RESTORE_FORM if restore else URL_FORM}") from None


def _parse(text: str, restore: bool) -> ExchangeUrl:
    parts = urlsplit(text.replace("\\", "%5C"))  # Windows paths: a backslash is data, not a separator
    if parts.scheme.lower() != "exchange":
        raise UsageError(f"not an Exchange URL: {parts.scheme}://…")
    if parts.username or parts.password:
        raise UsageError("an Exchange URL takes no user or password: dtstore runs as the Windows account that "
                         "may back up Exchange")
    raw = parse_qs(parts.query, keep_blank_values=True)
    params = {k: unquote(v[-1]) for k, v in raw.items()}
    host = (parts.hostname or "").lower()
    names = tuple(unquote(d) for d in parts.path.strip("/").split(",") if d)
    if not host:  # file mode
        allowed = {"edb", "logs", "prefix"} | ({"recover"} if restore else set())
        unknown = set(params) - allowed
        if unknown:
            raise UsageError(f"unknown Exchange file-mode parameter(s): {', '.join(sorted(unknown))}")
        if names:
            raise UsageError("file mode (exchange:///?edb=…) names no database in the path")
        if not params.get("edb") or not params.get("logs"):
            raise UsageError("file mode needs edb=PATH and logs=DIR")
        if not params["edb"].lower().endswith(".edb"):
            raise UsageError(f"edb= must name an .edb file, not {params['edb']!r}")
        prefix = params.get("prefix")
        if prefix is not None and not (len(prefix) == 3 and prefix[0] in "Ee"
                                       and all(c in "0123456789abcdefABCDEF" for c in prefix[1:])):
            raise UsageError(f"prefix= must be E00 … EFF, not {prefix!r}")
        return ExchangeUrl(True, edb=params["edb"], logs=params["logs"], prefix=prefix.upper() if prefix else None,
                           recover=_flag(params, "recover", True))
    if host not in LOCAL_HOSTS:
        raise UsageError(f"the Exchange connector runs on the Exchange server itself: use exchange://localhost/, "
                         f"not {host}")
    allowed = {"stage", "system-state", "vss"} | ({"recovery-db", "edb", "logs", "recover"} if restore else set())
    unknown = set(params) - allowed
    if unknown:
        raise UsageError(f"unknown Exchange URL parameter(s): {', '.join(sorted(unknown))}")
    vss = params.get("vss", "full")
    if vss not in ("full", "copy"):
        raise UsageError("vss= must be full (Exchange truncates its logs after a committed snapshot) or copy "
                         "(never truncates)")
    recovery = _flag(params, "recovery-db")
    if restore and not recovery:
        raise UsageError("a restore on the server goes into a Recovery Database: add ?recovery-db=1 "
                         "(or restore to files with exchange:///?edb=…&logs=…)")
    if recovery and len(names) != 1:
        raise UsageError("recovery-db=1 needs the name of the Recovery Database to create: "
                         "exchange://localhost/NAME?recovery-db=1")
    return ExchangeUrl(False, databases=names, stage=params.get("stage") or None,
                       system_state=_flag(params, "system-state"), vss=vss, recovery_db=recovery,
                       edb=params.get("edb"), logs=params.get("logs"), recover=_flag(params, "recover", True))


__all__ = ["RESTORE_FORM", "URL_FORM", "ExchangeUrl", "parse_url"]
