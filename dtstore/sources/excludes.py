"""What a files source leaves out, with restic's semantics (restic manual, "Excluding files").

Patterns are matched against the absolute path on disk, component by component.  A component
pattern is a glob (``*``, ``?``, ``[a-z]``, ``[^a-z]``, ``\\`` escapes; none of them matches ``/``),
and ``**`` matches any number of components.  A pattern that starts with ``/`` must match from
the root; any other pattern may match at any depth.  A pattern need not reach the end of the path,
so excluding a directory excludes everything below it.  A pattern starting with ``!`` re-includes
what it matches; the last pattern that matches decides.  ``iexclude`` patterns ignore case.

Exclude files hold one pattern a line; blank lines and lines starting with ``#`` are ignored,
surrounding whitespace is trimmed and ``$VAR``/``${VAR}`` are expanded (unset: empty; ``$$`` is
a literal ``$``).

``Excludes.from_config`` builds the options from a job's config keys, named like the flags.
"""

from __future__ import annotations

import glob
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from dtstore.errors import UsageError

CACHEDIR_TAG = "CACHEDIR.TAG"
CACHEDIR_SIGNATURE = b"Signature: 8a477f597d28d172789f06886806bc55"
"""https://bford.info/cachedir/: the first 43 bytes of a CACHEDIR.TAG file"""

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgt]?)(i?b)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str | int) -> int:
    """``1024``, ``500k``, ``2M``, ``1.5GiB``, ``3t``: binary multiples (restic's sizes)."""
    if isinstance(text, int):
        return text
    match = _SIZE.match(text)
    if not match:
        raise UsageError(f"{text!r} is not a size (write 1024, 500K, 2M, 1G, 1T)")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def _component_regex(part: str, ignore_case: bool) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(part):
        c = part[i]
        if c == "\\" and i + 1 < len(part):
            out.append(re.escape(part[i + 1]))
            i += 2
            continue
        if c == "*":
            out.append(".*")
        elif c == "?":
            out.append(".")
        elif c == "[":
            end = part.find("]", i + 2 if part[i + 1 : i + 2] in ("^", "!") else i + 1)
            if end < 0:
                raise UsageError(f"bad pattern {part!r}: '[' without ']'")
            body = part[i + 1 : end]
            negate = body[:1] in ("^", "!")
            body = body[1:] if negate else body
            out.append("[" + ("^" if negate else "") + body.replace("\\", "\\\\") + "]")
            i = end + 1
            continue
        else:
            out.append(re.escape(c))
        i += 1
    return re.compile("".join(out), re.DOTALL | (re.IGNORECASE if ignore_case else 0))


@dataclass(frozen=True)
class Pattern:
    """One compiled exclude pattern."""

    text: str
    ignore_case: bool = False

    @cached_property
    def negated(self) -> bool:
        return self.text.startswith("!")

    @cached_property
    def _parts(self) -> tuple[re.Pattern[str] | None, ...]:
        """Component matchers; ``None`` stands for ``**``; a leading ``"/"`` anchor is kept apart."""
        body = self.text[1:] if self.negated else self.text
        if not body:
            raise UsageError("an empty exclude pattern")
        parts = [p for p in os.path.normpath(body).split("/") if p]
        return tuple(None if p == "**" else _component_regex(p, self.ignore_case) for p in parts)

    @cached_property
    def anchored(self) -> bool:
        body = self.text[1:] if self.negated else self.text
        return body.startswith("/")

    def matches(self, path: str, *, whole: bool = False) -> bool:
        """Does the pattern match ``path`` (absolute, ``/``-separated) or one of its ancestors?  With
        ``whole``, the pattern must reach the end of the path (``find``)."""
        names = [p for p in path.split("/") if p]
        parts = self._parts
        if not parts:  # the pattern "/"
            return not whole or not names
        if self.anchored:
            return _match_at(parts, names, 0, whole)
        return any(_match_at(parts, names, start, whole) for start in range(len(names)))


    def could_match_below(self, names: Sequence[str]) -> bool:
        """Could the pattern match a path below the directory ``names`` (conservative)?"""
        if not self.anchored:
            return True
        for part, name in zip(self._parts, names, strict=False):
            if part is None:
                return True
            if not part.fullmatch(name):
                return False
        return True


def _match_at(parts: Sequence[re.Pattern[str] | None], names: Sequence[str], start: int, whole: bool) -> bool:
    """Do ``parts`` match ``names[start:start+k]`` for some k (the rest of the path is below), or
    with ``whole`` exactly ``names[start:]``?"""
    if not parts:
        return not whole or start == len(names)
    head, rest = parts[0], parts[1:]
    if head is None:  # ** : zero or more components
        return any(_match_at(rest, names, i, whole) for i in range(start, len(names) + 1))
    if start >= len(names) or not head.fullmatch(names[start]):
        return False
    return _match_at(rest, names, start + 1, whole)


def read_pattern_file(path: str) -> list[str]:
    """restic's exclude-file format; ``-`` is standard input."""
    text = _read_text(path)
    patterns = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            patterns.append(expand_env(line))
    return patterns


_VARIABLE = re.compile(r"\$(\$|\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)")


def expand_env(text: str) -> str:
    """restic's expansion in pattern files: ``$NAME`` and ``${NAME}`` become the variable's value
    (empty when unset), ``$$`` a literal ``$``."""
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name == "$":
            return "$"
        return os.environ.get(name.strip("{}"), "")

    return _VARIABLE.sub(value, text)


def _read_text(path: str) -> str:
    return os.fsdecode(_read_bytes(path))


def _read_bytes(path: str) -> bytes:
    try:
        if path == "-":
            import sys

            return sys.stdin.buffer.read()
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror}") from None


def files_from(path: str, *, mode: str = "glob") -> list[str]:
    """Paths listed in a file (restic's ``--files-from`` family); ``-`` is standard input.

    ``glob``: one glob pattern a line, ``#`` comments and blank lines ignored, each pattern expanded
    (one that matches nothing is a usage error).  ``verbatim``: one path a line, taken as it is
    (only empty lines are skipped).  ``raw``: NUL-separated paths, taken as they are."""
    if mode == "raw":
        return [os.fsdecode(p) for p in _read_bytes(path).split(b"\0") if p]
    text = _read_text(path)
    if mode == "verbatim":
        return [line for line in text.split("\n") if line.rstrip("\r")]
    if mode != "glob":
        raise UsageError(f"unknown --files-from mode {mode!r}")
    found: list[str] = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        matches = sorted(glob.glob(line)) if glob.has_magic(line) else [line]
        if not matches:
            raise UsageError(f"{path}: {line!r} matches no file")
        found.extend(matches)
    return found


@dataclass(frozen=True)
class Excludes:
    """What a ``FilesSource`` leaves out.  Every field is one restic flag (and one config key)."""

    exclude: tuple[str, ...] = ()
    iexclude: tuple[str, ...] = ()
    exclude_file: tuple[str, ...] = ()
    iexclude_file: tuple[str, ...] = ()
    exclude_caches: bool = False
    exclude_if_present: tuple[str, ...] = ()
    """``NAME`` or ``NAME:HEADER``: leave out the contents of a directory holding NAME (whose contents
    start with HEADER), except NAME itself"""
    exclude_larger_than: int | None = None
    one_file_system: bool = False

    KEYS = ("exclude", "iexclude", "exclude_file", "iexclude_file", "exclude_caches", "exclude_if_present",
            "exclude_larger_than", "one_file_system")

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Excludes:
        """From a job's config keys (a list or a single string for the pattern keys; a size such as
        ``"2G"`` for ``exclude_larger_than``).  Unknown keys are refused."""
        unknown = sorted(set(config) - set(cls.KEYS))
        if unknown:
            raise UsageError(f"unknown exclude option(s): {', '.join(unknown)}")

        def strings(key: str) -> tuple[str, ...]:
            value = config.get(key, ())
            if isinstance(value, str):
                return (value,)
            if not isinstance(value, Iterable) or not all(isinstance(v, str) for v in value):
                raise UsageError(f"{key} must be a string or a list of strings")
            return tuple(value)

        def flag(key: str) -> bool:
            value = config.get(key, False)
            if not isinstance(value, bool):
                raise UsageError(f"{key} must be true or false")
            return value

        larger = config.get("exclude_larger_than")
        return cls(exclude=strings("exclude"), iexclude=strings("iexclude"), exclude_file=strings("exclude_file"),
                   iexclude_file=strings("iexclude_file"), exclude_caches=flag("exclude_caches"),
                   exclude_if_present=strings("exclude_if_present"),
                   exclude_larger_than=None if larger is None else parse_size(larger),
                   one_file_system=flag("one_file_system"))

    def __post_init__(self) -> None:
        if self.exclude_larger_than is not None and self.exclude_larger_than < 0:
            raise UsageError("exclude_larger_than must not be negative")
        self.patterns()  # bad patterns and unreadable files fail now, before any work

    def patterns(self) -> tuple[Pattern, ...]:
        return self._patterns

    @cached_property
    def _patterns(self) -> tuple[Pattern, ...]:
        found = [Pattern(p) for p in self.exclude]
        found += [Pattern(p) for f in self.exclude_file for p in read_pattern_file(f)]
        found += [Pattern(p, ignore_case=True) for p in self.iexclude]
        found += [Pattern(p, ignore_case=True) for f in self.iexclude_file for p in read_pattern_file(f)]
        for p in found:
            _ = p.anchored, p._parts  # compile (and validate) now
        return tuple(found)

    @cached_property
    def _markers(self) -> tuple[tuple[str, bytes], ...]:
        markers = [(CACHEDIR_TAG, CACHEDIR_SIGNATURE)] if self.exclude_caches else []
        for spec in self.exclude_if_present:
            name, _, header = spec.partition(":")
            if not name or "/" in name:
                raise UsageError(f"exclude_if_present {spec!r}: give a file name, optionally NAME:HEADER")
            markers.append((name, header.encode()))
        return tuple(markers)

    def is_empty(self) -> bool:
        return not (self.patterns() or self._markers or self.exclude_larger_than is not None or self.one_file_system)

    def path_excluded(self, path: str) -> bool:
        """By the patterns alone; ``path`` absolute (``os.fsdecode`` of the bytes)."""
        excluded = False
        for pattern in self._patterns:
            if pattern.negated == excluded and pattern.matches(path):
                excluded = not pattern.negated
        return excluded

    def may_reinclude_below(self, path: str) -> bool:
        """Could a ``!`` pattern re-include something below the excluded directory ``path``?"""
        names = [p for p in path.split("/") if p]
        return any(p.negated and p.could_match_below(names) for p in self._patterns)

    def size_excluded(self, size: int) -> bool:
        return self.exclude_larger_than is not None and size > self.exclude_larger_than

    def markers_in(self, directory: bytes) -> list[bytes]:
        """The tag files (CACHEDIR.TAG, ``exclude_if_present``) in ``directory`` that mark it: then,
        as restic does, only the directory and these files are kept, not the rest of its contents."""
        found = []
        for name, header in self._markers:
            marker = os.fsencode(name)
            try:
                with open(os.path.join(directory, marker), "rb") as f:
                    if not header or f.read(len(header)) == header:
                        found.append(marker)
            except OSError:
                continue
        return sorted(set(found))


NO_EXCLUDES = Excludes()


__all__ = ["CACHEDIR_SIGNATURE", "CACHEDIR_TAG", "NO_EXCLUDES", "Excludes", "Pattern", "files_from",
           "parse_size", "read_pattern_file"]
