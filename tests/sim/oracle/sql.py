"""The statements the simulated database understands (one statement per call, autocommit).

Workload: ``CREATE TABLE t (c TYPE, …)``, ``INSERT INTO t [(cols)] VALUES (…)``, ``UPDATE t SET c = expr
[, …] [WHERE …]``, ``DELETE FROM t [WHERE …]``, ``DROP TABLE t``, ``SELECT cols|* FROM t [WHERE …] [ORDER
BY …]`` (WHERE: ``col op literal`` joined by AND; expr: a literal, ``col + n``, ``col - n``).
Backup: ``ALTER SYSTEM ARCHIVE LOG CURRENT`` / ``SWITCH LOGFILE``, ``ALTER DATABASE BEGIN|END BACKUP``,
``ALTER DATABASE BACKUP CONTROLFILE TO 'f' [REUSE]`` and ``TO TRACE AS 'f' [REUSE]``, ``CREATE PFILE='f'
FROM SPFILE``, ``ALTER SYSTEM SET name='value'``, the ``v$`` views, ``SELECT … FROM dual``.
Instance (SQL*Plus): ``ALTER DATABASE MOUNT|OPEN [RESETLOGS]``, ``ALTER DATABASE RENAME FILE 'a' TO 'b'``,
``[ALTER DATABASE] RECOVER …``.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.sim.oracle.db import (
    TIME_FORMAT,
    Database,
    OraError,
    Tree,
    archive_dests,
    format_params,
    recover,
    running,
    write_atomic,
)

VALUE = r"(?:'(?:[^']|'')*'|-?\d+(?:\.\d+)?|NULL)"


@dataclass
class Result:
    columns: list[str] = field(default_factory=list)
    rows: list[tuple[Any, ...]] = field(default_factory=list)
    message: str = ""
    types: list[str] = field(default_factory=list)


def literal(text: str) -> Any:
    text = text.strip()
    if text.upper() == "NULL":
        return None
    if text.startswith("'"):
        return text[1:-1].replace("''", "'")
    return float(text) if "." in text else int(text)


def _split(text: str) -> list[str]:
    """Split on commas outside quotes and parentheses."""
    parts, depth, quoted, current = [], 0, False, ""
    for ch in text:
        if ch == "'":
            quoted = not quoted
        elif not quoted and ch == "(":
            depth += 1
        elif not quoted and ch == ")":
            depth -= 1
        elif not quoted and depth == 0 and ch == ",":
            parts.append(current.strip())
            current = ""
            continue
        current += ch
    if current.strip():
        parts.append(current.strip())
    return parts


def _date(text: Any) -> Any:
    return dt.datetime.strptime(text, TIME_FORMAT) if isinstance(text, str) else text


def _compare(left: Any, op: str, right: Any) -> bool:
    if left is None or right is None:
        return False
    if isinstance(left, dt.datetime) and isinstance(right, str):
        right = _date(right)
    try:
        return {"=": left == right, "!=": left != right, "<>": left != right, "<": left < right,
                "<=": left <= right, ">": left > right, ">=": left >= right}[op]
    except TypeError:
        return str(left) == str(right) if op == "=" else False


def where(clause: str | None) -> Any:
    if not clause:
        return lambda row: True
    conds = []
    for part in re.split(r"\s+AND\s+", clause.strip(), flags=re.IGNORECASE):
        match = re.fullmatch(rf"\s*([\w#$]+)\s*(=|!=|<>|<=|>=|<|>)\s*({VALUE})\s*", part, re.IGNORECASE)
        if not match:
            raise OraError(920, "invalid relational operator")
        conds.append((match.group(1).upper(), match.group(2), literal(match.group(3))))

    def test(row: dict[str, Any]) -> bool:
        for col, op, value in conds:
            if col not in row:
                raise OraError(904, f'"{col}": invalid identifier')
            if not _compare(row[col], op, value):
                return False
        return True
    return test


# -- v$ views ----------------------------------------------------------------------------------------


def _views(db: Database, status: str) -> dict[str, list[dict[str, Any]]]:
    ctl, inc, params = db.ctl, db.incarnation, db.params
    states = db.backup_states()
    spfile = db.tree.spfile()
    headers = {}
    for f in ctl["datafiles"]:
        try:
            headers[f["file"]] = db.read(f["ts"])[0]
        except OraError:
            headers[f["file"]] = {}
    return {
        "V$DATABASE": [{
            "DBID": ctl["dbid"], "NAME": ctl["name"], "DB_UNIQUE_NAME": ctl["db_unique_name"],
            "LOG_MODE": ctl["log_mode"], "OPEN_MODE": "READ WRITE" if status == "OPEN" else "MOUNTED",
            "CURRENT_SCN": db.scn, "RESETLOGS_CHANGE#": inc["resetlogs_change"],
            "RESETLOGS_TIME": _date(inc["resetlogs_time"]), "PLATFORM_NAME": "Linux x86 64-bit",
            "CONTROLFILE_TYPE": "BACKUP" if ctl.get("backup_controlfile") else "CURRENT",
            "CHECKPOINT_CHANGE#": min((h.get("checkpoint_change", 0) for h in headers.values()), default=0),
        }],
        "V$DATABASE_INCARNATION": [
            {"INCARNATION#": i.get("number", n), "RESETLOGS_CHANGE#": i["resetlogs_change"],
             "RESETLOGS_TIME": _date(i["resetlogs_time"]), "RESETLOGS_ID": i["resetlogs_id"],
             "STATUS": "CURRENT" if i is inc else "PARENT"}
            for n, i in enumerate([*ctl["prior_incarnations"], inc], 1)],
        "V$INSTANCE": [{"INSTANCE_NAME": ctl["name"], "HOST_NAME": "simhost", "VERSION": "19.0.0.0.0",
                        "STATUS": status, "THREAD#": 1, "DATABASE_STATUS": "ACTIVE"}],
        "V$DATAFILE": [{"FILE#": f["file"], "NAME": f["name"], "TS#": f["ts_number"],
                        "BYTES": Path(f["name"]).stat().st_size if Path(f["name"]).exists() else 0,
                        "STATUS": "SYSTEM" if f["ts"] == "SYSTEM" else "ONLINE", "ENABLED": "READ WRITE",
                        "CHECKPOINT_CHANGE#": headers[f["file"]].get("checkpoint_change"),
                        "CREATION_CHANGE#": f["creation_change"]} for f in ctl["datafiles"]],
        "V$DATAFILE_HEADER": [{"FILE#": f["file"], "NAME": f["name"], "FUZZY": "YES" if headers[f["file"]].get("fuzzy")
                               else "NO", "CHECKPOINT_CHANGE#": headers[f["file"]].get("checkpoint_change")}
                              for f in ctl["datafiles"]],
        "V$TABLESPACE": [{"TS#": f["ts_number"], "NAME": f["ts"]} for f in ctl["datafiles"]],
        "V$TEMPFILE": [],
        "V$CONTROLFILE": [{"NAME": str(p), "STATUS": None} for p in db.control_files],
        "V$LOG": [{"GROUP#": g["group"], "THREAD#": g["thread"], "SEQUENCE#": g["sequence"],
                   "MEMBERS": len(g["members"]),
                   "ARCHIVED": g["archived"], "STATUS": g["status"], "FIRST_CHANGE#": g["first_change"],
                   "FIRST_TIME": _date(g["first_time"]), "BYTES": 52428800} for g in ctl["logs"]],
        "V$LOGFILE": [{"GROUP#": g["group"], "MEMBER": m, "TYPE": "ONLINE"} for g in ctl["logs"] for m in g["members"]],
        "V$ARCHIVED_LOG": [{
            "RECID": a["recid"], "NAME": a["name"], "DEST_ID": a["dest_id"], "THREAD#": a["thread"],
            "SEQUENCE#": a["sequence"], "RESETLOGS_CHANGE#": a["resetlogs_change"], "RESETLOGS_ID": a["resetlogs_id"],
            "FIRST_CHANGE#": a["first_change"], "FIRST_TIME": _date(a["first_time"]),
            "NEXT_CHANGE#": a["next_change"], "NEXT_TIME": _date(a["next_time"]), "BLOCKS": a["blocks"],
            "BLOCK_SIZE": a["block_size"], "ARCHIVED": "YES", "DELETED": a["deleted"], "STANDBY_DEST": "NO",
            "STATUS": "A" if a["deleted"] == "NO" else "D"} for a in ctl["archived"]],
        "V$BACKUP": [{"FILE#": int(n), "STATUS": s["status"], "CHANGE#": s["change"], "TIME": _date(s["time"])}
                     for n, s in sorted(states.items(), key=lambda kv: int(kv[0]))],
        "V$PARAMETER": [{"NAME": k, "VALUE": ", ".join(v) if isinstance(v, list) else str(v)}
                        for k, v in sorted({**params, "spfile": str(spfile) if spfile else ""}.items())],
    }


def _select(db: Database, status: str, text: str) -> Result:
    match = re.fullmatch(r"SELECT\s+(.+?)\s+FROM\s+([\w$#.]+)(?:\s+WHERE\s+(.+?))?(?:\s+ORDER\s+BY\s+(.+))?",
                         text, re.IGNORECASE | re.DOTALL)
    if not match:
        raise OraError(900, "invalid SQL statement")
    cols_text, source, cond, order = match.groups()
    source = source.upper()
    if source == "DUAL":
        return _dual(db, cols_text)
    if source.startswith("V$"):
        views = _views(db, status)
        if source not in views:
            raise OraError(942, "table or view does not exist")
        rows = views[source]
        available = list(rows[0]) if rows else []
    else:
        if status != "OPEN":
            raise OraError(1219, "database or pluggable database not open: "
                                 "queries allowed on fixed tables or views only")
        system = db.read("SYSTEM")[1]["tables"]
        if source not in system:
            raise OraError(942, "table or view does not exist")
        available = [c[0] for c in system[source]["columns"]]
        data = db.read("USERS")[1].get(source, {})
        rows = [dict(zip(available, r["v"], strict=True)) for _, r in sorted(data.items(), key=lambda kv: int(kv[0]))]
    rows = [r for r in rows if where(cond)(r)]
    if order:
        for part in reversed(_split(order)):
            name, _, direction = part.partition(" ")
            key = name.upper()
            rows.sort(key=lambda r: (r.get(key) is None, r.get(key)),
                      reverse=direction.strip().upper() == "DESC")
    wanted = available if cols_text.strip() == "*" else [c.upper() for c in _split(cols_text)]
    for col in wanted:
        if col not in available and rows:
            raise OraError(904, f'"{col}": invalid identifier')
    return Result(wanted, [tuple(r.get(c) for c in wanted) for r in rows])


def _dual(db: Database, cols_text: str) -> Result:
    out, names = [], []
    now = db.tree.now()
    for col in _split(cols_text):
        key = re.sub(r"\s+", "", col.upper())
        if key == "SYSDATE":
            out.append(now)
        elif key == "TO_CHAR(SYSTIMESTAMP,'TZH:TZM')":
            offset = dt.datetime.now(db.tree.zone()).utcoffset() or dt.timedelta(0)
            minutes = int(offset.total_seconds() // 60)
            sign = "+" if minutes >= 0 else "-"
            out.append(f"{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}")
        elif re.fullmatch(VALUE, col.strip()):
            out.append(literal(col))
        else:
            raise OraError(904, f'"{col.upper()}": invalid identifier')
        names.append(col.upper())
    return Result(names, [tuple(out)])


# -- the workload ------------------------------------------------------------------------------------


def _dml(db: Database, text: str) -> Result:
    t = text.strip()
    system_h, system_b = db.read("SYSTEM")
    users_h, users_b = db.read("USERS")
    tables: dict[str, Any] = system_b.setdefault("tables", {})
    records: list[dict[str, Any]] = []
    scn = db.scn + 1
    now = db.tree.now_text()
    count = 0
    if m := re.fullmatch(r"CREATE\s+TABLE\s+(\w+)\s*\((.+)\)", t, re.IGNORECASE | re.DOTALL):
        name = m.group(1).upper()
        if name in tables:
            raise OraError(955, "name is already used by an existing object")
        columns = [[c.split()[0].upper(), " ".join(c.split()[1:]).upper()] for c in _split(m.group(2))]
        tables[name] = {"columns": columns, "next_rowid": 1}
        users_b.setdefault(name, {})
        records.append({"op": "create", "table": name, "columns": columns})
        message = "Table created."
    elif m := re.fullmatch(r"DROP\s+TABLE\s+(\w+)(?:\s+PURGE)?", t, re.IGNORECASE):
        name = m.group(1).upper()
        if name not in tables:
            raise OraError(942, "table or view does not exist")
        del tables[name]
        users_b.pop(name, None)
        records.append({"op": "drop", "table": name})
        message = "Table dropped."
    elif m := re.fullmatch(r"INSERT\s+INTO\s+(\w+)\s*(?:\(([^)]*)\))?\s*VALUES\s*\((.*)\)", t,
                           re.IGNORECASE | re.DOTALL):
        name = m.group(1).upper()
        info = _table(tables, name)
        names = [c[0] for c in info["columns"]]
        given = [c.upper() for c in _split(m.group(2))] if m.group(2) else names
        values = [literal(v) for v in _split(m.group(3))]
        if len(values) != len(given):
            raise OraError(913 if len(values) > len(given) else 947,
                           "too many values" if len(values) > len(given) else "not enough values")
        row = [values[given.index(c)] if c in given else None for c in names]
        rowid = info["next_rowid"]
        info["next_rowid"] = rowid + 1
        users_b.setdefault(name, {})[str(rowid)] = {"scn": scn, "v": row}
        records.append({"op": "put", "table": name, "rowid": rowid, "v": row})
        count, message = 1, "1 row created."
    elif m := re.fullmatch(r"UPDATE\s+(\w+)\s+SET\s+(.+?)(?:\s+WHERE\s+(.+))?", t, re.IGNORECASE | re.DOTALL):
        name = m.group(1).upper()
        info = _table(tables, name)
        names = [c[0] for c in info["columns"]]
        sets = []
        for part in _split(m.group(2)):
            col, _, expr = part.partition("=")
            sets.append((col.strip().upper(), expr.strip()))
        test = where(m.group(3))
        for rowid, stored in sorted(users_b.get(name, {}).items(), key=lambda kv: int(kv[0])):
            row = dict(zip(names, stored["v"], strict=True))
            if not test(row):
                continue
            new = dict(row)
            for col, expr in sets:
                new[col] = _expr(expr, row)
            stored.update(scn=scn, v=[new[c] for c in names])
            records.append({"op": "put", "table": name, "rowid": int(rowid), "v": stored["v"]})
            count += 1
        message = f"{count} row{'s' if count != 1 else ''} updated."
    elif m := re.fullmatch(r"DELETE\s+FROM\s+(\w+)(?:\s+WHERE\s+(.+))?", t, re.IGNORECASE | re.DOTALL):
        name = m.group(1).upper()
        info = _table(tables, name)
        names = [c[0] for c in info["columns"]]
        test = where(m.group(2))
        for rowid, stored in list(users_b.get(name, {}).items()):
            if test(dict(zip(names, stored["v"], strict=True))):
                del users_b[name][rowid]
                records.append({"op": "del", "table": name, "rowid": int(rowid)})
                count += 1
        message = f"{count} row{'s' if count != 1 else ''} deleted."
    else:
        raise OraError(900, "invalid SQL statement")
    if records:
        db.next_scn()
        for record in records:
            record.update(scn=scn, time=now)
        db.redo(records)
        db.write("SYSTEM", system_h, system_b)
        db.write("USERS", users_h, users_b)
    return Result(message=message, rows=[(count,)] if count else [])


def _table(tables: dict[str, Any], name: str) -> dict[str, Any]:
    if name not in tables:
        raise OraError(942, "table or view does not exist")
    info: dict[str, Any] = tables[name]
    return info


def _expr(expr: str, row: dict[str, Any]) -> Any:
    if re.fullmatch(VALUE, expr, re.IGNORECASE):
        return literal(expr)
    m = re.fullmatch(r"(\w+)\s*([+-])\s*(-?\d+(?:\.\d+)?)", expr)
    if m and m.group(1).upper() in row:
        base = row[m.group(1).upper()] or 0
        delta = literal(m.group(3))
        return base + delta if m.group(2) == "+" else base - delta
    raise OraError(904, f'"{expr.upper()}": invalid identifier')


# -- administration ----------------------------------------------------------------------------------


def _path(text: str) -> Path:
    return Path(literal(text))


def _write_new(path: Path, data: bytes, reuse: bool, what: str) -> None:
    if path.exists() and not reuse:
        raise OraError(1580, f"error creating control backup file {path}", "ORA-27038: created file already exists")
    if not path.parent.is_dir():
        raise OraError(1580 if what == "control" else 7391, f"error creating {what} file {path}",
                       "ORA-27040: file create error, unable to create file",
                       "Linux-x86_64 Error: 2: No such file or directory")
    write_atomic(path, data)


def trace_script(db: Database) -> str:
    files = ",\n  ".join(f"'{f['name']}'" for f in db.ctl["datafiles"])
    logs = ",\n  ".join(f"GROUP {g['group']} '{g['members'][0]}' SIZE 50M" for g in db.ctl["logs"])
    return (f"-- dbid {db.ctl['dbid']}\nSTARTUP NOMOUNT\nCREATE CONTROLFILE REUSE DATABASE \"{db.ctl['name']}\" "
            f"RESETLOGS {db.ctl['log_mode']}\nLOGFILE\n  {logs}\nDATAFILE\n  {files};\n")


def execute(tree: Tree, text: str, *, privileged: bool = True) -> Result:
    """Run one statement against the running instance of ``tree``."""
    t = text.strip().rstrip(";").strip()
    with tree.locked():
        inst = tree.instance()
        if inst is None:
            raise OraError(1034, "ORACLE not available", "ORA-27101: shared memory realm does not exist")
        db = running(tree)
        status = inst["status"]
        upper = re.sub(r"\s+", " ", t.upper())
        if upper.startswith("SELECT"):
            return _select(db, status, t)
        if upper in ("COMMIT", "ROLLBACK"):
            return Result(message="Commit complete.")
        if upper.startswith(("ALTER DATABASE", "ALTER SYSTEM", "CREATE PFILE")) and not privileged:
            raise OraError(1031, "insufficient privileges")
        result = _admin(db, inst, upper, t)
        if result is not None:
            db.save()
            tree.save_instance(inst)
            return result
        if status != "OPEN":
            raise OraError(1109, "database not open")
        result = _dml(db, t)
        db.save()
        return result


def _admin(db: Database, inst: dict[str, Any], upper: str, t: str) -> Result | None:
    status = inst["status"]
    if upper in ("ALTER SYSTEM ARCHIVE LOG CURRENT", "ALTER SYSTEM SWITCH LOGFILE"):
        if status != "OPEN":
            raise OraError(1109, "database not open")
        if upper.endswith("CURRENT") and db.ctl["log_mode"] != "ARCHIVELOG":
            raise OraError(258, "manual archiving in NOARCHIVELOG mode must identify log")
        db.switch_logfile()
        return Result(message="System altered.")
    if upper == "ALTER DATABASE BEGIN BACKUP":
        if status != "OPEN":
            raise OraError(1109, "database not open")
        db.begin_backup()
        return Result(message="Database altered.")
    if upper == "ALTER DATABASE END BACKUP":
        db.end_backup()
        return Result(message="Database altered.")
    if m := re.fullmatch(r"ALTER DATABASE BACKUP CONTROLFILE TO TRACE AS ('(?:[^']|'')*')( REUSE)?", t, re.I):
        _write_new(_path(m.group(1)), trace_script(db).encode(), bool(m.group(2)), "trace")
        return Result(message="Database altered.")
    if m := re.fullmatch(r"ALTER DATABASE BACKUP CONTROLFILE TO ('(?:[^']|'')*')( REUSE)?", t, re.I):
        copy = {**db.ctl, "backup_controlfile": True}
        _write_new(_path(m.group(1)), json.dumps(copy, indent=1, sort_keys=True).encode(), bool(m.group(2)), "control")
        return Result(message="Database altered.")
    if m := re.fullmatch(r"CREATE PFILE\s*=\s*('(?:[^']|'')*')\s+FROM (SPFILE|MEMORY)", t, re.I):
        if m.group(2).upper() == "MEMORY":
            _write_new(_path(m.group(1)), format_params(db.params).encode(), True, "pfile")
            return Result(message="File created.")
        spfile = db.tree.spfile()
        if spfile is None:
            raise OraError(1565, "error in identifying file '?/dbs/spfile@.ora'")
        _write_new(_path(m.group(1)), spfile.read_bytes(), True, "pfile")
        return Result(message="File created.")
    if m := re.fullmatch(r"ALTER SYSTEM SET (\w+)\s*=\s*('(?:[^']|'')*'|\S+)(?: SCOPE\s*=\s*\w+)?", t, re.I):
        key, value = m.group(1).lower(), literal(m.group(2)) if m.group(2).startswith("'") else m.group(2)
        if key.startswith("log_archive_dest_") and str(value).upper().startswith("LOCATION="):
            folder = Path(str(value)[len("LOCATION="):])
            if not folder.is_dir():
                raise OraError(2097, "parameter cannot be modified because specified value is invalid",
                               f"ORA-16032: parameter {key.upper()} destination string cannot be translated")
        db.params[key] = value
        inst["params"] = db.params
        spfile = db.tree.spfile()
        if spfile is not None:
            spfile.write_text(format_params(db.params))
        return Result(message="System altered.")
    if upper == "ALTER DATABASE ARCHIVELOG":
        if status == "OPEN":
            raise OraError(1126, "database must be mounted in this instance and not open in any instance")
        db.ctl["log_mode"] = "ARCHIVELOG"
        return Result(message="Database altered.")
    if upper == "ALTER DATABASE MOUNT":
        raise OraError(1100, "database already mounted")
    if upper in ("ALTER DATABASE OPEN", "ALTER DATABASE OPEN RESETLOGS", "ALTER DATABASE OPEN NORESETLOGS"):
        from tests.sim.oracle.db import file_error, open_resetlogs

        if status == "OPEN":
            raise OraError(1531, "a database already open by the instance")
        active = db.active_backups()
        if active:
            f = active[0]
            raise OraError(10873, f"file {f['file']} needs to be either taken out of backup mode or media recovered",
                           file_error(f["file"], f["name"]))
        if upper.endswith("RESETLOGS") and not upper.endswith("NORESETLOGS"):
            open_resetlogs(db)
        elif db.ctl.get("backup_controlfile") or "recovered_to" in db.ctl:
            raise OraError(1589, "must use RESETLOGS or NORESETLOGS option for database open")
        inst["status"] = "OPEN"
        return Result(message="Database altered.")
    if m := re.fullmatch(r"ALTER DATABASE RENAME FILE ('(?:[^']|'')*') TO ('(?:[^']|'')*')", t, re.I):
        old, new = str(_path(m.group(1))), str(_path(m.group(2)))
        if status == "OPEN":
            raise OraError(1511, "error in renaming log/data files")
        for f in db.ctl["datafiles"]:
            if f["name"] == old:
                f["name"] = new
                return Result(message="Database altered.")
        for g in db.ctl["logs"]:
            if old in g["members"]:
                g["members"] = [new if m_ == old else m_ for m_ in g["members"]]
                return Result(message="Database altered.")
        raise OraError(1511, "error in renaming log/data files", f"ORA-01516: nonexistent log file, data file, or "
                       f"temporary file \"{old}\"")
    if m := re.fullmatch(r"(?:ALTER DATABASE )?RECOVER( AUTOMATIC)?(?: FROM ('(?:[^']|'')*'))? DATABASE"
                         r"(?: UNTIL (TIME ('[^']*')|CHANGE (\d+)|CANCEL))?( USING BACKUP CONTROLFILE)?", t, re.I):
        if status != "MOUNTED":
            raise OraError(1126, "database must be mounted in this instance and not open in any instance")
        until_time = None
        if m.group(4):
            text = literal(m.group(4))
            try:
                until_time = dt.datetime.strptime(text, "%Y-%m-%d:%H:%M:%S").strftime(TIME_FORMAT)
            except ValueError:
                raise OraError(1841, "(full) year must be between -4713 and +9999, and not be 0") from None
        until_change = int(m.group(5)) if m.group(5) else None
        lines: list[str] = []
        recover(db, from_dir=str(_path(m.group(2))) if m.group(2) else None, until_time=until_time,
                until_change=until_change, say=lines.append)
        return Result(message="\n".join(lines))
    if upper.startswith(("ALTER", "CREATE PFILE")):
        raise OraError(900, "invalid SQL statement")
    return None


__all__ = ["Result", "archive_dests", "execute"]
