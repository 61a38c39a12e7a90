"""``domino:///local/notesdata[?ini=PATH&stage=PATH&snapshot=1&exclude=GLOB…]``: the data directory.

The path is the Domino data directory (``domino:///C:/Domino/Data`` on Windows).  Options:

* ``ini=PATH``: NOTES.INI (default: ``notes.ini`` in the data directory);
* ``stage=PATH``: accepted for symmetry with the other connectors (direct mode reads files in place);
* ``snapshot=1``: the data directory is a file-system snapshot (or the server is stopped): copy the
  NSF files even though ``pid.nbf`` says a server runs;
* ``exclude=GLOB`` (repeatable): more exclusion patterns, restic's semantics (``spec/cli.md``);
* restore targets only: ``translog=PATH`` (where restored extents go), ``replace=1``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

from dtstore.errors import UsageError

URL_FORM = "domino:///PATH/TO/notesdata[?ini=PATH&snapshot=1]"
_KNOWN = {"ini", "stage", "snapshot", "exclude", "translog", "replace"}
_FLAGS = {"1": True, "true": True, "yes": True, "0": False, "false": False, "no": False}


def _bad(message: str) -> UsageError:
    return UsageError(f"{message}; expected {URL_FORM}")


@dataclass(frozen=True)
class DominoUrl:
    data: Path
    ini: Path | None = None
    stage: Path | None = None
    snapshot: bool = False
    excludes: tuple[str, ...] = ()
    translog: Path | None = None
    replace: bool = False

    def display(self) -> str:
        return f"domino://{self.data.as_posix() if os.name != 'nt' else '/' + self.data.as_posix()}"


def _flag(key: str, value: str) -> bool:
    try:
        return _FLAGS[value.lower()]
    except KeyError:
        raise _bad(f"{key}= must be 1 or 0, not {value!r}") from None


def parse_url(url: str) -> DominoUrl:
    parts = urlsplit(url)
    if parts.scheme.lower() != "domino":
        raise _bad(f"not a domino URL: {url.split('://')[0]!r}")
    if parts.netloc not in ("", "localhost"):
        raise _bad(f"a domino URL names a local directory (domino:///PATH), not host {parts.netloc!r}; run dtstore "
                   "on the Domino server")
    raw = unquote(parts.path)
    if len(raw) > 2 and raw[0] == "/" and raw[2] == ":":  # /C:/Domino/Data
        raw = raw[1:]
    if not raw or raw == "/":
        raise _bad("the URL needs the data directory as its path")
    options: dict[str, str] = {}
    excludes: list[str] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key not in _KNOWN:
            raise _bad(f"unknown Domino URL parameter {key!r} (known: {', '.join(sorted(_KNOWN))})")
        if key == "exclude":
            excludes.append(value)
        else:
            options[key] = value
    return DominoUrl(
        data=Path(raw),
        ini=Path(options["ini"]) if options.get("ini") else None,
        stage=Path(options["stage"]) if options.get("stage") else None,
        snapshot=_flag("snapshot", options["snapshot"]) if "snapshot" in options else False,
        excludes=tuple(excludes),
        translog=Path(options["translog"]) if options.get("translog") else None,
        replace=_flag("replace", options["replace"]) if "replace" in options else False,
    )


__all__ = ["URL_FORM", "DominoUrl", "parse_url"]
