"""The fake Windows tools of the simulated server.  Each prints what the real tool's documentation shows
(trimmed to the lines the connector reads) and fails the way it documents; every call is appended to
``ROOT/calls.log`` so tests can check the exact command lines.

* ``powershell -NoProfile -NonInteractive -Command SCRIPT``: a script with ``Get-MailboxDatabase …
  -Status`` prints the databases as JSON (``ConvertTo-Json``); on an Exchange 2003 server the cmdlet
  does not exist (exit 1, "is not recognized").  ``New-MailboxDatabase -Recovery`` registers a
  recovery database; ``Mount-Database`` mounts it.
* ``diskshadow`` reads commands on stdin (see the package docstring).  ``create`` rolls the current log
  of every mounted database on the volume (the Exchange writer's freeze) and copies the volume; a
  writer in a failed state makes ``writer verify`` fail.  ``end backup`` is BackupComplete: the
  generations below each stream's checkpoint at ``create`` are deleted.  End of input without it: the
  backup is aborted and nothing is truncated.
* ``wbadmin start systemstatebackup -backupTarget:T -quiet`` writes ``T/WindowsImageBackup/SERVER/…``.
* ``eseutil /mh DB``, ``/ml LOG``, ``/r PREFIX /lLOGDIR /sSYSDIR /dDBDIR``: header dump, log check, soft
  recovery (replays the records into the database, then Clean Shutdown, Log Required 0-0); errors
  -528 (a generation or the current log missing), -530 (a log of another signature), -1206 (a
  damaged header).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import struct
import sys
import time
from pathlib import Path

from tests.sim.exchange.store import HEADER, WRITER, SimServer, checksum, page_bytes, seal, sig_text

BANNER = ("\nExtensible Storage Engine Utilities for Microsoft(R) Exchange Server\nVersion 15.01\n"
          "Copyright (C) Microsoft Corporation. All Rights Reserved.\n")


def _log_call(root: Path, argv: list[str]) -> None:
    with open(root / "calls.log", "a") as f:
        f.write(json.dumps(argv) + "\n")


def main(root: Path, tool: str, argv: list[str]) -> int:
    _log_call(root, [tool, *argv])
    return {"powershell": powershell, "diskshadow": diskshadow, "wbadmin": wbadmin, "eseutil": eseutil}[tool](
        root, argv)


# -- PowerShell ------------------------------------------------------------------------------------


def powershell(root: Path, argv: list[str]) -> int:
    if "-Command" not in argv:
        print("powershell (simulated): only -Command SCRIPT is supported", file=sys.stderr)
        return 1
    script = argv[argv.index("-Command") + 1]
    server = SimServer(root)
    if "Get-MailboxDatabase" in script:
        if server.state["era"] == "2003":
            print("Get-MailboxDatabase : The term 'Get-MailboxDatabase' is not recognized as the name of a cmdlet, "
                  "function, script file, or operable program.", file=sys.stderr)
            return 1
        if "-Status" not in script:
            print("simulated: the connector must ask for -Status (mount state)", file=sys.stderr)
            return 1
        volume = server.state["volume"]
        dbs = []
        for db in server.state["databases"]:
            if db.get("recovery"):
                continue
            s = server.state["streams"][db["stream"]]
            dbs.append({"Name": db["name"], "Guid": db["guid"], "EdbFilePath": db["edb"], "LogFolderPath": s["folder"],
                        "LogFilePrefix": s["prefix"], "Mounted": db["mounted"],
                        "CircularLoggingEnabled": s["circular"], "EdbVolume": volume, "LogVolume": volume})
        print(json.dumps({"Server": server.state["server"], "Version": server.state["version"], "Databases": dbs}))
        return 0
    if "New-MailboxDatabase" in script:
        name = re.search(r"-Name '([^']*)'", script)
        edb = re.search(r"-EdbFilePath '([^']*)'", script)
        logs = re.search(r"-LogFolderPath '([^']*)'", script)
        if not (name and edb and logs and "-Recovery" in script):
            print("simulated: New-MailboxDatabase needs -Recovery -Name -EdbFilePath -LogFolderPath", file=sys.stderr)
            return 1
        server.state["databases"].append({"name": name.group(1), "edb": edb.group(1), "logs": logs.group(1),
                                          "recovery": True, "mounted": False, "stream": -1})
        server.event(f"recovery-db {name.group(1)}")
        print(json.dumps({"Name": name.group(1), "Recovery": True}))
        return 0
    if "Mount-Database" in script:
        server.event("mount " + script.split("Mount-Database", 1)[1].strip().split()[0].strip("'"))
        return 0
    print("simulated PowerShell: unknown script", file=sys.stderr)
    return 1


# -- diskshadow ------------------------------------------------------------------------------------


def diskshadow(root: Path, argv: list[str]) -> int:
    print("Microsoft DiskShadow version 1.0 (simulated)\nDISKSHADOW>", flush=True)
    aliases: dict[str, str] = {}
    exposed: list[Path] = []
    shadows: list[Path] = []
    checkpoints: dict[int, int] = {}
    contents: dict[int, list[int]] = {}
    began = ended = False
    server = SimServer(root)
    for raw in sys.stdin:
        line = raw.strip()
        words = line.split()
        if not words:
            continue
        cmd = " ".join(words[:2]).lower()
        server = SimServer(root)
        if words[0].lower() == "exit":
            break
        if cmd in ("set verbose", "set context", "set option"):
            continue
        if cmd == "set metadata":
            Path(" ".join(words[2:]).strip('"')).write_bytes(b"MSCF simulated writer metadata")
            continue
        if cmd == "writer verify":
            if words[2].lower() != WRITER:
                print(f"Writer {words[2]} not found", flush=True)
                return 1
            if server.state["writer"] != "stable":
                print(f"The writer {WRITER} is in a failed state: Failed: Retryable error", flush=True)
                return 1
            continue
        if cmd == "begin backup":
            began = True
            continue
        if cmd == "add volume":
            volume = words[2].strip('"')
            alias = words[words.index("alias") + 1] if "alias" in words else f"VSS_SHADOW_{len(aliases) + 1}"
            aliases[alias] = volume
            continue
        if words[0].lower() == "create":
            if not began:
                print("begin backup must come first", flush=True)
                return 1
            for i, s in enumerate(server.state["streams"]):
                if not any(server.db(n)["mounted"] for n in s["databases"]):
                    continue
                server._roll(i)  # the writer's freeze closes the current log
                checkpoints[i] = s["checkpoint"]
                contents[i] = [*server.generations(s["databases"][0])]
            server.save()
            for alias, volume in aliases.items():
                target = root / "shadows" / f"{alias}-{time.monotonic_ns()}"
                target.parent.mkdir(exist_ok=True)
                shutil.copytree(volume, target, symlinks=True)
                shadows.append(target)
                aliases[alias] = str(target)
                print(f"-> %{alias}% = {{{target.name}}}", flush=True)
            server.event("shadow created")
            print("The shadow copy was successfully created.", flush=True)
            continue
        if words[0].lower() == "expose":
            alias = words[1].strip("%")
            where = Path(" ".join(words[2:]).strip('"'))
            if alias not in aliases:
                print(f"unknown alias {alias}", flush=True)
                return 1
            if where.exists():
                if any(where.iterdir()):
                    print(f"The mount point {where} is not empty.", flush=True)
                    return 1
                where.rmdir()
            where.symlink_to(aliases[alias], target_is_directory=True)
            exposed.append(where)
            print(f"The shadow copy was successfully exposed as {where}.", flush=True)
            continue
        if cmd == "end backup":
            ended = True
            server = SimServer(root)
            for i, low in checkpoints.items():  # BackupComplete: Exchange truncates below the checkpoint
                s = server.state["streams"][i]
                first = s["databases"][0]
                for gen in server.generations(first):
                    if gen < low and gen in contents[i]:
                        server.log_path(first, gen).unlink()
                for name in s["databases"]:
                    db = server.db(name)
                    if contents[i]:
                        db["last_full"] = [contents[i][-1], server.now().isoformat(), contents[i][0], contents[i][-1]]
                    server._write_edb(db)
                server.state["events"].append(f"truncated {s['prefix']} below {low:X}")
            server.state["events"].append("backup complete")
            server.save()
            continue
        if words[0].lower() == "unexpose":
            where = Path(" ".join(words[1:]).strip('"'))
            if where.is_symlink():
                where.unlink()
            continue
        if cmd == "delete shadows":
            for shadow in shadows:
                shutil.rmtree(shadow, ignore_errors=True)
            continue
        print(f"simulated diskshadow: unknown command {line!r}", flush=True)
        return 1
    for where in exposed:
        if where.is_symlink():
            where.unlink()
    for shadow in shadows:
        shutil.rmtree(shadow, ignore_errors=True)
    if began and not ended:
        server = SimServer(root)
        server.event("backup aborted")
    return 0


# -- wbadmin ---------------------------------------------------------------------------------------


def wbadmin(root: Path, argv: list[str]) -> int:
    if argv[:2] != ["start", "systemstatebackup"]:
        print("simulated wbadmin: only 'start systemstatebackup' is supported", file=sys.stderr)
        return 1
    target = next((a.split(":", 1)[1] for a in argv if a.lower().startswith("-backuptarget:")), None)
    if not target:
        print("ERROR - The backup target was not specified.", file=sys.stderr)
        return 1
    server = SimServer(root)
    folder = Path(target) / "WindowsImageBackup" / server.state["server"] / "SystemStateBackup"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "SystemState.vhdx").write_bytes(b"vhdx" + bytes(60000))
    (folder / "Catalog.xml").write_text("<catalog version='simulated'/>")
    print("Starting System State Backup ...\nThe backup operation successfully completed.")
    server.event("system state backup")
    return 0


# -- eseutil ---------------------------------------------------------------------------------------


STATES = {1: "Just Created", 2: "Dirty Shutdown", 3: "Clean Shutdown"}


def _fail(code: int, name: str, text: str) -> int:
    print(f"\nOperation terminated with error {code} ({name}, {text}) after 0.16 seconds.")
    return 1


def eseutil(root: Path, argv: list[str]) -> int:
    print(BANNER)
    mode = argv[0].lower() if argv else ""
    if mode == "/mh":
        return _dump_header(Path(argv[1]))
    if mode == "/ml":
        return _dump_log(Path(argv[1]))
    if mode == "/r":
        return _recover(root, argv[1], {a[1].lower(): Path(a[2:]) for a in argv[2:] if a[:1] == "/" and len(a) > 2})
    print("simulated eseutil: /mh, /ml and /r only")
    return 1


def _header(path: Path) -> bytes | None:
    with open(path, "rb") as f:
        raw = f.read(HEADER)
    if len(raw) < HEADER or struct.unpack_from("<I", raw, 0)[0] != checksum(raw):
        return None
    return raw


def _dump_header(path: Path) -> int:
    print(f"Initiating FILE DUMP mode...\n         Database: {path}\n")
    if not path.exists():
        return _fail(-1811, "JET_errFileNotFound", "File not found")
    raw = _header(path)
    if raw is None:
        return _fail(-1206, "JET_errDatabaseCorrupted", "Non database file or corrupted db")
    state = struct.unpack_from("<I", raw, 52)[0]
    low, high = struct.unpack_from("<II", raw, 296)
    print(f"DATABASE HEADER:\nChecksum Information:\nExpected Checksum: 0x{checksum(raw):08x}\n"
          f"  Actual Checksum: 0x{checksum(raw):08x}\n\nFields:\n        File Type: Database\n"
          f"   Format ulMagic: 0x89abcdef\n  DB Signature: {sig_text(raw[24:52])}\n"
          f"            State: {STATES.get(state, state)}\n     Log Required: {low}-{high} (0x{low:x}-0x{high:x})\n"
          f"    Log Signature: {sig_text(raw[104:132])}\n\nOperation completed successfully in 0.16 seconds.")
    return 0


def _dump_log(path: Path) -> int:
    raw = _header(path) if path.exists() else None
    if raw is None:
        return _fail(-1811 if not path.exists() else -541, "JET_errLogFileCorrupt", f"{path.name} is damaged")
    gen = struct.unpack_from("<i", raw, 4)[0]
    print(f"Initiating FILE DUMP mode...\n      Base name: {path.name[:3]}\n      Log file: {path}\n"
          f"      lGeneration: {gen} (0x{gen:X})\n      Signature: {sig_text(raw[44:72])}\n\n"
          f"Integrity check passed for log file: {path}\n\nOperation completed successfully in 0.1 seconds.")
    return 0


def _recover(root: Path, prefix: str, opts: dict[str, Path]) -> int:
    logs, dbdir = opts.get("l", Path(".")), opts.get("d", Path("."))
    prefix = prefix.upper()
    print("Initiating RECOVERY mode...\n    Logfile base name: " + prefix + f"\n            Log files: {logs}\n"
          f"         System files: {opts.get('s', logs)}\n   Database Directory: {dbdir}\n")
    names = {p.name.upper(): p for p in logs.iterdir()}
    current = names.get(f"{prefix}.LOG")
    if current is None:
        return _fail(-528, "JET_errMissingLogFile", "Current log file missing")
    numbered = {}
    for upper, path in names.items():
        m = re.match(rf"^{prefix}([0-9A-F]{{5}}|[0-9A-F]{{8}})\.LOG$", upper)
        if m:
            numbered[int(m.group(1), 16)] = path
    cur_raw = _header(current)
    if cur_raw is None:
        return _fail(-541, "JET_errLogFileCorrupt", "Log file is corrupt")
    cur_gen = struct.unpack_from("<i", cur_raw, 4)[0]
    edbs = [p for p in dbdir.iterdir() if p.suffix.lower() == ".edb"]
    for edb in edbs:
        raw = _header(edb)
        if raw is None:
            return _fail(-1206, "JET_errDatabaseCorrupted", "Non database file or corrupted db")
        state = struct.unpack_from("<I", raw, 52)[0]
        low, high = struct.unpack_from("<II", raw, 296)
        if state == 3:
            continue
        want_sig = raw[104:132]
        versions: dict[int, int] = {}
        for gen in range(low, cur_gen + 1):
            path = numbered.get(gen) if gen < cur_gen else current
            if path is None:
                return _fail(-528, "JET_errMissingLogFile", f"{prefix}{gen:08X}.log is missing")
            lraw = _header(path)
            if lraw is None:
                return _fail(-541, "JET_errLogFileCorrupt", f"{path.name} is damaged")
            if struct.unpack_from("<i", lraw, 4)[0] != gen:
                return _fail(-515, "JET_errInvalidLogSequence", f"{path.name} holds another generation")
            if lraw[44:72] != want_sig:
                return _fail(-530, "JET_errBadLogSignature", f"Bad signature for a log file: {path.name}")
            body = path.read_bytes()[HEADER:].rstrip(b"\0")
            for dbfile, page, version in json.loads(body or b"[]"):
                if dbfile.lower() == edb.name.lower():
                    versions[page] = max(versions.get(page, 0), version)
        if high > cur_gen:
            return _fail(-543, "JET_errRequiredLogFilesMissing", f"Log Required {low}-{high} not present")
        page_size = struct.unpack_from("<I", raw, 236)[0]
        name = _db_name(root, edb)
        with open(edb, "r+b") as f:
            for page, version in versions.items():
                f.seek((2 + page) * page_size)
                f.write(page_bytes(name, page, version, page_size))
            header = bytearray(raw + b"\0" * (page_size - HEADER))
            f.seek(0)
            header[:] = bytearray(f.read(page_size))
            struct.pack_into("<I", header, 52, 3)
            struct.pack_into("<II", header, 296, 0, 0)
            seal(header)
            f.seek(0)
            f.write(header)
            f.write(header)
    print("\nOperation completed successfully in 0.3 seconds.")
    return 0


def _db_name(root: Path, edb: Path) -> str:
    """The simulated database a file belongs to (its pages' filler is derived from the name)."""
    try:
        server = SimServer(root)
    except OSError:
        return edb.stem
    for db in server.state["databases"]:
        if Path(db["edb"]).name.lower() == edb.name.lower() and not db.get("recovery"):
            return str(db["name"])
    return edb.stem


def write_bin(root: Path) -> Path:
    """ROOT/bin with the four tools (names with and without .exe), the root baked in."""
    folder = root / "bin"
    folder.mkdir(exist_ok=True)
    repo = Path(__file__).resolve().parents[3]
    for tool in ("powershell", "diskshadow", "wbadmin", "eseutil"):
        script = (f"#!/bin/sh\nPYTHONPATH={repo}${{PYTHONPATH:+:$PYTHONPATH}} exec {sys.executable} "
                  f"-m tests.sim.exchange --root {root} tool {tool} \"$@\"\n")
        for name in (tool, f"{tool}.exe"):
            path = folder / name
            path.write_text(script)
            os.chmod(path, 0o755)
    return folder


__all__ = ["main", "write_bin"]
