"""Side-by-side benchmark of dtstore, restic and borg on a SQL dump (or another data set) and its next version.

Every step runs ``--runs`` times (default 3) and the best is kept, in interleaved rounds: each
round runs its step for every tool in turn (fixed order dtstore, restic, borg), so a slow spell of
the machine falls on all tools alike instead of on whichever ran during it.

1. backup rounds, each in a fresh repository under WORKDIR/repos/TOOL: init; first backup of v1
   at WORKDIR/src/dump.sql; second backup of v2 at the same path (new inode, size and mtime).
   Before each, bench.stages measures each stage of a first backup alone on one core (on v1); the
   least cost of each stage over the rounds makes the sum, and the bound is the sum over the
   cores, printed beside dtstore's CPU per GiB and wall time;
2. restore rounds: the latest snapshot of the last backup round to a fresh directory, compared
   with v2 (size and BLAKE3);
3. dump rounds: that file to /dev/null.

The KDF each repository's key was made with is reported: every command of every tool pays for it.
``--data sysbench|pages`` uses bench.compression's other data sets instead of the SQL dump.

Each command runs via Popen + os.wait4, so its own peak RSS (ru_maxrss) and CPU
time are measured.  Before every timed command the input is read once (page
cache warm for every tool alike) and os.sync() flushes earlier writes; after it,
os.sync() is timed separately ("flush").  Passwords and caches are set in the
child environment only; caches live in WORKDIR/cache/TOOL.

``--sizes 1G,10G`` instead runs only the first backup at each size (default
tool dtstore) and reports peak RSS per size.
"""

from __future__ import annotations

import argparse
import base64
import configparser
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import blake3
import msgpack

from bench import gen_dump
from bench.bytecode import compile_dtstore, installed_like
from bench.compression import dataset
from bench.stages import best_stages, measure_stage_round, stage_table

TOOL_ORDER = ("dtstore", "dtstore-z1", "restic", "borg")
DEFAULT_TOOLS = ("dtstore", "restic", "borg")
PASSWORD = "bench-password-not-secret"
SRC_NAME = "dump.sql"
V1_MTIME = 1709258400  # 2024-03-01 02:00 UTC: the "night" of v1; v2 is one day later
MB = 1e6


# --------------------------------------------------------------------------- measuring


@dataclass
class Measured:
    """One finished child process."""

    argv: list[str]
    returncode: int
    seconds: float
    flush_seconds: float
    max_rss_bytes: int
    user_seconds: float
    sys_seconds: float
    log: str
    loadavg: tuple[float, float] = (0.0, 0.0)  # 1-minute load average at start and end: other work on the machine?

    @property
    def ok(self) -> bool:
        return self.returncode == 0


# Peak RSS must come from a process forked by a *small* parent: Linux records the
# pre-exec address space's high-water mark in the child's ru_maxrss, so a child
# spawned directly by this harness would report at least the harness's own peak
# (e.g. after hashing a 1 GB file).  GNU time (~1 MB) or a bare Python helper
# (~5 MB) does the fork+exec+wait4 and reports the child's own rusage.
GNU_TIME = "/usr/bin/time"
_PY_HELPER = """
import json, os, sys
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write("%d %f %f\\n" % (ru.ru_maxrss, ru.ru_utime, ru.ru_stime))
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
"""


def _rusage_wrapper(argv: list[str], stats: Path) -> list[str]:
    if os.access(GNU_TIME, os.X_OK):
        return [GNU_TIME, "-f", "%M %U %S", "-o", str(stats), "--", *argv]
    return [sys.executable, "-I", "-S", "-c", _PY_HELPER, str(stats), *argv]


def _read_rusage(stats: Path) -> tuple[int, float, float]:
    """(max RSS bytes, user s, sys s) from the wrapper's last line; zeros if missing."""
    try:
        last = stats.read_text().strip().splitlines()[-1].split()
        return int(last[0]) * 1024, float(last[1]), float(last[2])
    except (OSError, IndexError, ValueError):
        return 0, 0.0, 0.0


def run_measured(argv: list[str], env: dict[str, str], log: Path, cwd: Path | None = None,
                 discard_stdout: bool = False) -> Measured:
    """Run argv to completion: wall time, the child's own rusage, then a timed os.sync().
    ``discard_stdout``: standard output goes to /dev/null (a ``dump``), not to the log."""
    os.sync()
    stats = log.with_suffix(".rusage")
    stats.unlink(missing_ok=True)
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        load0 = os.getloadavg()[0]
        t0 = time.perf_counter()
        proc = subprocess.Popen(
            _rusage_wrapper(argv, stats), env=env, cwd=cwd, stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL if discard_stdout else out, stderr=out
        )
        _, status, _usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
    t1 = time.perf_counter()
    os.sync()
    rss, user, sys_s = _read_rusage(stats)
    return Measured(
        argv=argv,
        returncode=proc.returncode,
        seconds=seconds,
        flush_seconds=time.perf_counter() - t1,
        max_rss_bytes=rss,
        user_seconds=user,
        sys_seconds=sys_s,
        log=str(log),
        loadavg=(load0, os.getloadavg()[0]),
    )


def rss_floor(work: Path) -> int:
    """Peak RSS reported for /bin/true: the measurement's floor."""
    (work / "logs").mkdir(parents=True, exist_ok=True)
    return run_measured(["true"], dict(os.environ), work / "logs" / "floor.log").max_rss_bytes


def tree_bytes(path: Path) -> int:
    """Apparent size of all regular files under path."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            total += st.st_size
    return total


def file_hash(path: Path) -> str:
    return str(blake3.blake3(max_threads=blake3.blake3.AUTO).update_mmap(path).hexdigest())


def warm(path: Path) -> None:
    """Read a file once so every tool starts with its input in the page cache."""
    with open(path, "rb", buffering=0) as f:
        while f.read(8 << 20):
            pass


def log_tail(log: str, lines: int = 15) -> str:
    try:
        return "\n".join(Path(log).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def capture(argv: list[str], env: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60, check=False)
    except (OSError, subprocess.TimeoutExpired) as e:
        return 127, str(e)
    return done.returncode, (done.stdout + done.stderr).strip()


# --------------------------------------------------------------------------- tools


@dataclass
class Workspace:
    """Per-tool paths inside the work directory."""

    root: Path
    tool: str

    @property
    def repo(self) -> Path:
        return self.root / "repos" / self.tool

    @property
    def cache(self) -> Path:
        return self.root / "cache" / self.tool

    @property
    def restore(self) -> Path:
        return self.root / "restore" / self.tool

    def log(self, step: str) -> Path:
        return self.root / "logs" / f"{self.tool}-{step}.log"

    def fresh(self, logs: bool = True) -> None:
        """No repository, cache or restore; with ``logs`` the step logs are emptied too (a later
        round appends to them)."""
        for d in (self.repo, self.cache, self.restore):
            shutil.rmtree(d, ignore_errors=True)
        self.repo.parent.mkdir(parents=True, exist_ok=True)
        self.cache.mkdir(parents=True, exist_ok=True)
        (self.root / "logs").mkdir(parents=True, exist_ok=True)
        for step in ("init", "backup1", "backup2", "restore", "dump") if logs else ():
            self.log(step).unlink(missing_ok=True)


def base_env(ws: Workspace) -> dict[str, str]:
    """The parent environment without any tool configuration, plus hermetic cache dirs."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "BORG_", "DTSTORE_"))}
    env["XDG_CACHE_HOME"] = str(ws.cache / "xdg-cache")
    env["XDG_CONFIG_HOME"] = str(ws.cache / "xdg-config")
    return env


class Tool(ABC):
    name: str

    @abstractmethod
    def version(self, ws: Workspace) -> str | None:
        """Version string, or None when the tool cannot run here."""

    @abstractmethod
    def env(self, ws: Workspace) -> dict[str, str]: ...

    @abstractmethod
    def init(self, ws: Workspace) -> list[str]: ...

    @abstractmethod
    def backup(self, ws: Workspace, path: Path, name: str) -> list[str]: ...

    @abstractmethod
    def restore(self, ws: Workspace, name: str) -> tuple[list[str], Path | None]:
        """argv and the cwd to run it in."""

    @abstractmethod
    def dump(self, ws: Workspace, name: str, path: Path) -> list[str]:
        """argv writing the stored file ``path`` of the latest snapshot to standard output."""

    def kdf(self, ws: Workspace) -> str | None:
        """The password KDF the repository's key was made with (every command pays for it)."""
        return json_key_kdf(ws.repo / "keys")


def json_key_kdf(keys: Path) -> str | None:
    """scrypt's parameters from a JSON key file (dtstore's and restic's) in ``keys``."""
    for path in sorted(keys.glob("*")) if keys.is_dir() else []:
        try:
            doc = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        params = doc.get("kdf") if isinstance(doc.get("kdf"), dict) else doc
        n, r, p = (params.get(k, params.get(k.upper())) for k in ("n", "r", "p"))
        if isinstance(n, int) and n > 0:
            return f"scrypt N=2^{n.bit_length() - 1} r={r} p={p}"
    return None


class Restic(Tool):
    name = "restic"

    def version(self, ws: Workspace) -> str | None:
        if not shutil.which("restic"):
            return None
        rc, out = capture(["restic", "version"])
        return out.splitlines()[0] if rc == 0 and out else None

    def env(self, ws: Workspace) -> dict[str, str]:
        env = base_env(ws)
        env.update(RESTIC_PASSWORD=PASSWORD, RESTIC_REPOSITORY=str(ws.repo), RESTIC_CACHE_DIR=str(ws.cache / "restic"))
        return env

    def init(self, ws: Workspace) -> list[str]:
        return ["restic", "init", "--repository-version", "2"]

    def backup(self, ws: Workspace, path: Path, name: str) -> list[str]:
        # default compression (auto = zstd fastest); fixed host so the parent snapshot is found
        return ["restic", "backup", "--host", "bench", "--tag", name, str(path)]

    def restore(self, ws: Workspace, name: str) -> tuple[list[str], Path | None]:
        return ["restic", "restore", "latest", "--target", str(ws.restore)], None

    def dump(self, ws: Workspace, name: str, path: Path) -> list[str]:
        return ["restic", "dump", "latest", str(path)]


class Borg(Tool):
    name = "borg"

    def __init__(self, encryption: str = "repokey", compression: str = "zstd,3") -> None:
        self.encryption = encryption
        self.compression = compression
        self.major = 1
        self.repo_create = "rcreate"

    def version(self, ws: Workspace) -> str | None:
        if not shutil.which("borg"):
            return None
        rc, out = capture(["borg", "--version"])
        m = re.search(r"(\d+)\.(\d+)", out)
        if rc != 0 or not m:
            return None
        self.major = int(m.group(1))
        if self.major >= 2:
            rc, _ = capture(["borg", "repo-create", "--help"])
            self.repo_create = "repo-create" if rc == 0 else "rcreate"
        return out

    def env(self, ws: Workspace) -> dict[str, str]:
        env = base_env(ws)
        b = ws.cache / "borg"
        env.update(
            BORG_PASSPHRASE=PASSWORD,
            BORG_BASE_DIR=str(b),
            BORG_CACHE_DIR=str(b / "cache"),
            BORG_CONFIG_DIR=str(b / "config"),
            BORG_SECURITY_DIR=str(b / "security"),
            BORG_KEYS_DIR=str(b / "keys"),
            BORG_UNKNOWN_UNENCRYPTED_REPO_ACCESS_IS_OK="yes",
            BORG_RELOCATED_REPO_ACCESS_IS_OK="yes",
            BORG_REPO=str(ws.repo),
        )
        return env

    def init(self, ws: Workspace) -> list[str]:
        if self.major >= 2:  # borg 2: `borg -r REPO repo-create` (rcreate in early betas), new key modes
            enc = "repokey-aes-ocb" if self.encryption == "repokey" else self.encryption
            return ["borg", "-r", str(ws.repo), self.repo_create, f"--encryption={enc}"]
        return ["borg", "init", f"--encryption={self.encryption}", str(ws.repo)]

    def backup(self, ws: Workspace, path: Path, name: str) -> list[str]:
        if self.major >= 2:
            return ["borg", "-r", str(ws.repo), "create", "--compression", self.compression, name, str(path)]
        return ["borg", "create", "--compression", self.compression, f"{ws.repo}::{name}", str(path)]

    def restore(self, ws: Workspace, name: str) -> tuple[list[str], Path | None]:
        if self.major >= 2:
            return ["borg", "-r", str(ws.repo), "extract", name], ws.restore
        return ["borg", "extract", f"{ws.repo}::{name}"], ws.restore

    def dump(self, ws: Workspace, name: str, path: Path) -> list[str]:
        if self.major >= 2:
            return ["borg", "-r", str(ws.repo), "extract", "--stdout", name, str(path).lstrip("/")]
        return ["borg", "extract", "--stdout", f"{ws.repo}::{name}", str(path).lstrip("/")]

    def kdf(self, ws: Workspace) -> str | None:
        """A repokey's KDF, from the key in the repository's config (borg 1: msgpack, base64)."""
        config = configparser.ConfigParser()
        try:
            config.read(ws.repo / "config")
            key = msgpack.unpackb(base64.b64decode(config["repository"]["key"]), raw=True)
        except (KeyError, ValueError, configparser.Error, msgpack.ExtraData):
            return None
        algorithm = key.get(b"algorithm", b"?").decode(errors="replace")
        if algorithm == "sha256":
            return f"PBKDF2-SHA256 {key.get(b'iterations')} iterations"
        return algorithm


class Dtstore(Tool):
    name = "dtstore"

    def __init__(self, command: str | None = None, compression_level: int | None = None) -> None:
        self.command = command or self._find()
        self.level_args = [] if compression_level is None else ["--compression-level", str(compression_level)]
        if compression_level is not None:
            self.name = f"dtstore-z{compression_level}"

    @staticmethod
    def _find() -> str:
        # prefer the entry point next to this interpreter: a pyenv shim would add its own processes
        sibling = Path(sys.executable).with_name("dtstore")
        return str(sibling) if sibling.exists() else (shutil.which("dtstore") or "dtstore")

    def version(self, ws: Workspace) -> str | None:
        rc, out = capture([self.command, "--help"], self.env(ws))
        if rc != 0:
            return None
        compile_dtstore(self.env(ws))
        rc, out = capture([self.command, "--version"], self.env(ws))
        return out.splitlines()[0] if rc == 0 and out else "dtstore (version unknown)"

    def env(self, ws: Workspace) -> dict[str, str]:
        env = installed_like(base_env(ws), ws.root)
        env.update(DTSTORE_PASSWORD=PASSWORD, DTSTORE_CACHE_DIR=str(ws.cache / "dtstore"))
        return env

    def init(self, ws: Workspace) -> list[str]:
        return [self.command, "init", "--repo", str(ws.repo), *self.level_args]

    def backup(self, ws: Workspace, path: Path, name: str) -> list[str]:
        return [self.command, "snapshot", "--repo", str(ws.repo), str(path)]

    def restore(self, ws: Workspace, name: str) -> tuple[list[str], Path | None]:
        return [self.command, "restore", "latest", "--target", str(ws.restore), "--repo", str(ws.repo)], None

    def dump(self, ws: Workspace, name: str, path: Path) -> list[str]:
        return [self.command, "dump", "latest", str(path), "--repo", str(ws.repo)]


# --------------------------------------------------------------------------- data


@dataclass
class Dump:
    path: Path
    bytes: int
    blake3: str
    info: dict[str, Any]


DATA_TITLES = {"dump": "SQL dump", "sysbench": "sysbench-like rows", "pages": "binary database pages"}
EDIT_CLUSTERS = 20


def other_v1(work: Path, data: str, size: int, seed: int) -> Dump:
    """bench.compression's data set as v1 (written once; its meta file records size and hash)."""
    (work / "data").mkdir(parents=True, exist_ok=True)
    path = dataset(work / "data", data, size, seed)
    return _cached(path, lambda: {"set": data, "seed": seed})


def other_v2(work: Path, data: str, size: int, seed: int) -> Dump:
    """v1 with 1 % of its bytes rewritten in 20 clusters and 2 % appended, both copied from other
    places of v1 (so they compress like the rest; pages stay whole pages)."""
    v1 = other_v1(work, data, size, seed)
    path = v1.path.with_name(v1.path.stem + "-v2.data")

    def make() -> dict[str, Any]:
        import random

        rng = random.Random(seed + 1)
        body = bytearray(v1.path.read_bytes())
        grain = 8192 if data == "pages" else 1
        cluster = max(grain, len(body) // 100 // EDIT_CLUSTERS // grain * grain)
        for _ in range(EDIT_CLUSTERS):
            at = rng.randrange(0, len(body) - cluster) // grain * grain
            src = rng.randrange(0, len(body) - cluster) // grain * grain
            body[at : at + cluster] = body[src : src + cluster]
        tail = len(body) // 50 // grain * grain
        start = rng.randrange(0, len(body) - tail) // grain * grain
        body += body[start : start + tail]
        path.write_bytes(body)
        return {"set": data, "edited_from": v1.path.name, "seed": seed + 1}

    return _cached(path, make)


def _meta_path(path: Path) -> Path:
    return path.with_name(path.name + ".meta.json")


def _cached(path: Path, make: Callable[[], dict[str, Any]]) -> Dump:
    """Generate path (via make) unless it and its meta file exist; meta is written last."""
    meta = _meta_path(path)
    if path.exists() and meta.exists():
        info = json.loads(meta.read_text())
        if info.get("bytes") == path.stat().st_size:
            return Dump(path, info["bytes"], info["blake3"], info)
    meta.unlink(missing_ok=True)
    print(f"generating {path.name} ...", file=sys.stderr, flush=True)
    info = make()
    info["blake3"] = file_hash(path)
    info["bytes"] = path.stat().st_size
    meta.write_text(json.dumps(info, indent=2))
    return Dump(path, info["bytes"], info["blake3"], info)


def _gen(args: list[str]) -> dict[str, Any]:
    """Run the generator in a child process (keeps its pools out of the harness)."""
    root = Path(__file__).resolve().parents[1]
    argv = [sys.executable, "-m", "bench.gen_dump", *args]
    out = subprocess.run(argv, capture_output=True, text=True, check=False, cwd=root)
    if out.returncode != 0:
        raise SystemExit(f"generator failed ({out.returncode}): {' '.join(argv)}\n{out.stderr}")
    info: dict[str, Any] = json.loads(out.stdout)
    return info


def _tag(size: int, seed: int) -> str:
    return f"{gen_dump.format_size(size)}-s{seed}-g{gen_dump.GEN_VERSION}"


def dump_v1(work: Path, size: int, seed: int) -> Dump:
    path = work / "data" / f"dump-v1-{_tag(size, seed)}.sql"
    path.parent.mkdir(parents=True, exist_ok=True)
    return _cached(path, lambda: _gen([str(path), "--size", str(size), "--seed", str(seed), "--stats"]))


def dump_v2(work: Path, size: int, seed: int) -> Dump:
    """The next-night version of dump_v1(work, size, seed): edit seed is seed + 1."""
    v1 = dump_v1(work, size, seed)
    path = work / "data" / f"dump-v2-{_tag(size, seed)}.sql"
    return _cached(path, lambda: _gen([str(path), "--edit-from", str(v1.path), "--seed", str(seed + 1)]))


def place(dump: Dump, src: Path, mtime: int) -> None:
    """Make src the given dump: a new hard link (new inode, size) with a fixed mtime."""
    src.parent.mkdir(parents=True, exist_ok=True)
    src.unlink(missing_ok=True)
    try:
        os.link(dump.path, src)
    except OSError:
        shutil.copyfile(dump.path, src)
    os.utime(src, (mtime, mtime))


def find_restored(root: Path) -> Path | None:
    hits = [Path(r) / SRC_NAME for r, _d, files in os.walk(root) if SRC_NAME in files]
    return hits[0] if len(hits) == 1 else None


# --------------------------------------------------------------------------- one tool


@dataclass
class ToolResult:
    tool: str
    version: str | None = None
    available: bool = True
    error: str | None = None
    steps: dict[str, Measured] = field(default_factory=dict)
    stored_bytes: int | None = None
    added_bytes: int | None = None
    cache_bytes: int | None = None
    verified: bool | None = None
    input_bytes: dict[str, int] = field(default_factory=dict)
    kdf: str | None = None
    """the password KDF of the last round's repository"""
    history: dict[str, list[Measured]] = field(default_factory=dict)
    """every run of each step, in round order (``steps`` keeps the best)"""

    def step(self, name: str) -> Measured | None:
        return self.steps.get(name)


class StepFailed(Exception):
    pass


def _step(
    res: ToolResult, name: str, argv: list[str], env: dict[str, str], ws: Workspace, cwd: Path | None = None,
    discard_stdout: bool = False,
) -> Measured:
    m = run_measured(argv, env, ws.log(name), cwd, discard_stdout)
    res.steps[name] = m
    res.history.setdefault(name, []).append(m)
    if not m.ok:
        raise StepFailed(f"{name} exited {m.returncode}; log {m.log}:\n{log_tail(m.log)}")
    return m


def _verify(res: ToolResult, ws: Workspace, v2: Dump) -> None:
    got = find_restored(ws.restore)
    if got is None:
        raise StepFailed(f"restore: no single {SRC_NAME} under {ws.restore}")
    size, digest = got.stat().st_size, file_hash(got)
    res.verified = size == v2.bytes and digest == v2.blake3
    if not res.verified:
        raise StepFailed(f"RESTORE MISMATCH: {got} has {size} bytes blake3 {digest}, v2 has {v2.bytes} {v2.blake3}")


@dataclass
class ToolRun:
    """One tool's workspace, environment and results across the rounds of a run."""

    tool: Tool
    ws: Workspace
    env: dict[str, str]
    res: ToolResult

    def attempt(self, work: Callable[[], None]) -> None:
        """Run one round's steps, unless an earlier one failed; a failure ends this tool's run."""
        if self.res.error:
            return
        try:
            work()
        except StepFailed as e:
            self.res.error = str(e)
            print(f"!!! {self.tool.name}: {e}", file=sys.stderr, flush=True)


def start_tool(tool: Tool, work: Path) -> ToolRun:
    ws = Workspace(work, tool.name)
    ws.fresh()
    res = ToolResult(tool.name, version=tool.version(ws))
    if res.version is None:
        res.available, res.error = False, "not available"
    return ToolRun(tool, ws, tool.env(ws), res)


def backup_round(run: ToolRun, v1: Dump, v2: Dump | None, src: Path) -> None:
    """A fresh repository: init, back up v1, then v2 on top; each step's best so far is kept."""
    tool, ws, env, res = run.tool, run.ws, run.env, run.res
    ws.fresh(logs=False)
    _best_step(res, "init", tool.init(ws), env, ws)
    place(v1, src, V1_MTIME)
    warm(src)
    _best_step(res, "backup1", tool.backup(ws, src, "v1"), env, ws)
    res.stored_bytes, res.input_bytes["backup1"] = tree_bytes(ws.repo), v1.bytes
    res.kdf = tool.kdf(ws)
    if v2 is None:
        return
    place(v2, src, V1_MTIME + 86400)
    warm(src)
    _best_step(res, "backup2", tool.backup(ws, src, "v2"), env, ws)
    res.added_bytes = tree_bytes(ws.repo) - res.stored_bytes
    res.input_bytes["backup2"] = res.input_bytes["restore"] = res.input_bytes["dump"] = v2.bytes


def restore_round(run: ToolRun, v2: Dump) -> None:
    shutil.rmtree(run.ws.restore, ignore_errors=True)
    run.ws.restore.mkdir(parents=True)
    argv, cwd = run.tool.restore(run.ws, "v2")
    _best_step(run.res, "restore", argv, run.env, run.ws, cwd)
    _verify(run.res, run.ws, v2)
    shutil.rmtree(run.ws.restore, ignore_errors=True)


def dump_round(run: ToolRun, src: Path) -> None:
    _best_step(run.res, "dump", run.tool.dump(run.ws, "v2", src), run.env, run.ws, discard_stdout=True)


def bench_tools(tools: list[Tool], work: Path, v1: Dump, v2: Dump | None, runs: int = 3,
                before_round: Callable[[int], None] | None = None) -> list[ToolResult]:
    """Every step ``runs`` times, the best kept, in rounds: a round runs its step for each tool in
    turn, so a slow spell of the machine falls on every tool alike instead of on whichever ran then.
    A backup round starts from a fresh repository (init, v1, then v2); the restores and dumps read
    the last round's.  ``before_round(r)`` runs before backup round ``r`` (the stage costs)."""
    src = work / "src" / SRC_NAME
    started = [start_tool(tool, work) for tool in tools]
    live = [run for run in started if run.res.available]
    try:
        for number in range(runs):
            if before_round is not None:
                before_round(number)
            print(f"--- backup round {number + 1} of {runs}", file=sys.stderr, flush=True)
            for run in live:
                run.attempt(lambda r=run: backup_round(r, v1, v2, src))  # type: ignore[misc]
        if v2 is not None:
            for _ in range(runs):
                for run in live:
                    run.attempt(lambda r=run: restore_round(r, v2))  # type: ignore[misc]
            for _ in range(runs):
                for run in live:
                    run.attempt(lambda r=run: dump_round(r, src))  # type: ignore[misc]
    finally:
        for run in live:
            run.res.cache_bytes = tree_bytes(run.ws.cache)
            shutil.rmtree(run.ws.restore, ignore_errors=True)
    return [run.res for run in started]


def _best_step(res: ToolResult, name: str, argv: list[str], env: dict[str, str], ws: Workspace,
               cwd: Path | None = None, discard_stdout: bool = False) -> None:
    """Run a step once more; keep the fastest run (each run's time is in the log's rusage)."""
    best = res.steps.get(name)
    _step(res, name, argv, env, ws, cwd, discard_stdout)
    if best is not None and best.seconds < res.steps[name].seconds:
        res.steps[name] = best


# --------------------------------------------------------------------------- reporting


def _mb(n: float | None) -> str:
    return "-" if n is None else f"{n / MB:,.1f}"


def _rate(res: ToolResult, step: str) -> float | None:
    m = res.step(step)
    return res.input_bytes[step] / m.seconds if m and m.ok and step in res.input_bytes else None


def _secs(res: ToolResult, step: str) -> str:
    m = res.step(step)
    return f"{m.seconds:.1f}" if m and m.ok else "-"


def _rss(res: ToolResult, step: str) -> str:
    m = res.step(step)
    return _mb(m.max_rss_bytes) if m else "-"


def backup_rss(r: ToolResult) -> int | None:
    """Peak RSS over both backups."""
    return max((r.steps[s].max_rss_bytes for s in ("backup1", "backup2") if s in r.steps), default=None)


def main_table(results: list[ToolResult]) -> str:
    head = [
        "tool",
        "1st backup MB/s",
        "stored MB",
        "2nd backup s",
        "2nd added MB",
        "restore MB/s",
        "dump MB/s",
        "peak RSS backup MB",
        "peak RSS restore MB",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        if not r.available:
            lines.append(f"| {r.tool} | not available |" + " |" * (len(head) - 2))
            continue
        rss_b = backup_rss(r)
        cells = [
            r.tool + (" (FAILED)" if r.error else ""),
            _mb(_rate(r, "backup1")),
            _mb(r.stored_bytes),
            _secs(r, "backup2"),
            _mb(r.added_bytes),
            _mb(_rate(r, "restore")),
            _mb(_rate(r, "dump")),
            _mb(rss_b),
            _rss(r, "restore"),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def detail_table(results: list[ToolResult]) -> str:
    head = ["tool", "step", "wall s", "CPU s (user+sys)", "flush s", "peak RSS MB", "load before/after", "exit"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in results:
        for name, m in r.steps.items():
            cpu = m.user_seconds + m.sys_seconds
            load = f"{m.loadavg[0]:.1f}/{m.loadavg[1]:.1f}"
            row = [r.tool, name, f"{m.seconds:.2f}", f"{cpu:.1f}", f"{m.flush_seconds:.2f}", _mb(m.max_rss_bytes), load]
            lines.append("| " + " | ".join([*row, str(m.returncode)]) + " |")
    return "\n".join(lines)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a and b else None


def ratios(subject: ToolResult, base: ToolResult) -> dict[str, float | None]:
    """subject vs base: speedups are base time / subject time; sizes and RSS are subject / base."""

    def t(r: ToolResult, s: str) -> float | None:
        m = r.step(s)
        return m.seconds if m and m.ok else None

    def rss(r: ToolResult, s: str) -> float | None:
        m = r.step(s)
        return float(m.max_rss_bytes) if m and m.ok else None

    b_rss, s_rss = backup_rss(base), backup_rss(subject)
    return {
        "first_backup_speedup": _ratio(t(base, "backup1"), t(subject, "backup1")),
        "stored_bytes_ratio": _ratio(subject.stored_bytes, base.stored_bytes),
        "second_added_bytes_ratio": _ratio(subject.added_bytes, base.added_bytes),
        "second_backup_speedup": _ratio(t(base, "backup2"), t(subject, "backup2")),
        "restore_speedup": _ratio(t(base, "restore"), t(subject, "restore")),
        "dump_speedup": _ratio(t(base, "dump"), t(subject, "dump")),
        "backup_rss_ratio": _ratio(s_rss, b_rss),
        "restore_rss_ratio": _ratio(rss(subject, "restore"), rss(base, "restore")),
    }


def ratio_table(subject: str, table: dict[str, dict[str, float | None]]) -> str:
    if not table:
        return f"(no ratios: {subject} or its baselines not measured)"
    keys = list(next(iter(table.values())))
    lines = [
        f"| {subject} vs | " + " | ".join(k.replace("_", " ") for k in keys) + " |",
        "|" + "---|" * (len(keys) + 1),
    ]
    for base, vals in table.items():
        lines.append(f"| {base} | " + " | ".join("-" if vals[k] is None else f"{vals[k]:.2f}" for k in keys) + " |")
    return "\n".join(lines)


def all_ratios(results: list[ToolResult], subject: str) -> dict[str, dict[str, float | None]]:
    by = {r.tool: r for r in results if r.available and r.steps}
    if subject not in by:
        return {}
    return {name: ratios(by[subject], r) for name, r in by.items() if name != subject}


def result_json(r: ToolResult) -> dict[str, Any]:
    d = asdict(r)
    d["steps"] = {k: asdict(m) for k, m in r.steps.items()}
    d["history"] = {k: [asdict(m) for m in ms] for k, ms in r.history.items()}
    d["first_backup_mb_per_s"] = (_rate(r, "backup1") or 0) / MB or None
    d["restore_mb_per_s"] = (_rate(r, "restore") or 0) / MB or None
    return d


def machine_info() -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "mem_bytes": os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"),
        "date": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


# --------------------------------------------------------------------------- modes


def bound_table(costs: dict[str, Any], dtstore: ToolResult | None,
                rounds: Sequence[dict[str, Any]] = ()) -> str:
    """The stages alone (bench.stages) beside dtstore's first backup: CPU per GiB against their sum,
    wall time against the bound (sum / cores).  Issue 18 §1: CPU ≤ 1.25 × sum, bound ≥ 85 % of wall.

    "best" puts each stage's least cost over the rounds beside the fastest backup, which can come
    from different minutes; with ``rounds`` (one ``measure_stage_round`` per backup round, run just
    before dtstore's backup of that round) each round's own stages are beside that round's backup
    too, so that a machine whose speed drifts between rounds is compared with itself."""
    lines = [stage_table(costs)]
    m = dtstore.step("backup1") if dtstore is not None else None
    if dtstore is None or m is None or not m.ok:
        return lines[0]
    lines += ["", "| dtstore first backup, per GiB | CPU s | CPU / stage sum | wall s | bound s | bound / wall |",
              "|---|---|---|---|---|---|", _bound_row("best", costs, m)]
    backups = dtstore.history.get("backup1", [])
    if rounds and len(rounds) == len(backups):
        paired = [(_bound_row(f"round {n}", stages, run), _bound_ratio(stages, run))
                  for n, (stages, run) in enumerate(zip(rounds, backups, strict=True), 1) if run.ok]
        lines += [row for row, _ in paired]
        ratios = sorted(ratio for _, ratio in paired)
        if ratios:
            lines.append(f"| median of the rounds | | | | | {ratios[len(ratios) // 2]:.0%} |")
    return "\n".join(lines)


def _bound_ratio(costs: dict[str, Any], m: Measured) -> float:
    return float(costs["bound_s_per_gib"]) / (m.seconds / (costs["bytes"] / (1 << 30)))


def _bound_row(label: str, costs: dict[str, Any], m: Measured) -> str:
    gib = costs["bytes"] / (1 << 30)
    cpu, wall = (m.user_seconds + m.sys_seconds) / gib, m.seconds / gib
    return (f"| {label} | {cpu:.2f} | {cpu / costs['sum_s_per_gib']:.2f} | {wall:.2f} | "
            f"{costs['bound_s_per_gib']:.2f} | {_bound_ratio(costs, m):.0%} |")


def make_tools(names: list[str], args: argparse.Namespace) -> list[Tool]:
    known: dict[str, Callable[[], Tool]] = {
        "dtstore": lambda: Dtstore(args.dtstore_cmd),
        "dtstore-z1": lambda: Dtstore(args.dtstore_cmd, compression_level=1),
        "restic": Restic,
        "borg": lambda: Borg(args.borg_encryption),
    }
    unknown = set(names) - set(known)
    if unknown:
        raise SystemExit(f"unknown tools: {', '.join(sorted(unknown))}")
    return [known[n]() for n in TOOL_ORDER if n in names]


def versions(work: Path, data: str, size: int, seed: int) -> tuple[Dump, Dump]:
    if data == "dump":
        return dump_v1(work, size, seed), dump_v2(work, size, seed)
    return other_v1(work, data, size, seed), other_v2(work, data, size, seed)


def run_compare(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    size = gen_dump.parse_size(args.size)
    v1, v2 = versions(work, args.data, size, args.seed)
    data = {"set": args.data, "v1": v1.info, "v2": v2.info}
    print(f"data: v1 {v1.bytes / MB:,.0f} MB, v2 {v2.bytes / MB:,.0f} MB in {work / 'data'}", file=sys.stderr)
    stage_rounds: list[dict[str, Any]] = []

    def stages(_round: int) -> None:
        if not args.no_stages:
            stage_rounds.append(measure_stage_round(v1.path, scratch_parent=work))

    results = bench_tools(make_tools(args.tools.split(","), args), work, v1, v2, args.runs, stages)
    costs = best_stages(stage_rounds) if stage_rounds else None
    rat = all_ratios(results, "dtstore")
    print(f"\n## {args.size} {DATA_TITLES[args.data]}, tools run in order {', '.join(r.tool for r in results)}"
          f" (every step: best of {args.runs} interleaved rounds)\n")
    if costs is not None:
        print(bound_table(costs, next((r for r in results if r.tool == "dtstore"), None), stage_rounds), "\n")
    print(main_table(results), "\n")
    print("password KDF (every command derives the key): "
          + "; ".join(f"{r.tool} {r.kdf or '?'}" for r in results if r.available), "\n")
    print(ratio_table("dtstore", rat), "\n")
    if any(r.tool == "dtstore-z1" for r in results):
        print(ratio_table("dtstore-z1", all_ratios(results, "dtstore-z1")), "\n")
    print(detail_table(results))
    for r in results:
        if r.error and r.available:
            print(f"\n**{r.tool} FAILED**: {r.error}")
    return {
        "mode": "compare",
        "size": args.size,
        "data": data,
        "stages": costs,
        "tools": [result_json(r) for r in results],
        "ratios": rat,
    }


def run_scaling(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    names = args.tools.split(",") if args.tools_given else ["dtstore"]
    rows: list[dict[str, Any]] = []
    for label in args.sizes.split(","):
        v1 = dump_v1(work, gen_dump.parse_size(label), args.seed)
        for tool in make_tools(names, args):
            (r,) = bench_tools([tool], work, v1, None, runs=1)
            m = r.step("backup1")
            rows.append(
                {
                    "tool": tool.name,
                    "size": label,
                    "bytes": v1.bytes,
                    "available": r.available,
                    "error": r.error,
                    "seconds": m.seconds if m else None,
                    "mb_per_s": v1.bytes / m.seconds / MB if m and m.ok else None,
                    "max_rss_bytes": m.max_rss_bytes if m else None,
                }
            )
    print("\n| tool | input | backup s | MB/s | peak RSS MB |\n|---|---|---|---|---|")
    for row in rows:
        if not row["available"]:
            print(f"| {row['tool']} | {row['size']} | not available | | |")
            continue
        secs = "-" if row["seconds"] is None else f"{row['seconds']:.1f}"
        rate = "-" if row["mb_per_s"] is None else f"{row['mb_per_s']:.1f}"
        print(f"| {row['tool']} | {row['size']} | {secs} | {rate} | {_mb(row['max_rss_bytes'])} |")
    growth = rss_growth(rows)
    for name, g in growth.items():
        print(f"\n{name}: peak RSS at the largest input / at the smallest = {g:.2f}")
    return {"mode": "rss-scaling", "runs": rows, "rss_growth": growth}


def rss_growth(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Per tool: peak RSS of the largest input's backup divided by that of the smallest."""
    out: dict[str, float] = {}
    for tool in dict.fromkeys(r["tool"] for r in rows):
        ok = sorted((r["bytes"], r["max_rss_bytes"]) for r in rows if r["tool"] == tool and r["max_rss_bytes"])
        if len(ok) >= 2:
            out[tool] = ok[-1][1] / ok[0][1]
    return out


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m bench.compare", description=__doc__.splitlines()[0])
    ap.add_argument("--size", default="1G", help="dump size, binary units (default 1G)")
    ap.add_argument("--sizes", help="RSS scaling mode: e.g. 1G,10G; first backup only")
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dtstore-bench")
    ap.add_argument(
        "--tools", default=",".join(DEFAULT_TOOLS),
        help="comma list; always run in order " + ",".join(TOOL_ORDER) + " (dtstore-z1: a repository made with "
             "--compression-level 1)"
    )
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", choices=sorted(DATA_TITLES), default="dump",
                    help="dump: the generator's SQL dump; sysbench: sysbench-like INSERT rows; pages: a "
                         "binary page file (SQLite), as bench.compression makes them")
    ap.add_argument("--runs", type=int, default=3,
                    help="rounds: every step (both backups in a fresh repository, restore, dump) this many "
                         "times, interleaved across the tools, the best kept")
    ap.add_argument("--no-stages", action="store_true", help="skip the stage costs and the bound")
    ap.add_argument("--json", type=Path, help="write results here")
    ap.add_argument("--dtstore-cmd", help="dtstore executable (default: next to this python, else PATH)")
    ap.add_argument("--borg-encryption", default="repokey", help="borg init mode (repokey = AES-CTR+HMAC-SHA256)")
    args = ap.parse_args(argv)
    args.tools_given = any(a == "--tools" or a.startswith("--tools=") for a in (argv or sys.argv[1:]))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    work = args.workdir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    out = run_scaling(args, work) if args.sizes else run_compare(args, work)
    out["machine"] = machine_info()
    out["rss_floor_bytes"] = rss_floor(work)
    out["rss_wrapper"] = GNU_TIME if os.access(GNU_TIME, os.X_OK) else "python helper"
    out["workdir"] = str(work)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    failed = [t for t in out.get("tools", out.get("runs", [])) if t.get("error") and t.get("available")]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
