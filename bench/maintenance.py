"""Check and prune on a repository with 1,000 snapshots and ≥ 200k chunks, beside restic.

    python -m bench.maintenance [--snapshots 1000] [--chunks 200000] [--workdir DIR] [--no-restic]

The data is a synthetic "nightly dump": 250 records of 4 KiB; each snapshot rewrites enough random
records that it adds about ``chunks / snapshots`` new chunks (dtstore chunker 256/1024/4096, so a
4 KiB record is about four chunks).  The same byte stream of every night goes to dtstore (in this
process, ``Repository.snapshot`` with a ``StdinSource`` over ``io.BytesIO``) and to restic
(``restic backup --stdin``, in a worker thread, overlapping with dtstore's work), so both
repositories hold the same 1,000 snapshots of the same data.  restic cannot cut chunks that small,
so it holds far fewer, larger blobs: the comparison is per repository of the same history, not per
chunk.

Both tools use a cheap password KDF here: dtstore repositories are made with CHEAP_KDF, and
restic's key file is rewritten with scrypt N=1024 (same master key, re-wrapped), or its 1,000
process starts alone would take ~8 minutes.  Nothing else about restic is changed.

Measured, each as a separate process through ``bench.compare.run_measured`` (wall time, peak RSS of
the process itself via GNU time / wait4): check (structure), check with full data read, forget of
every other snapshot, prune dry run, prune (dtstore: ``--grace 0 --exclusive``, which marks and
deletes in one run like restic's prune; both with the default 5 % max-unused), check afterwards.
``check`` also runs at a quarter of the history, to show how its memory grows with the repository.
Prints markdown tables.
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

from bench.compare import _read_rusage, _rusage_wrapper, tree_bytes

PASSWORD = "bench-password-not-secret"
RECORDS = 250
RECORD_SIZE = 4096
FILES = 1000
FILE_SIZE = 1024
NEW_CHUNKS_PER_FILE = 1.45  # measured with the 256/1024/4096 chunker
NEW_CHUNKS_PER_RECORD = 4.5  # measured: a rewritten 4 KiB record costs ~4.6 new chunks (edges included)


# --------------------------------------------------------------------------- the data


class Nights:
    """The dump of each night: deterministic, so any tool can be fed the same bytes."""

    def __init__(self, seed: int, changes: int) -> None:
        self._rng = random.Random(seed)
        self._records = [self._rng.randbytes(RECORD_SIZE) for _ in range(RECORDS)]
        self._changes = changes

    def __iter__(self) -> Iterator[bytes]:
        while True:
            for _ in range(self._changes):
                self._records[self._rng.randrange(RECORDS)] = self._rng.randbytes(RECORD_SIZE)
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--snapshots", type=int, default=1000)
    parser.add_argument("--chunks", type=int, default=200_000, help="target number of distinct chunks (dtstore)")
    parser.add_argument("--workdir", type=Path, help="default: a temporary directory, removed afterwards")
    parser.add_argument("--no-restic", action="store_true")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shape", choices=["stdin", "files"], default="stdin",
                        help="stdin: one 1 MB dump per snapshot (restic: --stdin, ~1 MiB blobs); files: a "
                             "directory of 1,000 files of 1 KiB (about as many restic blobs as dtstore chunks)")
    args = parser.parse_args(argv)

    from dtstore import FilesSource, Repository, Source, StdinSource
    from dtstore.chunking import ChunkerParams
    from dtstore.crypto.keys import CHEAP_KDF

    work = args.workdir or Path(tempfile.mkdtemp(prefix="dtstore-bench-maint-"))
    shutil.rmtree(work / "repos", ignore_errors=True)
    shutil.rmtree(work / "cache", ignore_errors=True)
    logs = work / "logs"
    shutil.rmtree(logs, ignore_errors=True)
    logs.mkdir(parents=True)
    d_repo, r_repo = work / "repos" / "dtstore", work / "repos" / "restic"
    d_cache, r_cache = work / "cache" / "dtstore", work / "cache" / "restic"
    d_env = {k: v for k, v in os.environ.items() if not k.startswith(("RESTIC_", "DTSTORE_"))}
    d_env.update(DTSTORE_PASSWORD=PASSWORD, DTSTORE_CACHE_DIR=str(d_cache), DTSTORE_REPOSITORY=str(d_repo))
    dtstore_cli = [sys.executable, "-m", "dtstore.cli", "--json", "--quiet"]
    r_env = restic_env(r_repo, r_cache)
    use_restic = not args.no_restic and shutil.which("restic") is not None

    per_unit = NEW_CHUNKS_PER_RECORD if args.shape == "stdin" else NEW_CHUNKS_PER_FILE
    changes = max(1, round(args.chunks / args.snapshots / per_unit))
    small_at = max(1, args.snapshots // 4)
    repo = Repository.init(str(d_repo), PASSWORD, kdf=CHEAP_KDF, cache_dir=d_cache,
                           chunker=ChunkerParams(256, 1024, 4096), pack_size=4 << 20)
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

    rows: list[Row] = []
    sizes: list[tuple[int, int, int, Row, Row]] = []
    t_build = time.perf_counter()
    t_dtstore = 0.0
    nights = iter(Nights(args.seed, changes))
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
            row = Row(f"check @ {number} snapshots, {chunks} chunks")
            row.dtstore = measure([*dtstore_cli, "check"], d_env, logs, f"dtstore-check-{number}")
            if use_restic:
                row.restic = measure(["restic", "check"], r_env, logs, f"restic-check-{number}")
            dry = Row("prune --dry-run")
            dry.dtstore = measure([*dtstore_cli, "prune", "--dry-run", "--grace", "0", "--exclusive"], d_env, logs,
                                  f"dtstore-prune-dry-run-{number}")
            if use_restic:
                dry.restic = measure(["restic", "prune", "--dry-run"], r_env, logs, f"restic-prune-dry-run-{number}")
            sizes.append((number, chunks, tree_bytes(d_repo), row, dry))
    build_seconds = time.perf_counter() - t_build
    restic_pool.shutdown()
    stats = repo.stats()
    repo.close()
    r_stats = restic_json(["stats", "--mode", "raw-data"], r_env) if use_restic else {}

    # full size: check with data, forget half, prune dry run, prune, check again
    rows.append(sizes[-1][3])
    row = Row("check --read-data")
    row.dtstore = measure([*dtstore_cli, "check", "--read-data"], d_env, logs, "dtstore-check-read-data")
    if use_restic:
        row.restic = measure(["restic", "check", "--read-data"], r_env, logs, "restic-check-read-data")
    rows.append(row)

    forget_d = ids[::2]
    r_ids = [s["id"] for s in sorted(restic_json(["snapshots"], r_env), key=lambda s: s["time"])] if use_restic else []
    row = Row(f"forget {len(forget_d)} snapshots (by ID)")
    row.dtstore = measure([*dtstore_cli, "forget", *forget_d], d_env, logs, "dtstore-forget")
    if use_restic:
        row.restic = measure(["restic", "forget", *r_ids[::2]], r_env, logs, "restic-forget")
    rows.append(row)

    row = Row("prune --dry-run")
    row.dtstore = measure([*dtstore_cli, "prune", "--dry-run", "--grace", "0", "--exclusive"], d_env, logs,
                          "dtstore-prune-dry-run")
    if use_restic:
        row.restic = measure(["restic", "prune", "--dry-run"], r_env, logs, "restic-prune-dry-run")
    rows.append(row)

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

    row = Row("check after prune")
    row.dtstore = measure([*dtstore_cli, "check"], d_env, logs, "dtstore-check-after")
    if use_restic:
        row.restic = measure(["restic", "check"], r_env, logs, "restic-check-after")
    rows.append(row)

    # --------------------------------------------------------------------------- report
    print()
    if args.shape == "stdin":
        print(f"Repository: {args.snapshots} snapshots of a {RECORDS * RECORD_SIZE // 1024} KiB dump on standard "
              f"input, {changes} records of 4 KiB rewritten per snapshot; logical "
              f"{stats['logical_bytes'] / 1e9:.2f} GB.")
    else:
        print(f"Repository: {args.snapshots} snapshots of a directory of {FILES} files of {FILE_SIZE} B, "
              f"{changes} files rewritten per snapshot; logical {stats['logical_bytes'] / 1e9:.2f} GB.")
    print(f"dtstore: {stats['chunks_indexed']} distinct chunks (chunker 256/1024/4096), {stats['packs']} packs, "
          f"{stats['stored_bytes'] / 1e6:.0f} MB stored; its {args.snapshots} snapshots took {t_dtstore:.0f} s "
          f"({t_dtstore / args.snapshots * 1000:.0f} ms each, in-process).")
    if use_restic:
        print(f"restic {restic_version()}: {r_stats.get('total_blob_count')} blobs, "
              f"{r_stats.get('total_size', 0) / 1e6:.0f} MB stored.")
    print(f"Build (both tools, overlapping): {build_seconds:.0f} s.  Machine: {os.cpu_count()} cores.")
    print()
    print("Peak RSS is the process's own ru_maxrss; in brackets its peak anonymous RSS (heap, without "
          "mapped files such as dtstore's LMDB scratch and cache), sampled every 20 ms.")
    print()
    print("| operation | dtstore time | dtstore peak RSS (anon) | restic time | restic peak RSS (anon) |")
    print("|---|---:|---:|---:|---:|")
    for row in rows:
        dt_time, dt_rss = fmt(row.dtstore)
        r_time, r_rss = fmt(row.restic)
        print(f"| {row.operation} | {dt_time} | {dt_rss} | {r_time} | {r_rss} |")
    for row in rows:
        if row.note:
            print(f"\n{row.operation}: {row.note}")
    print()
    print("Memory against repository size (before forgetting anything):")
    print()
    print("| snapshots | dtstore chunks | dtstore repo size | dtstore check RSS (anon) | restic check RSS (anon) "
          "| dtstore prune --dry-run RSS (anon) | restic prune --dry-run RSS (anon) |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for number, chunks, size, row, dry in sizes:
        print(f"| {number} | {chunks} | {size / 1e6:.0f} MB | {fmt(row.dtstore)[1]} | {fmt(row.restic)[1]} "
              f"| {fmt(dry.dtstore)[1]} | {fmt(dry.restic)[1]} |")
    if args.workdir is None:
        shutil.rmtree(work, ignore_errors=True)
    else:
        print(f"\nrepositories and logs kept in {work}")
    return 0


def restic_version() -> str:
    done = subprocess.run(["restic", "version"], capture_output=True, text=True, check=False)
    return done.stdout.split()[1] if done.returncode == 0 else "?"


if __name__ == "__main__":
    raise SystemExit(main())
