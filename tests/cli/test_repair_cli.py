"""The command line of issue 9: check finding damage exits 16; restore restores everything else,
names exactly the files it could not restore and exits 16; the next snapshot heals; ``repair
packs``, ``repair snapshots`` and ``repair index`` (with --dry-run) and the old ``index rebuild``."""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dtstore
from tests.cli.conftest import Result, run_dtstore
from tests.helpers import PASSWORD, repo_objects

Cli = Callable[..., Result]


def events(result: Result) -> list[dict[str, Any]]:
    return [json.loads(line) for line in result.out.splitlines() if line.startswith("{")]


@pytest.fixture
def src(tmp_path: Path) -> Path:
    rng = random.Random(5)
    root = tmp_path / "src"
    root.mkdir()
    for n in range(5):
        (root / f"f{n}.bin").write_bytes(rng.randbytes(30_000 + 7_000 * n))
    (root / "note.txt").write_bytes(b"a small file\n")
    return root


def damage_a_chunk_of(repo_dir: Path, env: dict[str, str], path: Path) -> str:
    """Flip one byte inside the second chunk of ``path`` (as stored in the latest snapshot); → pack ID."""
    with dtstore.Repository.open(str(repo_dir), PASSWORD, cache_dir=Path(env["DTSTORE_CACHE_DIR"])) as repo:
        snap = repo.get_snapshot("latest")
        item = next(i for i in repo.list_items(snap) if "/" + i.name == str(path))
        location = repo._reader().locate(item.chunks[1])
    pack = next(p for p in repo_objects(repo_dir, "data") if p.name == location.pack_id)
    data = bytearray(pack.read_bytes())
    data[location.offset + location.length // 2] ^= 0x04
    pack.write_bytes(bytes(data))
    return location.pack_id


def listing(repo_dir: Path) -> list[str]:
    return sorted(str(p.relative_to(repo_dir)) for p in repo_dir.rglob("*") if p.is_file())


def test_damage_exit_codes_restore_and_healing(cli: Cli, repo_dir: Path, env: dict[str, str], src: Path,
                                               tmp_path: Path) -> None:
    repo = str(repo_dir)
    assert cli("snapshot", "--repo", repo, str(src)).code == 0
    victim = src / "f3.bin"
    pack_id = damage_a_chunk_of(repo_dir, env, victim)
    assert cli("check", "--repo", repo).code == 0  # the structure is intact
    checked = cli("check", "--repo", repo, "--read-data", "--json")
    assert checked.code == 16, checked.err
    problems = [e for e in events(checked) if e["type"] == "problem"]
    assert [p["paths"] for p in problems] == [[str(victim)]]
    text = cli("check", "--repo", repo, "--read-data")
    assert text.code == 16 and "1 problem(s) found" in text.out

    restored = cli("restore", "--repo", repo, "latest", "--target", str(tmp_path / "t"), "--json")
    assert restored.code == 16
    lines = events(restored)
    assert [e["path"] for e in lines if e["type"] == "warning"] == [str(victim)]
    [error] = [e for e in lines if e["type"] == "error"]
    assert error["exit_code"] == 16 and pack_id in error["message"] and str(victim) in error["message"]
    out = tmp_path / "t" / str(src).lstrip("/")
    assert sorted(p.name for p in out.iterdir()) == sorted(p.name for p in src.iterdir() if p != victim)
    assert all((out / p.name).read_bytes() == p.read_bytes() for p in src.iterdir() if p != victim)
    as_text = cli("restore", "--repo", repo, "latest", "--target", str(tmp_path / "t2"))
    assert as_text.code == 16 and f"warning: {victim}: not restored" in as_text.err
    dumped = run_dtstore("dump", "--repo", repo, "latest", str(src / "f1.bin"), env=env)
    assert dumped.returncode == 0 and dumped.stdout == (src / "f1.bin").read_bytes()  # a healthy file

    # the next snapshot stores the damaged chunk afresh: everything is readable and check is clean
    assert cli("snapshot", "--repo", repo, str(src)).code == 0
    clean = cli("check", "--repo", repo, "--read-data", "--json")
    assert clean.code == 0, clean.out
    assert [e["object"] for e in events(clean) if e["type"] == "healed"] == [f"pack {pack_id}"]
    assert events(clean)[-1]["healed"] == 1
    healed_text = cli("check", "--repo", repo, "--read-data")
    assert healed_text.code == 0 and "healed: pack" in healed_text.out and "no problems found" in healed_text.out
    for number, snap in enumerate(["latest", events(cli("snapshots", "--repo", repo, "--json"))[0]["id"]]):
        target = tmp_path / f"healed{number}"
        assert cli("restore", "--repo", repo, snap, "--target", str(target)).code == 0
        assert (target / str(victim).lstrip("/")).read_bytes() == victim.read_bytes()


def test_repair_commands(cli: Cli, repo_dir: Path, env: dict[str, str], src: Path, tmp_path: Path) -> None:
    repo = str(repo_dir)
    assert cli("snapshot", "--repo", repo, str(src)).code == 0
    victim = src / "f2.bin"
    pack_id = damage_a_chunk_of(repo_dir, env, victim)
    victim.unlink()  # the content is gone from the source: healing by a backup is impossible
    assert cli("check", "--repo", repo, "--read-data").code == 16

    before = listing(repo_dir)
    dry = cli("repair", "--repo", repo, "packs", "--dry-run", "--json")
    assert dry.code == 0, dry.err
    [pack] = [e for e in events(dry) if e["type"] == "pack"]
    assert pack["pack_id"] == pack_id and pack["lost_chunks"] == 1 and pack["copied"] == 0
    dry_snaps = cli("repair", "--repo", repo, "snapshots", "--dry-run")
    assert dry_snaps.code == 0 and f"{victim} would be truncated" in dry_snaps.out
    assert cli("repair", "--repo", repo, "index", "--dry-run", "--json").code == 0
    assert listing(repo_dir) == before  # dry runs write nothing

    salvaged = cli("repair", "--repo", repo, "packs", "--json")
    assert salvaged.code == 0, salvaged.err
    assert events(salvaged)[-1]["salvaged_chunks"] == pack["salvage_chunks"] > 0
    assert (repo_dir / "data" / pack_id[:2] / pack_id).exists()  # never deleted by repair

    old_id = events(cli("snapshots", "--repo", repo, "--json"))[0]["id"]
    repaired = cli("repair", "--repo", repo, "snapshots", "--forget", "--json")
    assert repaired.code == 0, repaired.err
    [change] = [e for e in events(repaired) if e["type"] == "repair"]
    assert change["snapshot_id"] == old_id and change["forgotten"] and change["new_id"]
    assert [(c["path"], c["action"]) for c in change["changes"]] == [(str(victim), "truncated")]
    [snap] = events(cli("snapshots", "--repo", repo, "--json"))
    assert snap["id"] == change["new_id"] and "repaired" in snap["tags"] and snap["original"] == old_id

    assert cli("prune", "--repo", repo, "--exclusive", "--grace", "0").code == 0
    assert not (repo_dir / "data" / pack_id[:2] / pack_id).exists()
    assert cli("check", "--repo", repo, "--read-data").code == 0
    assert cli("restore", "--repo", repo, "latest", "--target", str(tmp_path / "t")).code == 0
    # the old name still works
    rebuilt = cli("index", "--repo", repo, "rebuild", "--json")
    assert rebuilt.code == 0 and events(rebuilt)[-1]["unreadable"] == []
    again = cli("repair", "--repo", repo, "index")
    assert again.code == 0 and "index rebuilt from" in again.out
    nothing = cli("repair", "--repo", repo, "snapshots")
    assert nothing.code == 0 and "no snapshot refers to lost data" in nothing.out
