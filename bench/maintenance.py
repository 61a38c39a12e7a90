"""Check and prune on the same history in dtstore and restic, each at its default chunk sizes; and at scale.

    python -m bench.maintenance [--snapshots 1000] [--chunks 3000] [--dump-mib 2] [--workdir DIR] [--no-restic]
    python -m bench.maintenance --shape files --chunks 100000      # ~100k chunks in both: one per small file
    python -m bench.maintenance --synthetic --chunks 10000000 --snapshots 10000 --smaller 1000000

**The same history.**  The data is a synthetic "nightly dump" of ``--dump-mib`` MiB (records of
4 KiB); each night rewrites enough random records that dtstore gains about ``chunks / snapshots``
chunks (one per rewritten record, plus the night's item list).  The same bytes of every night go to
dtstore (in this process, ``Repository.snapshot`` with a ``StdinSource`` over ``io.BytesIO``) and to
restic (``restic backup --stdin``, in a worker thread, overlapping with dtstore's work).  Both use
their defaults: dtstore ``format.DEFAULT_CHUNK_*`` (192 KiB / 384 KiB / 2 MiB), 16 MiB packs and the
default zstd level; restic 512 KiB / 1 MiB / 8 MiB.  So both repositories hold the same snapshots of
the same data, in as many chunks (blobs) as each tool's defaults make; a second table divides each
figure by the repository's chunks or blobs (µs and bytes of peak RSS per chunk).  ``--shape files``
stores a directory of 1,000 files of 1 KiB instead: a small file is one chunk in both tools, so both
hold about as many.  ``--dtstore-chunker MIN/AVG/MAX`` gives dtstore other chunk sizes (the old
256/1024/4096 run).

Both tools use the same cheap password KDF here, scrypt N=1024, r=8, p=1: dtstore repositories are
made with CHEAP_KDF, and restic's key file is rewritten with N=1024 (same master key, re-wrapped),
or its 1,000 process starts alone would take ~8 minutes.  Nothing else about restic is changed.
dtstore runs from bytecode compiled once into WORKDIR/pycache (as an installed dtstore does), also
when PYTHONDONTWRITEBYTECODE is set.

Measured, each as a separate process through ``measure`` (``bench.compare``'s rusage wrapper: wall
time, peak RSS of the process itself via GNU time / wait4, plus its peak anonymous RSS sampled from
/proc): check (structure), check with full data read, forget of every other snapshot, prune dry run,
prune (dtstore: ``--grace 0 --exclusive``, which marks and deletes in one run like restic's prune;
both with the default 5 % max-unused), check afterwards.  ``check`` also runs at a quarter of the
history, to show how its memory grows with the repository.  Prints markdown tables.

**At scale** (``--synthetic``): ``bench.maintenance_synthetic`` writes a dtstore repository of
``--chunks`` chunks and ``--snapshots`` snapshots directly (tiny chunks, real packs, segments and
manifests: a history of 10 million 256 KiB chunks would be 2.5 TB to back up), then measures
``check``, ``prune --dry-run`` and ``prune``; ``--smaller N`` does the same first at N chunks (the
same chunks per snapshot), so the table shows how time and memory grow.  restic is not run there:
it has no such builder (see bench/README.md).
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.bytecode import compile_dtstore, installed_like
from bench.compare import _read_rusage, _rusage_wrapper, tree_bytes

PASSWORD = "bench-password-not-secret"
RECORDS = 250
RECORD_SIZE = 4096
FILES = 1000
FILE_SIZE = 1024
SMALL_CHUNKER = (256, 1024, 4096)
# new chunks per rewritten unit, measured: with the small chunker a 4 KiB record costs ~4.6 (edges
# included) and a 1 KiB file ~1.45; at the defaults (chunks of 64 KiB+) either is one new chunk
NEW_CHUNKS_SMALL = {"stdin": 4.5, "files": 1.45}
NEW_CHUNKS_DEFAULT = {"stdin": 1.0, "files": 1.0}


# --------------------------------------------------------------------------- the data


class Nights:
    """The dump of each night: deterministic, so any tool can be fed the same bytes."""

    def __init__(self, seed: int, changes: int, records: int = RECORDS) -> None:
        self._rng = random.Random(seed)
        self._records = [self._rng.randbytes(RECORD_SIZE) for _ in range(records)]
        self._changes = changes

    def __iter__(self) -> Iterator[bytes]:
        while True:
            for _ in range(self._changes):
                self._records[self._rng.randrange(len(self._records))] = self._rng.randbytes(RECORD_SIZE)
            yield b"".join(self._records)


class DirNights:
    """The ``files`` shape: a directory of FILES small files, ``changes`` of them rewritten per night.
    Small files are one blob each in restic too, so both repositories hold ~as many blobs."""

    def __init__(self, root: Path, seed: int, changes: int) -> None:
        self.root = root
        self._rng = random.Random(seed)
        self._changes = changes
        root.mkdir(parents=True)
        for n in range(FILES):
            (root / f"r{n:04d}").write_bytes(self._rng.randbytes(FILE_SIZE))

    def next(self) -> None:
        for _ in range(self._changes):
            (self.root / f"r{self._rng.randrange(FILES):04d}").write_bytes(self._rng.randbytes(FILE_SIZE))


# --------------------------------------------------------------------------- restic


def restic_env(repo: Path, cache: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "DTSTORE_"))}
    env.update(RESTIC_REPOSITORY=str(repo), RESTIC_PASSWORD=PASSWORD, RESTIC_CACHE_DIR=str(cache))
    return env


def _restic_mac(k: bytes, r: bytes, iv: bytes, ciphertext: bytes) -> bytes:
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
    from cryptography.hazmat.primitives.poly1305 import Poly1305

    s = Cipher(algorithms.AES(k), modes.ECB()).encryptor().update(iv)
    return Poly1305.generate_tag(r + s, ciphertext)


def _restic_kdf(salt: bytes, n: int, r: int, p: int) -> tuple[bytes, bytes, bytes]:
    key = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=n, r=r, p=p, dklen=64, maxmem=1 << 30)
    return key[:32], key[32:48], key[48:64]  # AES key, Poly1305-AES k, Poly1305 r


def cheapen_restic_key(repo: Path, n: int = 1024) -> None:
    """Re-wrap the master key of restic's only key file with scrypt N=n (restic's format: IV ‖
    AES-256-CTR ‖ Poly1305-AES tag; the key file's name is the SHA-256 of its content)."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    [path] = list((repo / "keys").iterdir())
    doc = json.loads(path.read_text())
    enc, k, r = _restic_kdf(base64.b64decode(doc["salt"]), doc["N"], doc["r"], doc["p"])
    blob = base64.b64decode(doc["data"])
    iv, ciphertext, tag = blob[:16], blob[16:-16], blob[-16:]
    if _restic_mac(k, r, iv, ciphertext) != tag:
        raise RuntimeError("restic key file: unexpected format (MAC mismatch)")
    plain = Cipher(algorithms.AES(enc), modes.CTR(iv)).decryptor().update(ciphertext)
    salt = os.urandom(64)
    enc, k, r = _restic_kdf(salt, n, 8, 1)
    iv = os.urandom(16)
    ciphertext = Cipher(algorithms.AES(enc), modes.CTR(iv)).encryptor().update(plain)
    doc.update(N=n, r=8, p=1, salt=base64.b64encode(salt).decode(),
               data=base64.b64encode(iv + ciphertext + _restic_mac(k, r, iv, ciphertext)).decode())
    raw = json.dumps(doc).encode()
    (repo / "keys" / hashlib.sha256(raw).hexdigest()).write_bytes(raw)
    path.unlink()


def restic_json(argv: list[str], env: dict[str, str]) -> Any:
    done = subprocess.run(["restic", *argv, "--json"], env=env, capture_output=True, check=True)
    return json.loads(done.stdout)


# --------------------------------------------------------------------------- measuring


@dataclass
class Measured:
    seconds: float
    max_rss_bytes: int
    """ru_maxrss of the process itself (GNU time / wait4): anonymous and file-backed pages"""
    max_anon_bytes: int
    """peak RssAnon sampled from /proc every 20 ms: the heap, without mapped files (LMDB)"""
    log: str


@dataclass
class Row:
    operation: str
    dtstore: Measured | None = None
    restic: Measured | None = None
    note: str = ""


def _child_of(pid: int) -> int | None:
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return None
    return int(children[0]) if children else None


def _anon_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


def measure(argv: list[str], env: dict[str, str], logs: Path, name: str) -> Measured:
    """Run one command to completion: wall time, its own peak RSS, and its peak anonymous RSS."""
    log, stats = logs / f"{name}.log", logs / f"{name}.rusage"
    os.sync()
    peak_anon = 0
    with open(log, "wb") as out:
        t0 = time.perf_counter()
        proc = subprocess.Popen(_rusage_wrapper(argv, stats), env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=out)
        done = threading.Event()

        def sample() -> None:
            nonlocal peak_anon
            while not done.wait(0.02):
                child = _child_of(proc.pid)
                if child is not None:
                    peak_anon = max(peak_anon, _anon_bytes(child))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        _, status, _ = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - t0
        done.set()
        sampler.join()
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-15:])
        raise SystemExit(f"{name} failed with exit code {code}:\n{tail}")
    return Measured(seconds, _read_rusage(stats)[0], peak_anon, str(log))


def json_summary(result: Measured) -> dict[str, Any]:
    for line in reversed(Path(result.log).read_text().splitlines()):
        if line.startswith("{") and '"summary"' in line:
            return dict(json.loads(line))
    return {}


def fmt(result: Measured | None) -> tuple[str, str]:
    """(time, "peak RSS (peak anonymous RSS)")."""
    if result is None:
        return "–", "–"
    return (f"{result.seconds:.2f} s",
            f"{result.max_rss_bytes / 2**20:.0f} MiB ({result.max_anon_bytes / 2**20:.0f})")


# --------------------------------------------------------------------------- the run


def parse_chunker(text: str) -> tuple[int, int, int]:
    if text == "default":
        from dtstore.format import DEFAULT_CHUNK_AVG, DEFAULT_CHUNK_MAX, DEFAULT_CHUNK_MIN

        return DEFAULT_CHUNK_MIN, DEFAULT_CHUNK_AVG, DEFAULT_CHUNK_MAX
    if text == "small":
        return SMALL_CHUNKER
    parts = text.split("/")
    if len(parts) != 3:
        raise argparse.ArgumentTypeError("MIN/AVG/MAX in bytes, 'default' or 'small'")
    lo, avg, hi = (int(p) for p in parts)
    return lo, avg, hi



def tool_settings(work: Path) -> tuple[Path, Path, Path, dict[str, str], dict[str, str], list[str]]:
    """Both tools' repositories under ``work``, dtstore's cache, their environments and dtstore's
    command line."""
    d_repo, r_repo = work / "repos" / "dtstore", work / "repos" / "restic"
    d_cache, r_cache = work / "cache" / "dtstore", work / "cache" / "restic"
    d_env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "DTSTORE_"))}
    d_env.update(DTSTORE_PASSWORD=PASSWORD, DTSTORE_CACHE_DIR=str(d_cache), DTSTORE_REPOSITORY=str(d_repo))
    installed_like(d_env, work)
    dtstore_cli = [sys.executable, "-m", "dtstore.cli", "--json", "--quiet"]
    return d_repo, r_repo, d_cache, d_env, restic_env(r_repo, r_cache), dtstore_cli


def finish(args: argparse.Namespace, work: Path) -> int:
    """Remove a temporary work directory, or say where a chosen one keeps the repositories."""
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"\nrepositories and logs kept in {work}")
    return 0


def check_and_dry_run(operation: str, number: int, dtstore_cli: list[str], d_env: dict[str, str],
                      r_env: dict[str, str], logs: Path, use_restic: bool) -> tuple[Row, Row]:
    """``check`` and ``prune --dry-run`` of both tools at ``number`` snapshots."""
    row = Row(operation)
    row.dtstore = measure([*dtstore_cli, "check"], d_env, logs, f"dtstore-check-{number}")
    if use_restic:
        row.restic = measure(["restic", "check"], r_env, logs, f"restic-check-{number}")
    dry = Row("prune --dry-run")
    dry.dtstore = measure([*dtstore_cli, "prune", "--dry-run", "--grace", "0", "--exclusive"], d_env, logs,
                          f"dtstore-prune-dry-run-{number}")
    if use_restic:
        dry.restic = measure(["restic", "prune", "--dry-run"], r_env, logs, f"restic-prune-dry-run-{number}")
    return row, dry

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=1000)
    parser.add_argument("--chunks", type=int, default=3000,
                        help="target number of distinct chunks (dtstore; with --synthetic: of the synthetic history)")
    parser.add_argument("--workdir", type=Path, help="default: a temporary directory, removed afterwards")
    parser.add_argument("--no-restic", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shape", choices=["stdin", "files"], default="stdin",
                        help="stdin: one dump of --dump-mib per snapshot (restic: --stdin); files: a directory of "
                             "1,000 files of 1 KiB (one chunk per file in both tools)")
    parser.add_argument("--dump-mib", type=float, default=2.0, help="size of the nightly dump (shape stdin)")
    parser.add_argument("--dtstore-chunker", type=parse_chunker, default="default", metavar="MIN/AVG/MAX",
                        help="dtstore's chunker: 'default' (format.DEFAULT_CHUNK_*), 'small' (256/1024/4096) or "
                             "MIN/AVG/MAX bytes")
    parser.add_argument("--synthetic", action="store_true",
                        help="build a dtstore history of --chunks chunks and --snapshots snapshots directly "
                             "(bench.maintenance_synthetic) and measure check and prune on it; dtstore only")
    parser.add_argument("--smaller", type=int, default=0, metavar="CHUNKS",
                        help="with --synthetic: first the same at CHUNKS chunks (same chunks per snapshot)")
    parser.add_argument("--window", type=int, default=0,
                        help="with --synthetic: chunks each snapshot refers to (default: 2 x new per snapshot)")
    parser.add_argument("--blobs-per-pack", type=int, default=64, help="with --synthetic (64: 16 MiB of 256 KiB)")
    parser.add_argument("--reuse", action="store_true",
                        help="with --workdir: keep the built history (a copy in WORKDIR/built; with --synthetic: "
                             "the built histories) and measure on a fresh copy of it next time, without building")
    args = parser.parse_args(argv)
    if isinstance(args.dtstore_chunker, str):
        args.dtstore_chunker = parse_chunker(args.dtstore_chunker)
    if args.synthetic:
        from bench.maintenance_synthetic import run_synthetic

        return run_synthetic(args)
    return run_history(args)


def run_history(args: argparse.Namespace) -> int:
    from dtstore import FilesSource, Repository, Source, StdinSource
    from dtstore.chunking import ChunkerParams
    from dtstore.crypto.keys import CHEAP_KDF

    work = args.workdir or Path(tempfile.mkdtemp(prefix="dtstore-bench-maint-"))
    built, record = work / "built", work / "built" / "built.json"
    if args.reuse and args.workdir is not None and record.exists():
        return measure_history(args, work, json.loads(record.read_text()))
    shutil.rmtree(work / "repos", ignore_errors=True)
    shutil.rmtree(work / "cache", ignore_errors=True)
    logs = work / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    d_repo, r_repo, d_cache, d_env, r_env, dtstore_cli = tool_settings(work)
    compile_dtstore(d_env)
    use_restic = not args.no_restic and shutil.which("restic") is not None

    chunker = tuple(args.dtstore_chunker)
    small = chunker == SMALL_CHUNKER
    per_unit = (NEW_CHUNKS_SMALL if small else NEW_CHUNKS_DEFAULT)[args.shape]
    meta_per_snapshot = 0 if small else 1  # the night's item list: one new metadata chunk
    changes = max(1, round((args.chunks / args.snapshots - meta_per_snapshot) / per_unit))
    records = max(1, round(args.dump_mib * 2**20 / RECORD_SIZE))
    small_at = max(1, args.snapshots // 4)
    repo = Repository.init(str(d_repo), PASSWORD, kdf=CHEAP_KDF, cache_dir=d_cache,
                           chunker=ChunkerParams(*chunker), pack_size=(4 << 20) if small else None)
    if use_restic:
        subprocess.run(["restic", "init", "-q"], env=r_env, check=True, stdout=subprocess.DEVNULL)
        cheapen_restic_key(r_repo)
    restic_pool = ThreadPoolExecutor(1)
    pending: list[Future[Any]] = []

    def restic_backup(data: bytes | Path) -> None:
        if isinstance(data, Path):  # a private copy of that night's directory
            subprocess.run(["restic", "backup", "-q", "--host", "bench", str(data)], env=r_env, check=True,
                           stdout=subprocess.DEVNULL)
            shutil.rmtree(data)
            return
        subprocess.run(["restic", "backup", "-q", "--stdin", "--stdin-filename", "dump.sql"], input=data,
                       env=r_env, check=True, stdout=subprocess.DEVNULL)

    def restic_blobs() -> int:
        return int(restic_json(["stats", "--mode", "raw-data"], r_env).get("total_blob_count", 0)) if use_restic else 0

    sizes: list[tuple[int, int, int, int, Row, Row]] = []
    t_build = time.perf_counter()
    t_dtstore = 0.0
    nights = iter(Nights(args.seed, changes, records))
    shutil.rmtree(work / "src", ignore_errors=True)
    tree = DirNights(work / "src" / "dump", args.seed, changes) if args.shape == "files" else None
    ids: list[str] = []
    for number in range(1, args.snapshots + 1):
        if tree is not None:
            if number > 1:
                tree.next()
            source: Source = FilesSource([str(tree.root)])
            if use_restic:
                copy = work / "src" / f"night{number:04d}"
                shutil.copytree(tree.root, copy)
                pending.append(restic_pool.submit(restic_backup, copy))
        else:
            data = next(nights)
            source = StdinSource("dump.sql", io.BytesIO(data))
            if use_restic:
                pending.append(restic_pool.submit(restic_backup, data))
        t0 = time.perf_counter()
        ids.append(repo.snapshot([source]).id)
        t_dtstore += time.perf_counter() - t0
        if number % 100 == 0:
            print(f"  {number} snapshots, {repo.stats()['chunks_indexed']} chunks, "
                  f"{time.perf_counter() - t_build:.0f} s", file=sys.stderr)
        if number in (small_at, args.snapshots):  # check at two sizes: does memory grow?
            for future in pending:
                future.result()
            pending.clear()
            chunks = repo.stats()["chunks_indexed"]
            blobs = restic_blobs()
            row, dry = check_and_dry_run(f"check @ {number} snapshots", number, dtstore_cli, d_env, r_env, logs,
                                         use_restic)
            sizes.append((number, chunks, blobs, tree_bytes(d_repo), row, dry))
    build_seconds = time.perf_counter() - t_build
    restic_pool.shutdown()
    repo.close()
    doc = {"ids": ids, "build_seconds": build_seconds, "t_dtstore": t_dtstore, "changes": changes,
           "records": records, "chunker": list(chunker), "use_restic": use_restic,
           "sizes": [[number, chunks, blobs, size, _measured_doc(row), _measured_doc(dry)]
                     for number, chunks, blobs, size, row, dry in sizes]}
    if args.reuse and args.workdir is not None:  # a pristine copy of the history, for the next run
        shutil.rmtree(built, ignore_errors=True)
        for part in ("repos", "cache"):
            shutil.copytree(work / part, built / part, symlinks=True)
        record.write_text(json.dumps(doc))
    return measure_history(args, work, doc, fresh=True)


def _measured_doc(row: Row) -> list[Any]:
    return [None if m is None else [m.seconds, m.max_rss_bytes, m.max_anon_bytes, m.log]
            for m in (row.dtstore, row.restic)]


def _row_of(name: str, doc: list[Any]) -> Row:
    d, r = (None if m is None else Measured(*m) for m in doc)
    return Row(name, d, r)


def measure_history(args: argparse.Namespace, work: Path, doc: dict[str, Any], fresh: bool = False) -> int:
    """Measure the operations on the built history (``fresh``: the one just built; otherwise a new
    copy of WORKDIR/built, whose check and prune --dry-run at full size are measured again)."""
    from dtstore import Repository

    logs = work / "logs"
    d_repo, r_repo, d_cache, d_env, r_env, dtstore_cli = tool_settings(work)
    compile_dtstore(d_env)
    use_restic = bool(doc["use_restic"]) and not args.no_restic
    ids: list[str] = doc["ids"]
    build_seconds, t_dtstore = float(doc["build_seconds"]), float(doc["t_dtstore"])
    changes, records, chunker = int(doc["changes"]), int(doc["records"]), tuple(doc["chunker"])
    sizes: list[tuple[int, int, int, int, Row, Row]] = [
        (number, chunks, blobs, size, _row_of(f"check @ {number} snapshots", row), _row_of("prune --dry-run", dry))
        for number, chunks, blobs, size, row, dry in doc["sizes"]]
    if not fresh:
        for part in ("repos", "cache", "logs"):
            shutil.rmtree(work / part, ignore_errors=True)
        for part in ("repos", "cache"):
            shutil.copytree(work / "built" / part, work / part, symlinks=True)
        logs.mkdir(parents=True)
        number, chunks, blobs, size, row, dry = sizes[-1]
        row, dry = check_and_dry_run(row.operation, number, dtstore_cli, d_env, r_env, logs, use_restic)
        sizes = [(n, c, b, s, ro, dr) for n, c, b, s, ro, dr in sizes[:-1]] + [(number, chunks, blobs, size, row, dry)]

    def restic_blobs() -> int:
        return int(restic_json(["stats", "--mode", "raw-data"], r_env).get("total_blob_count", 0)) if use_restic else 0

    rows: list[Row] = []
    with Repository.open(str(d_repo), PASSWORD, cache_dir=d_cache) as opened:
        stats = opened.stats()
    r_stats = restic_json(["stats", "--mode", "raw-data"], r_env) if use_restic else {}
    counts: dict[str, tuple[int, int]] = {}
    """operation → (dtstore chunks, restic blobs) of the repository it ran on"""
    full = (int(stats["chunks_indexed"]), int(r_stats.get("total_blob_count", 0)))

    # full size: check with data, forget half, prune dry run, prune, check again
    rows.append(sizes[-1][4])
    counts[rows[-1].operation] = full
    row = Row("check --read-data")
    row.dtstore = measure([*dtstore_cli, "check", "--read-data"], d_env, logs, "dtstore-check-read-data")
    if use_restic:
        row.restic = measure(["restic", "check", "--read-data"], r_env, logs, "restic-check-read-data")
    rows.append(row)
    counts[row.operation] = full

    forget_d = ids[::2]
    r_ids = [s["id"] for s in sorted(restic_json(["snapshots"], r_env), key=lambda s: s["time"])] if use_restic else []
    row = Row(f"forget {len(forget_d)} snapshots (by ID)")
    row.dtstore = measure([*dtstore_cli, "forget", *forget_d], d_env, logs, "dtstore-forget")
    if use_restic:
        row.restic = measure(["restic", "forget", *r_ids[::2]], r_env, logs, "restic-forget")
    rows.append(row)
    counts[row.operation] = full

    row = Row("prune --dry-run")
    row.dtstore = measure([*dtstore_cli, "prune", "--dry-run", "--grace", "0", "--exclusive"], d_env, logs,
                          "dtstore-prune-dry-run")
    if use_restic:
        row.restic = measure(["restic", "prune", "--dry-run"], r_env, logs, "restic-prune-dry-run")
    rows.append(row)
    counts[row.operation] = full

    before_d, before_r = tree_bytes(d_repo), tree_bytes(r_repo) if use_restic else 0
    row = Row("prune")
    row.dtstore = measure([*dtstore_cli, "prune", "--grace", "0", "--exclusive"], d_env, logs, "dtstore-prune")
    plan = json_summary(row.dtstore)
    if use_restic:
        row.restic = measure(["restic", "prune"], r_env, logs, "restic-prune")
    row.note = (f"dtstore {before_d / 1e6:.0f} → {tree_bytes(d_repo) / 1e6:.0f} MB "
                f"(deleted {plan.get('delete_packs')} packs, repacked {plan.get('repack_packs')})")
    if use_restic:
        row.note += f"; restic {before_r / 1e6:.0f} → {tree_bytes(r_repo) / 1e6:.0f} MB"
    rows.append(row)
    counts[row.operation] = full

    with Repository.open(str(d_repo), PASSWORD, cache_dir=d_cache) as reopened:
        after = (int(reopened.stats()["chunks_indexed"]), restic_blobs())
    row = Row("check after prune")
    row.dtstore = measure([*dtstore_cli, "check"], d_env, logs, "dtstore-check-after")
    if use_restic:
        row.restic = measure(["restic", "check"], r_env, logs, "restic-check-after")
    rows.append(row)
    counts[row.operation] = after

    # --------------------------------------------------------------------------- report
    print()
    load = os.getloadavg()
    if args.shape == "stdin":
        print(f"Repository: {len(ids)} snapshots of a {records * RECORD_SIZE / 2**20:.1f} MiB dump on "
              f"standard input, {changes} records of 4 KiB rewritten per snapshot; logical "
              f"{stats['logical_bytes'] / 1e9:.2f} GB.")
    else:
        print(f"Repository: {len(ids)} snapshots of a directory of {FILES} files of {FILE_SIZE} B, "
              f"{changes} files rewritten per snapshot; logical {stats['logical_bytes'] / 1e9:.2f} GB.")
    print(f"dtstore: {stats['chunks_indexed']} distinct chunks (chunker {'/'.join(map(str, chunker))}), "
          f"{stats['packs']} packs, {stats['stored_bytes'] / 1e6:.0f} MB stored; its {len(ids)} snapshots "
          f"took {t_dtstore:.0f} s ({t_dtstore / len(ids) * 1000:.0f} ms each, in-process).")
    if use_restic:
        print(f"restic {restic_version()}: {r_stats.get('total_blob_count')} blobs, "
              f"{r_stats.get('total_size', 0) / 1e6:.0f} MB stored.")
    reused = "" if fresh else " (earlier; measured on a copy of it)"
    print(f"Build (both tools, overlapping): {build_seconds:.0f} s{reused}.  Machine: {os.cpu_count()} cores, "
          f"load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, {time.strftime('%Y-%m-%d %H:%M')}.")
    print()
    print("Peak RSS is the process's own ru_maxrss; in brackets its peak anonymous RSS (heap, without "
          "mapped files such as dtstore's LMDB scratch and cache), sampled every 20 ms.  Ratio: restic / dtstore "
          "(time: > 1 means dtstore is faster; RSS: > 1 means dtstore uses less).")
    print()
    print("| operation | dtstore time | dtstore peak RSS (anon) | restic time | restic peak RSS (anon) "
          "| time ratio | RSS ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        dt_time, dt_rss = fmt(row.dtstore)
        r_time, r_rss = fmt(row.restic)
        print(f"| {row.operation} | {dt_time} | {dt_rss} | {r_time} | {r_rss} | {ratios(row)} |")
    for row in rows:
        if row.note:
            print(f"\n{row.operation}: {row.note}")
    print()
    print("Per chunk (dtstore) and per blob (restic), of the repository each operation ran on: µs of wall time "
          "and bytes of peak RSS (anonymous in brackets).")
    print()
    print("| operation | dtstore chunks | dtstore µs/chunk | dtstore B RSS/chunk (anon) | restic blobs "
          "| restic µs/blob | restic B RSS/blob (anon) | µs ratio |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        if row.operation.startswith("forget"):
            continue
        d_n, r_n = counts[row.operation]
        print(f"| {row.operation} | {d_n} | {per_chunk(row.dtstore, d_n)} | {r_n or '–'} | "
              f"{per_chunk(row.restic, r_n)} | {per_ratio(row, d_n, r_n)} |")
    print()
    print("Memory against repository size (before forgetting anything):")
    print()
    print("| snapshots | dtstore chunks | restic blobs | dtstore repo size | dtstore check RSS (anon) "
          "| restic check RSS (anon) | dtstore prune --dry-run RSS (anon) | restic prune --dry-run RSS (anon) |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for number, chunks, blobs, size, row, dry in sizes:
        print(f"| {number} | {chunks} | {blobs or '–'} | {size / 1e6:.0f} MB | {fmt(row.dtstore)[1]} "
              f"| {fmt(row.restic)[1]} | {fmt(dry.dtstore)[1]} | {fmt(dry.restic)[1]} |")
    return finish(args, work)


def ratios(row: Row) -> str:
    """"time ratio | RSS ratio": restic / dtstore."""
    if row.dtstore is None or row.restic is None:
        return "– | –"
    return (f"{row.restic.seconds / row.dtstore.seconds:.2f}× | "
            f"{row.restic.max_rss_bytes / row.dtstore.max_rss_bytes:.2f}×")


def per_chunk(result: Measured | None, n: int) -> str:
    """"µs | B (anon)" per chunk or blob."""
    if result is None or n <= 0:
        return "– | –"
    return (f"{result.seconds * 1e6 / n:.0f} | {result.max_rss_bytes / n:.0f} "
            f"({result.max_anon_bytes / n:.0f})")


def per_ratio(row: Row, d_n: int, r_n: int) -> str:
    """restic µs/blob over dtstore µs/chunk."""
    if row.dtstore is None or row.restic is None or d_n <= 0 or r_n <= 0:
        return "–"
    return f"{(row.restic.seconds / r_n) / (row.dtstore.seconds / d_n):.2f}×"


def restic_version() -> str:
    done = subprocess.run(["restic", "version"], capture_output=True, text=True, check=False)
    return done.stdout.split()[1] if done.returncode == 0 else "?"


if __name__ == "__main__":
    raise SystemExit(main())
