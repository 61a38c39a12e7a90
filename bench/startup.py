"""Start-up: when a backup first reads its source, and how fast a long snapshot list answers.

    python -m bench.startup                      # 3 runs each; needs strace for the first-byte times
    python -m bench.startup --snapshots 1000 --runs 3 --workdir /tmp/dtstore-bench

Issue 18 §3.  Two measurements, each a fresh ``dtstore`` process (the entry point next to this
interpreter), with the password KDF at its calibrated default strength:

* **first byte**: ``dtstore snapshot`` of a file into a repository that already holds it (a
  second backup: the file is a new copy, read again in full), run under ``strace -f --seccomp-bpf``
  tracing only ``execve``, ``openat`` and ``read``.  Reported: seconds from the first ``execve`` to
  the first ``read`` of the source file's descriptor, and the whole run; the same run without
  strace gives the wall time without tracing overhead.  The machine is warm: the file, Python and
  the library are in the page cache (one untimed run first).
* **snapshots**: ``dtstore snapshots`` of a repository holding ``--snapshots`` snapshots (made
  in-process, one small file each), wall time per run.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.bytecode import compile_dtstore, installed_like

PASSWORD = "bench-password-not-secret"
SOURCE_BYTES = 256 << 20


def dtstore_command() -> str:
    sibling = Path(sys.executable).with_name("dtstore")
    return str(sibling) if sibling.exists() else (shutil.which("dtstore") or "dtstore")


def child_env(cache: Path) -> dict[str, str]:
    env = installed_like({k: v for k, v in os.environ.items() if not k.startswith("DTSTORE_")}, cache.parent)
    env.update(DTSTORE_PASSWORD=PASSWORD, DTSTORE_CACHE_DIR=str(cache))
    compile_dtstore(env)
    return env


def make_source(path: Path) -> None:
    """A compressible, dump-like file (rows with counters): chunked and stored like a real one."""
    with open(path, "wb") as f:
        row = 0
        while f.tell() < SOURCE_BYTES:
            f.write(b"".join(b"INSERT INTO t VALUES (%d,'customer %d',%d.%02d);\n"
                             % (i, i % 9973, i * 7 % 100003, i % 100) for i in range(row, row + 20000)))
            row += 20000


def first_read(trace: Path, source: Path) -> tuple[float, float]:
    """(seconds to the first read of ``source``, seconds to the end) from an ``strace -ttt -f`` log."""
    lines = trace.read_text().splitlines()
    start = float(lines[0].split()[1])
    fd: str | None = None
    opening: str | None = None  # the thread whose openat of the source strace shows as unfinished
    for line in lines:
        fields = line.split(None, 2)
        if len(fields) < 3:
            continue
        pid, call = fields[0], fields[2]
        if fd is None and f'"{source}"' in call and call.startswith("openat("):
            m = re.search(r"= (\d+)$", call)
            fd = m.group(1) if m else None
            opening = pid if call.endswith("<unfinished ...>") else None
        elif opening == pid and call.startswith("<... openat resumed>"):
            m = re.search(r"= (\d+)$", call)
            fd, opening = (m.group(1) if m else None), None
        elif fd is not None and call.startswith(f"read({fd},"):
            return float(fields[1]) - start, float(lines[-1].split()[1]) - start
    raise SystemExit(f"no read of {source} in {trace}")


def bench_first_byte(work: Path, runs: int) -> list[dict[str, float]]:
    cmd, cache, repo = dtstore_command(), work / "cache", work / "repo"
    env = child_env(cache)
    base = work / "base.sql"
    make_source(base)
    subprocess.run([cmd, "init", "--repo", str(repo)], env=env, check=True, stdout=subprocess.DEVNULL)
    rows = []
    for n in range(runs + 1):
        source = work / "source.sql"
        source.unlink(missing_ok=True)
        shutil.copyfile(base, source)  # a new file each run: read again in full
        with open(source, "rb") as f:
            while f.read(8 << 20):
                pass
        os.sync()
        trace = work / f"strace-{n}.txt"
        argv = [cmd, "snapshot", "--repo", str(repo), str(source)]
        subprocess.run(["strace", "-f", "--seccomp-bpf", "-ttt", "-e", "trace=execve,openat,read",
                        "-o", str(trace), *argv], env=env, check=True, stdout=subprocess.DEVNULL)
        to_read, traced_total = first_read(trace, source)
        shutil.copyfile(base, work / "again.sql")
        os.replace(work / "again.sql", source)
        t0 = time.perf_counter()
        subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL)
        wall = time.perf_counter() - t0
        if n:  # the first round only warms the page cache
            rows.append({"first_read_s": round(to_read, 3), "traced_total_s": round(traced_total, 3),
                         "wall_s": round(wall, 3), "load": os.getloadavg()[0]})
    return rows


def bench_snapshots(work: Path, count: int, runs: int) -> list[float]:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    import dtstore

    repo_dir, cache, small = work / "many", work / "many-cache", work / "small.txt"
    with dtstore.Repository.init(str(repo_dir), PASSWORD, cache_dir=cache) as repo:
        for n in range(count):
            small.write_text(f"night {n}\n")
            repo.snapshot([dtstore.FilesSource([str(small)])], tags=["nightly"])
    cmd, env = dtstore_command(), child_env(cache)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        out = subprocess.run([cmd, "snapshots", "--repo", str(repo_dir)], env=env, check=True,
                             capture_output=True, text=True).stdout
        times.append(round(time.perf_counter() - t0, 3))
        if f"{count} snapshot(s)" not in out:
            raise SystemExit(f"dtstore snapshots did not list {count} snapshots:\n{out[-500:]}")
    return times


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.startup", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--snapshots", type=int, default=1000)
    ap.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "dtstore-bench")
    args = ap.parse_args()
    work = args.workdir / "startup"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    if shutil.which("strace"):
        print("| run | first read of the source s | traced run s | run without strace s | load |")
        print("|---|---|---|---|---|")
        for n, row in enumerate(bench_first_byte(work, args.runs), 1):
            print(f"| {n} | {row['first_read_s']:.3f} | {row['traced_total_s']:.2f} | {row['wall_s']:.2f} | "
                  f"{row['load']:.1f} |")
    else:
        print("strace not found: first-byte times skipped")
    times = bench_snapshots(work, args.snapshots, args.runs)
    print(f"\n`dtstore snapshots` of {args.snapshots} snapshots: " + ", ".join(f"{t:.2f} s" for t in times))
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
