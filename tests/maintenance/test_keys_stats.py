"""Key slots (library and CLI), ``stats``, ``check --read-data-subset`` coverage over repeated runs,
and ``index rebuild --cache-only``."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

import dtstore
from dtstore import FilesSource
from dtstore.crypto.keys import CHEAP_KDF
from dtstore.errors import UsageError, WrongPassword
from dtstore.maintenance.state import VERIFIED, load_times
from dtstore.storage import layout
from tests.helpers import PASSWORD
from tests.maintenance.common import make_repo, open_repo, run_cli, summary

# --- keys --------------------------------------------------------------------------------------------


@pytest.fixture
def url(tmp_path: Path) -> str:
    url = str(tmp_path / "repo")
    with make_repo(url, tmp_path / "c0") as repo:
        src = tmp_path / "src"
        src.mkdir()
        (src / "a.bin").write_bytes(random.Random(1).randbytes(50_000))
        repo.snapshot([FilesSource([str(src)])])
    return url


def opens(url: str, password: str, cache: Path) -> bool:
    try:
        dtstore.Repository.open(url, password, cache_dir=cache).close()
    except WrongPassword:
        return False
    return True


def test_keys_through_the_library(url: str, tmp_path: Path) -> None:
    with open_repo(url, tmp_path / "c1") as repo:
        [first] = repo.keys()
        assert first.current
        with pytest.raises(UsageError, match="last key"):
            repo.remove_key(first.slot_id)
        second = repo.add_key("second password", kdf=CHEAP_KDF)
        assert {k.slot_id: k.current for k in repo.keys()} == {first.slot_id: True, second: False}
        with pytest.raises(UsageError, match="key in use"):
            repo.remove_key(first.slot_id[:8])
        with pytest.raises(UsageError, match="matches 2"):
            repo.remove_key("")
        with pytest.raises(UsageError, match="empty password"):
            repo.add_key("")
    assert opens(url, PASSWORD, tmp_path / "c2") and opens(url, "second password", tmp_path / "c2")
    with open_repo(url, tmp_path / "c3", password="second password") as repo:
        repo.remove_key(first.slot_id[:10])  # a unique prefix will do
        assert [k.slot_id for k in repo.keys()] == [second]
    assert not opens(url, PASSWORD, tmp_path / "c4")
    with open_repo(url, tmp_path / "c5", password="second password") as repo:
        new_slot = repo.change_password("third password", kdf=CHEAP_KDF)
        keys = repo.keys()
        assert [k.slot_id for k in keys] == [new_slot]
        assert keys[0].current, "after change_password the repository still names the removed slot as its own"
        with pytest.raises(UsageError, match="last key"):
            repo.remove_key(new_slot)
    assert not opens(url, "second password", tmp_path / "c6")
    with open_repo(url, tmp_path / "c7", password="third password") as repo:
        assert len(repo.snapshots()) == 1


def test_keys_through_the_cli(url: str, tmp_path: Path) -> None:
    cache = tmp_path / "cli-cache"
    new = tmp_path / "new-password"
    new.write_text("cli password\n")
    code, lines, err = run_cli(url, cache, "key", "list")
    assert code == 0, err
    [only] = [line for line in lines if line["type"] == "key"]
    assert only["current"] and only["kdf"].startswith("scrypt")
    # no new password: refused without a terminal; an empty one is refused too
    code, _, err = run_cli(url, cache, "key", "add")
    assert code == 2 and "--new-password-file" in err
    (tmp_path / "empty").write_text("\n")
    code, _, err = run_cli(url, cache, "key", "add", "--new-password-file", str(tmp_path / "empty"))
    assert code == 2, err
    code, lines, err = run_cli(url, cache, "key", "add", "--new-password-file", str(new))
    assert code == 0, err
    added = summary(lines)["id"]
    code, lines, _ = run_cli(url, cache, "key", "list", password="cli password")
    assert {line["id"]: line["current"] for line in lines if line["type"] == "key"} == {only["id"]: False,
                                                                                         added: True}
    # remove the original key while opened with the new one; then the old password stops working
    code, _, err = run_cli(url, cache, "key", "remove", only["id"][:12], password="cli password")
    assert code == 0, err
    code, _, err = run_cli(url, cache, "snapshots")
    assert code == 12, err
    code, _, err = run_cli(url, cache, "key", "remove", added, password="cli password")
    assert code == 2 and "last key" in err
    # passwd: the new password works, the one before does not
    new.write_text("cli password 2\n")
    code, _, err = run_cli(url, cache, "key", "passwd", "--new-password-file", str(new), password="cli password")
    assert code == 0, err
    assert run_cli(url, cache, "snapshots", password="cli password")[0] == 12
    code, lines, err = run_cli(url, cache, "snapshots", password="cli password 2")
    assert code == 0 and len([line for line in lines if "id" in line]) == 1, err
    assert len(list(Path(url, layout.KEYS).iterdir())) == 1


# --- stats -----------------------------------------------------------------------------------------------


def pack_files(url: str) -> list[Path]:
    return [p for kind in (layout.DATA_PACKS, layout.META_PACKS) for p in Path(url, kind).rglob("*")
            if p.is_file() and not p.name.startswith(".tmp-")]


def test_stats_numbers(tmp_path: Path) -> None:
    url = str(tmp_path / "repo")
    data = random.Random(2).randbytes(300_000)
    with make_repo(url, tmp_path / "c") as repo:
        for n in range(3):  # the same content under three names: stored once
            src = tmp_path / f"src{n}"
            src.mkdir()
            (src / "same.bin").write_bytes(data)
            repo.snapshot([FilesSource([str(src)])])
        stats = repo.stats()
        distinct_chunks = {c for s in repo.snapshots() for item in repo.list_items(s) for c in item.chunks}
    files = pack_files(url)
    assert stats["snapshots"] == 3
    assert stats["packs"] == len(files)
    assert stats["stored_bytes"] == sum(p.stat().st_size for p in files)
    assert stats["logical_bytes"] == 3 * len(data)
    assert stats["dedup_ratio"] == round(3 * len(data) / stats["stored_bytes"], 3)
    assert 2.5 < stats["dedup_ratio"] < 3.0  # compression cannot help random data
    assert stats["chunks_indexed"] >= len(distinct_chunks)
    added = [s["bytes_added"] for s in stats["per_snapshot"]]
    assert added[0] >= len(data) and max(added[1:]) < 5_000
    code, lines, err = run_cli(url, tmp_path / "c2", "stats")
    assert code == 0, err
    cli = summary(lines)
    assert {k: cli[k] for k in ("snapshots", "packs", "stored_bytes", "logical_bytes", "dedup_ratio")} == {
        k: stats[k] for k in ("snapshots", "packs", "stored_bytes", "logical_bytes", "dedup_ratio")}


# --- check --read-data-subset, index rebuild --cache-only -------------------------------------------------


@pytest.fixture
def many_packs(tmp_path: Path) -> str:
    url = str(tmp_path / "repo")
    rng = random.Random(3)
    with make_repo(url, tmp_path / "c") as repo:
        for n in range(4):
            src = tmp_path / f"src{n}"
            src.mkdir()
            for k in range(3):
                (src / f"f{k}").write_bytes(rng.randbytes(150_000))
            repo.snapshot([FilesSource([str(src)])])
    assert len(pack_files(url)) >= 10
    return url


def verified(url: str, cache: Path) -> dict[str, object]:
    with open_repo(url, cache) as repo:
        return dict(load_times(repo.store, repo._sealer, VERIFIED).packs)


def all_pack_ids(url: str) -> set[str]:
    return {p.name for p in pack_files(url)}


def check_subset(url: str, cache: Path, subset: str) -> dict[str, object]:
    code, lines, err = run_cli(url, cache, "check", "--read-data-subset", subset)
    assert code == 0, err
    return summary(lines)


def test_subset_n_of_m_partitions_the_packs(many_packs: str, tmp_path: Path) -> None:
    cache = tmp_path / "cli"
    total = len(all_pack_ids(many_packs))
    seen: set[str] = set()
    counts = []
    for n in (1, 2, 3):
        before = verified(many_packs, cache)
        counts.append(check_subset(many_packs, cache, f"{n}/3")["packs_read"])
        after = verified(many_packs, cache)
        fresh = {p for p, t in after.items() if before.get(p) != t}
        assert len(fresh) == counts[-1] and not fresh & seen
        seen |= fresh
    assert sum(counts) == total and seen == all_pack_ids(many_packs)
    assert all(counts)  # no group is empty with this many packs (not guaranteed in general)


def test_subset_percent_and_size_cover_everything_over_runs(many_packs: str, tmp_path: Path) -> None:
    cache = tmp_path / "cli"
    everything = all_pack_ids(many_packs)
    seen: set[str] = set()
    for run in range(3):  # 34% of the bytes each time, least recently verified first
        before = verified(many_packs, cache)
        read = check_subset(many_packs, cache, "34%")
        after = verified(many_packs, cache)
        fresh = {p for p, t in after.items() if before.get(p) != t}
        assert len(fresh) == read["packs_read"]
        # nothing is read twice while some pack has not been read at all
        assert not fresh & seen or everything - seen <= fresh, f"run {run} read a pack again too early"
        seen |= fresh
    assert seen == everything
    # a size: at least that many bytes, oldest first: starts over with the packs read in the first run
    oldest = min(verified(many_packs, cache).values())
    first_run = {p for p, t in verified(many_packs, cache).items() if t == oldest}
    before = verified(many_packs, cache)
    read = check_subset(many_packs, cache, "300K")
    assert read["bytes_read"] >= 300 * 1024 or read["packs_read"] == len(everything)
    fresh = {p for p, t in verified(many_packs, cache).items() if before.get(p) != t}
    assert fresh <= first_run
    for bad in ("0%", "4/3", "0/2", "lots"):
        code, _, err = run_cli(many_packs, cache, "check", "--read-data-subset", bad)
        assert code == 2, (bad, err)


def test_index_rebuild_cache_only(many_packs: str, tmp_path: Path) -> None:
    cache = tmp_path / "cli"
    segments = len(list(Path(many_packs, layout.INDEX).iterdir()))
    assert run_cli(many_packs, cache, "snapshots")[0] == 0  # fills the cache
    code, lines, err = run_cli(many_packs, cache, "index", "rebuild", "--cache-only")
    assert code == 0, err
    assert summary(lines)["segments_loaded"] == segments
    code, lines, err = run_cli(many_packs, cache, "check")
    assert code == 0 and summary(lines)["ok"], err
    with open_repo(many_packs, tmp_path / "lib") as repo:
        assert repo.rebuild_cache() == segments
        assert repo.check(read_data=True).ok
