"""Domino benchmark: a second full of a data directory with 2 % of the mail files changed, dtstore
(direct mode, the file cache) beside ``restic backup`` of the same tree.

Run from the repository root::

    python -m bench.bench_domino --size 2G                 # about 3 minutes on 2 cores
    python -m bench.bench_domino --size 200M --json r.json --workdir /var/tmp/b

What it does:

1. builds a simulated Domino server (``tests/sim/domino``): the system databases and ``mail/`` files
   of equal size summing to about ``--size``, DAOS objects, NOTES.INI, two 64 MiB extents.  Database
   bodies are random bytes (incompressible), so the figures measure what is sent again, not
   compression;
2. first full: ``dtstore snapshot domino://…`` (in process, ``Repository.snapshot``) and
   ``restic backup DIR`` (the data and log directories);
3. changes 2 % of the mail files the way mail arrives: 32 scattered 4 KiB pages rewritten and 512 KiB
   appended in each;
4. second full with both tools: seconds and bytes added to each repository (its size on disk before
   and after).

The HCL documentation's point (a nightly full copy of every NSF "doesn't really scale" unless the
store deduplicates) is what step 4 shows.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import dtstore
from dtstore.connectors import make_source
from dtstore.crypto.keys import CHEAP_KDF
from dtstore.sources.excludes import parse_size
from tests.sim.domino.server import HEADER, DominoSim

RESTIC_PASSWORD = "bench-restic-pw"


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def build(root: Path, size: int, users: int) -> DominoSim:
    sim = DominoSim(root)
    db_size = max(64 << 10, size // (users + 7))
    sim.init(extent_size=64 << 20, db_size=db_size, mail_users=users)
    sim.write(extents=1, record=4 << 20, databases=0)
    return sim


def change_mail(sim: DominoSim, share: float, seed: int = 7) -> list[str]:
    rng = random.Random(seed)
    mail = [n for n in sim.databases() if n.startswith("mail/")]
    chosen = sorted(rng.sample(mail, max(1, round(len(mail) * share))))
    for name in chosen:
        path = sim.data / name
        size = path.stat().st_size
        with open(path, "r+b") as f:
            for _ in range(32):
                f.seek(HEADER + rng.randrange(max(1, size - HEADER - 4096)))
                f.write(rng.randbytes(4096))
            f.seek(0, os.SEEK_END)
            f.write(rng.randbytes(512 << 10))
    return chosen


def dtstore_full(repo_path: Path, cache: Path, sim: DominoSim) -> dict[str, Any]:
    before = tree_bytes(repo_path)
    started = time.monotonic()
    with dtstore.Repository.open(str(repo_path), "bench", cache_dir=cache) as repo:
        snap = repo.snapshot([make_source(f"domino://{sim.data}", repo=repo, mode="full")])  # type: ignore[list-item]
    seconds = time.monotonic() - started
    return {"seconds": round(seconds, 2), "added_bytes": tree_bytes(repo_path) - before,
            "bytes_read": snap.summary["bytes_read"], "files_unchanged": snap.summary["files_unchanged"],
            "files": snap.summary["files"]}


def restic_full(env: dict[str, str], repo_path: Path, sim: DominoSim) -> dict[str, Any]:
    before = tree_bytes(repo_path)
    started = time.monotonic()
    done = subprocess.run(["restic", "backup", "--json", "--quiet", str(sim.data), str(sim.translog)],
                          env=env, capture_output=True, text=True, check=True)
    seconds = time.monotonic() - started
    summary = next((json.loads(line) for line in done.stdout.splitlines()
                    if line.startswith("{") and '"summary"' in line), {})
    return {"seconds": round(seconds, 2), "added_bytes": tree_bytes(repo_path) - before,
            "data_added": summary.get("data_added"), "files_unmodified": summary.get("files_unmodified")}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--size", default="2G", help="data directory size (default 2G)")
    p.add_argument("--users", type=int, default=200, help="mail files (default 200)")
    p.add_argument("--share", type=float, default=0.02, help="share of mail files changed (default 0.02)")
    p.add_argument("--workdir", type=Path, help="where to work (default: a temporary folder, removed)")
    p.add_argument("--json", type=Path, help="write the results here")
    args = p.parse_args(argv)
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-domino-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        sim = build(work / "srv", parse_size(args.size), args.users)
        data_bytes = tree_bytes(sim.data) + tree_bytes(sim.translog)
        dt_repo = work / "dtstore"
        dtstore.Repository.init(str(dt_repo), "bench", kdf=CHEAP_KDF, cache_dir=work / "dt-cache").close()
        env = {**os.environ, "RESTIC_REPOSITORY": str(work / "restic"), "RESTIC_PASSWORD": RESTIC_PASSWORD,
               "RESTIC_CACHE_DIR": str(work / "restic-cache")}
        subprocess.run(["restic", "init", "--quiet"], env=env, check=True, capture_output=True)
        results: dict[str, Any] = {"data_bytes": data_bytes, "mail_files": args.users, "share": args.share}
        results["full1"] = {"dtstore": dtstore_full(dt_repo, work / "dt-cache", sim),
                            "restic": restic_full(env, work / "restic", sim)}
        results["changed"] = change_mail(sim, args.share)
        results["full2"] = {"dtstore": dtstore_full(dt_repo, work / "dt-cache", sim),
                            "restic": restic_full(env, work / "restic", sim)}
        version = subprocess.run(["restic", "version"], capture_output=True, text=True, check=False).stdout.strip()
        results["restic_version"] = version
        print(json.dumps(results, indent=1))
        mib = 1 << 20
        for step in ("full1", "full2"):
            d, r = results[step]["dtstore"], results[step]["restic"]
            print(f"{step}: dtstore {d['seconds']} s +{d['added_bytes'] / mib:.1f} MiB | "
                  f"restic {r['seconds']} s +{r['added_bytes'] / mib:.1f} MiB")
        if args.json:
            args.json.write_text(json.dumps(results, indent=1))
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
