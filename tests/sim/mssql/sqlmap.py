"""T-SQL of the documented subset, rewritten for sqlite: names, literals, a few functions.

Rewrites happen only outside string literals.  ``[x]`` becomes ``"x"``; ``N'…'`` becomes ``'…'``;
``db.dbo.t`` (and ``db..t``) becomes ``db.t`` with ``db`` attached; ``dbo.t`` becomes ``t``; system
views (``sys.databases``, ``sys.master_files``, ``sys.database_recovery_status``) and msdb tables
(``msdb.dbo.backupset``, ``msdb.dbo.backupmediafamily``) become tables of the simulator's own
catalog; ``TOP (n)`` becomes ``LIMIT n``; ``@@SERVERNAME``, ``@@VERSION``, ``@@TRANCOUNT``,
``SERVERPROPERTY``, ``DB_ID``, ``DB_NAME``, ``SYSDATETIMEOFFSET()``, ``DATEPART(TZOFFSET, …)``,
``GETDATE()``, ``SYSUTCDATETIME()``, ``ISNULL`` and ``LEN`` become sqlite functions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

LITERAL = re.compile(r"N?'(?:[^']|'')*'", re.S)
IDENT = r'(?:"[^"]+"|[A-Za-z_][\w$#@]*)'
SYSTEM_VIEWS = ("databases", "master_files", "database_recovery_status")
MSDB_TABLES = ("backupset", "backupmediafamily", "restorehistory")
CATALOG = "sysdb"


def split_literals(sql: str) -> list[tuple[bool, str]]:
    """(is_literal, text) pieces."""
    pieces, pos = [], 0
    for match in LITERAL.finditer(sql):
        pieces.append((False, sql[pos : match.start()]))
        pieces.append((True, match.group(0)))
        pos = match.end()
    pieces.append((False, sql[pos:]))
    return pieces


def literal_value(text: str) -> str:
    body = text[1:] if text[:1] in "Nn" else text
    return body[1:-1].replace("''", "'")


def split_statements(sql: str) -> list[str]:
    """Top-level ``;``-separated statements (and ``GO`` lines), literals respected."""
    out, current = [], []
    for is_lit, text in split_literals(sql):
        if is_lit:
            current.append(text)
            continue
        parts = re.split(r";|^\s*GO\s*$", text, flags=re.M | re.I)
        current.append(parts[0])
        for part in parts[1:]:
            out.append("".join(current))
            current = [part]
    out.append("".join(current))
    return [s.strip() for s in out if s.strip()]


def unquote(name: str) -> str:
    name = name.strip()
    if name[:1] in '["' and name[-1:] in ']"':
        return name[1:-1].replace("]]", "]")
    return name


@dataclass
class Rewritten:
    sql: str
    databases: set[str] = field(default_factory=set)
    """databases named in three-part names (attached under their own names)"""
    catalog: bool = False
    """reads the simulator's catalog (system views, msdb)"""


def rewrite(sql: str, *, for_database: str | None = None) -> Rewritten:
    """T-SQL → sqlite.  ``for_database``: a write to that database, whose own three-part names become bare."""
    result = Rewritten("")
    limit: str | None = None
    pieces = []
    for is_lit, text in split_literals(sql):
        if is_lit:
            pieces.append(text[1:] if text[:1] in "Nn" else text)
            continue
        text = re.sub(r"\[([^\]]+)\]", lambda m: '"' + m.group(1) + '"', text)

        def system(m: re.Match[str]) -> str:
            result.catalog = True
            return f"{CATALOG}.sys_{m.group(1).lower()}"

        text = re.sub(rf"\b(?:(?:master|\"master\")\.)?(?:sys|\"sys\")\.\"?({'|'.join(SYSTEM_VIEWS)})\b\"?",
                      system, text, flags=re.I)

        def msdb(m: re.Match[str]) -> str:
            result.catalog = True
            return f"{CATALOG}.msdb_{m.group(1).lower()}"

        text = re.sub(rf"\b(?:msdb|\"msdb\")\.(?:(?:dbo|\"dbo\"))?\.\"?({'|'.join(MSDB_TABLES)})\b\"?", msdb, text,
                      flags=re.I)

        def three(m: re.Match[str]) -> str:
            db, table = unquote(m.group(1)), m.group(2)
            if for_database is not None and db.lower() == for_database.lower():
                return table
            result.databases.add(db)
            return f'"{db}".{table}'

        text = re.sub(rf'(?<![\w."])({IDENT})\.(?:{IDENT})?\.({IDENT})', three, text)
        text = re.sub(r'(?<![\w."])(?:dbo|"dbo")\.', "", text, flags=re.I)

        def top(m: re.Match[str]) -> str:
            nonlocal limit
            limit = m.group(1) or m.group(2)
            return " "

        text = re.sub(r"\bTOP\s*(?:\(\s*(\d+)\s*\)|(\d+))", top, text, flags=re.I)
        text = re.sub(r"\bDATEPART\s*\(\s*TZOFFSET\s*,\s*SYSDATETIMEOFFSET\s*\(\s*\)\s*\)", "tzoffset_()", text,
                      flags=re.I)
        for name, repl in (("@@SERVERNAME", "servername_()"), ("@@VERSION", "version_()"),
                           ("@@TRANCOUNT", "trancount_()"), ("@@SPID", "spid_()")):
            text = re.sub(re.escape(name) + r"\b", repl, text, flags=re.I)
        for name, repl in (("SERVERPROPERTY", "serverproperty_"), ("DB_ID", "db_id_"), ("DB_NAME", "db_name_"),
                           ("SYSDATETIMEOFFSET", "sysdatetimeoffset_"), ("GETDATE", "localnow_"),
                           ("SYSDATETIME", "localnow_"), ("SYSUTCDATETIME", "utcnow_"), ("GETUTCDATE", "utcnow_"),
                           ("ISNULL", "IFNULL"), ("LEN", "LENGTH"), ("COUNT_BIG", "COUNT")):
            text = re.sub(rf"\b{name}\s*\(", repl + "(", text, flags=re.I)
        text = re.sub(r"\bIDENTITY\s*\(\s*\d+\s*,\s*\d+\s*\)", "", text, flags=re.I)
        pieces.append(text)
    result.sql = "".join(pieces).strip()
    if limit is not None:
        result.sql += f" LIMIT {limit}"
    return result


__all__ = ["CATALOG", "Rewritten", "literal_value", "rewrite", "split_literals", "split_statements", "unquote"]
