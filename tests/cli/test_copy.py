"""Issue 17, the rest: ``copy`` between repositories (with and without shared chunk keys from
``init --copy-chunker-from``), ``mount`` (FUSE), and ``snapshots`` with kinds and restore windows."""

from __future__ import annotations

import datetime as dt
import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

from dtstore import Repository
from dtstore.connectors import points
from dtstore.mount import MountError, MountTree, fuse_available
from dtstore.snapshots.manifest import Snapshot
from tests.cli import test_forget_chains as chains
from tests.cli.conftest import Result
from tests.helpers import PASSWORD, make_sample_tree, random_bytes, tree_state

Cli = Callable[..., Result]
OTHER_PASSWORD = "another password entirely"


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def pack_bytes(repo: Path) -> int:
    return sum(p.stat().st_size for prefix in ("data", "meta") for p in (repo / prefix).rglob("*") if p.is_file())


def restored(cli: Cli, repo: Path | str, ref: str, target: Path, password: str | None = None,
             monkeypatch: pytest.MonkeyPatch | None = None) -> dict[str, tuple[str, int, int, bytes]]:
    """What restoring ``ref`` gives below the backed-up folder (its parents are made at restore time)."""
    if password is not None and monkeypatch is not None:
        monkeypatch.setenv("DTSTORE_PASSWORD", password)
    result = cli("restore", "--repo", str(repo), ref, "--target", str(target))
    assert result.code == 0, result.err
    if monkeypatch is not None:
        monkeypatch.setenv("DTSTORE_PASSWORD", PASSWORD)
    (top,) = [p for p in target.rglob("small.txt") if p.parent.name == "data"]
    return tree_state(top.parent)


@pytest.fixture
def source(cli: Cli, repo_dir: Path, tmp_path: Path) -> dict[str, Any]:
    """A repository with two snapshots of a sample tree (the second after an edit), two hosts, tags."""
    data = tmp_path / "data"
    make_sample_tree(data)
    assert cli("snapshot", "--repo", str(repo_dir), "--host", "h1", "--tag", "nightly", str(data)).code == 0
    (data / "big.bin").write_bytes(random_bytes(150_000, seed=1)[:100_000] + random_bytes(60_000, seed=7))
    assert cli("snapshot", "--repo", str(repo_dir), "--host", "h2", str(data)).code == 0
    ids = [o["id"] for o in lines(cli("snapshots", "--repo", str(repo_dir), "--json").out)]
    return {"repo": repo_dir, "data": data, "ids": ids}


def init_target(cli: Cli, path: Path, monkeypatch: pytest.MonkeyPatch, *, chunker_from: Path | None) -> None:
    monkeypatch.setenv("DTSTORE_PASSWORD", OTHER_PASSWORD)
    monkeypatch.setenv("DTSTORE_FROM_PASSWORD", PASSWORD)
    args = ["init", "--repo", str(path), "--json"]
    if chunker_from is not None:
        args += ["--copy-chunker-from", str(chunker_from)]
    result = cli(*args)
    monkeypatch.setenv("DTSTORE_PASSWORD", PASSWORD)
    assert result.code == 0, result.err


def copy(cli: Cli, source: Path, target: Path, monkeypatch: pytest.MonkeyPatch, *args: str) -> Result:
    monkeypatch.setenv("DTSTORE_TO_PASSWORD", OTHER_PASSWORD)
    return cli("copy", "--repo", str(source), "--to-repo", str(target), "--json", *args)


def open_repo(path: Path, password: str, cache: Path) -> Repository:
    return Repository.open(str(path), password, cache_dir=cache)


# copy: shared chunk keys -----------------------------------------------------------------------------------------

def test_copy_with_shared_chunk_keys_round_trips_and_adds_nothing_the_second_time(
        cli: Cli, source: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    target = tmp_path / "target"
    init_target(cli, target, monkeypatch, chunker_from=source["repo"])
    cache = Path(env["DTSTORE_CACHE_DIR"])
    with open_repo(source["repo"], PASSWORD, cache) as src, open_repo(target, OTHER_PASSWORD, cache) as tgt:
        assert tgt.config.features == ("chunk-keys",)
        assert tgt.config.chunker == src.config.chunker and tgt.config.meta_chunker == src.config.meta_chunker
        assert tgt.chunk_keys == src.chunk_keys and tgt.master.secret != src.master.secret

    first = copy(cli, source["repo"], target, monkeypatch)
    assert first.code == 0, first.err
    events = lines(first.out)
    copies = [e for e in events if e["type"] == "copy"]
    assert [c["snapshot_id"] for c in copies] == source["ids"] and not any(c["skipped"] for c in copies)
    assert copies[0]["bytes_added"] > 0 and copies[1]["bytes_added"] > 0
    # the second snapshot shares most chunks with the first: only what changed travels
    assert copies[1]["chunks_reused"] > 0 and copies[1]["bytes_read"] < copies[0]["bytes_read"]
    summary = events[-1]
    assert summary["type"] == "summary" and summary["copied"] == 2 and summary["skipped"] == 0
    assert summary["bytes_added"] == copies[0]["bytes_added"] + copies[1]["bytes_added"] == pack_bytes(target)

    for original, copied in zip(source["ids"], (c["copy_id"] for c in copies), strict=True):
        want = restored(cli, source["repo"], original, tmp_path / f"from-source-{original[:8]}")
        got = restored(cli, target, copied, tmp_path / f"from-copy-{copied[:8]}", OTHER_PASSWORD, monkeypatch)
        assert got == want and len(got) > 5

    with open_repo(source["repo"], PASSWORD, cache) as src, open_repo(target, OTHER_PASSWORD, cache) as tgt:
        for snap, copied in zip(src.snapshots(), tgt.snapshots(), strict=True):
            assert copied.original == snap.id and copied.items_chunks == snap.items_chunks  # the same chunk IDs
            assert (copied.time, copied.host, copied.tags) == (snap.time, snap.host, snap.tags)
            assert copied.paths == snap.paths
        assert tgt.snapshots()[1].parent is None or tgt.snapshots()[1].parent == tgt.snapshots()[0].id

    before = pack_bytes(target)
    second = copy(cli, source["repo"], target, monkeypatch)
    assert second.code == 0, second.err
    again = [e for e in lines(second.out) if e["type"] == "copy"]
    assert all(e["skipped"] and e["bytes_added"] == 0 for e in again) and len(again) == 2
    assert lines(second.out)[-1]["bytes_added"] == 0 and pack_bytes(target) == before
    assert cli("snapshots", "--repo", str(target)).code == 12  # the target has its own password
    monkeypatch.setenv("DTSTORE_PASSWORD", OTHER_PASSWORD)
    assert len(lines(cli("snapshots", "--repo", str(target), "--json").out)) == 2

    # a new backup straight into the copy dedupes against the copied chunks: same keys, same cuts
    made = cli("snapshot", "--repo", str(target), "--json", str(source["data"]))
    assert made.code == 0, made.err
    assert lines(made.out)[-1]["bytes_stored"] == 0


def test_copy_back_and_after_a_retag_is_skipped(cli: Cli, source: dict[str, Any], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "target"
    init_target(cli, target, monkeypatch, chunker_from=source["repo"])
    assert copy(cli, source["repo"], target, monkeypatch).code == 0
    # tag rewrites the source's manifests (new IDs, `original` kept): still the same snapshots
    assert cli("tag", "--repo", str(source["repo"]), "--add", "copied").code == 0
    again = lines(copy(cli, source["repo"], target, monkeypatch).out)
    assert [e["skipped"] for e in again if e["type"] == "copy"] == [True, True]
    # and copying the copies back finds them in the source
    monkeypatch.setenv("DTSTORE_PASSWORD", OTHER_PASSWORD)
    monkeypatch.setenv("DTSTORE_TO_PASSWORD", PASSWORD)
    back = cli("copy", "--repo", str(target), "--to-repo", str(source["repo"]), "--json")
    assert back.code == 0, back.err
    assert [e["skipped"] for e in lines(back.out) if e["type"] == "copy"] == [True, True]


def test_copy_chooses_snapshots_by_id_or_filter(cli: Cli, source: dict[str, Any], tmp_path: Path,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "target"
    init_target(cli, target, monkeypatch, chunker_from=source["repo"])
    one = copy(cli, source["repo"], target, monkeypatch, "--host", "h2")
    assert [e["snapshot_id"] for e in lines(one.out) if e["type"] == "copy"] == [source["ids"][1]]
    two = copy(cli, source["repo"], target, monkeypatch, source["ids"][0][:10])
    assert [(e["snapshot_id"], e["skipped"]) for e in lines(two.out) if e["type"] == "copy"] == [
        (source["ids"][0], False)]
    text = cli("copy", "--repo", str(source["repo"]), "--to-repo", str(target))
    assert text.code == 0 and "0 snapshot(s) copied, 2 already there" in text.out


def test_copy_offsite_to_s3(cli: Cli, source: dict[str, Any], s3_env: str, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    """The everyday use: a local repository copied to S3 (moto), made with the local one's chunker."""
    monkeypatch.setenv("DTSTORE_FROM_PASSWORD", PASSWORD)
    monkeypatch.setenv("DTSTORE_PASSWORD", OTHER_PASSWORD)
    assert cli("init", "--repo", s3_env, "--copy-chunker-from", str(source["repo"])).code == 0
    monkeypatch.setenv("DTSTORE_PASSWORD", PASSWORD)
    monkeypatch.setenv("DTSTORE_TO_PASSWORD", OTHER_PASSWORD)
    first = cli("copy", "--repo", str(source["repo"]), "--to-repo", s3_env, "--json")
    assert first.code == 0, first.err
    copies = [e for e in lines(first.out) if e["type"] == "copy"]
    assert [c["skipped"] for c in copies] == [False, False] and lines(first.out)[-1]["bytes_added"] > 0
    again = cli("copy", "--repo", str(source["repo"]), "--to-repo", s3_env, "--json")
    assert lines(again.out)[-1] == {"type": "summary", "copied": 0, "skipped": 2, "bytes_added": 0, "bytes_read": 0}
    want = restored(cli, source["repo"], "latest", tmp_path / "local")
    got = restored(cli, s3_env, "latest", tmp_path / "s3", OTHER_PASSWORD, monkeypatch)
    assert got == want


# copy: different chunk keys ----------------------------------------------------------------------------------------

def test_copy_without_shared_keys_rehashes(cli: Cli, source: dict[str, Any], tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    target = tmp_path / "target"
    init_target(cli, target, monkeypatch, chunker_from=None)
    result = copy(cli, source["repo"], target, monkeypatch, source["ids"][0])
    assert result.code == 0, result.err
    copies = [e for e in lines(result.out) if e["type"] == "copy"]
    # a later run does not know which target IDs the chunks got: it reads them all again, and the
    # re-hashed IDs dedupe what the target holds
    result = copy(cli, source["repo"], target, monkeypatch)
    assert result.code == 0, result.err
    copies += [e for e in lines(result.out) if e["type"] == "copy" and not e["skipped"]]
    assert len(copies) == 2 and copies[1]["chunks_reused"] > 0 and copies[1]["bytes_read"] > 150_000
    assert copies[1]["bytes_added"] < copies[0]["bytes_added"] / 2
    for original, copied in zip(source["ids"], (c["copy_id"] for c in copies), strict=True):
        want = restored(cli, source["repo"], original, tmp_path / f"s-{original[:8]}")
        got = restored(cli, target, copied, tmp_path / f"t-{copied[:8]}", OTHER_PASSWORD, monkeypatch)
        assert got == want
    cache = Path(env["DTSTORE_CACHE_DIR"])
    with open_repo(source["repo"], PASSWORD, cache) as src, open_repo(target, OTHER_PASSWORD, cache) as tgt:
        assert tgt.config.features == () and tgt.chunk_keys != src.chunk_keys
        snap, copied_snap = src.snapshots()[0], tgt.snapshots()[0]
        assert copied_snap.original == snap.id and copied_snap.items_chunks != snap.items_chunks
    before = pack_bytes(target)
    again = lines(copy(cli, source["repo"], target, monkeypatch).out)
    assert all(e["skipped"] for e in again if e["type"] == "copy") and again[-1]["bytes_added"] == 0
    assert pack_bytes(target) == before


def test_check_passes_on_both_kinds_of_copy(cli: Cli, source: dict[str, Any], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    for name, chunker_from in (("shared", source["repo"]), ("own", None)):
        target = tmp_path / name
        init_target(cli, target, monkeypatch, chunker_from=chunker_from)
        assert copy(cli, source["repo"], target, monkeypatch).code == 0
        monkeypatch.setenv("DTSTORE_PASSWORD", OTHER_PASSWORD)
        checked = cli("check", "--repo", str(target), "--read-data")
        monkeypatch.setenv("DTSTORE_PASSWORD", PASSWORD)
        assert checked.code == 0, checked.out + checked.err


# copy and init: errors -----------------------------------------------------------------------------------------------

def test_copy_and_init_errors(cli: Cli, source: dict[str, Any], tmp_path: Path,
                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTSTORE_TO_PASSWORD", PASSWORD)
    same = cli("copy", "--repo", str(source["repo"]), "--to-repo", str(source["repo"]))
    assert same.code == 2 and "same repository" in same.err
    monkeypatch.delenv("DTSTORE_TO_PASSWORD")
    missing = cli("copy", "--repo", str(source["repo"]), "--to-repo", str(tmp_path / "nowhere"))
    assert missing.code == 2 and "DTSTORE_TO_PASSWORD" in missing.err
    monkeypatch.setenv("DTSTORE_TO_PASSWORD", "x")
    assert cli("copy", "--repo", str(source["repo"]), "--to-repo", str(tmp_path / "nowhere")).code == 10
    assert cli("copy", "--repo", str(source["repo"])).code == 2  # --to-repo is required

    monkeypatch.delenv("DTSTORE_FROM_PASSWORD", raising=False)
    no_from = cli("init", "--repo", str(tmp_path / "t1"), "--copy-chunker-from", str(source["repo"]))
    assert no_from.code == 2 and "DTSTORE_FROM_PASSWORD" in no_from.err and not (tmp_path / "t1").exists()
    monkeypatch.setenv("DTSTORE_FROM_PASSWORD", "wrong")
    wrong = cli("init", "--repo", str(tmp_path / "t2"), "--copy-chunker-from", str(source["repo"]))
    assert wrong.code == 12 and not (tmp_path / "t2").exists()
    (tmp_path / "pw").write_text(PASSWORD + "\n")
    monkeypatch.delenv("DTSTORE_FROM_PASSWORD")
    monkeypatch.setenv("DTSTORE_FROM_PASSWORD_FILE", str(tmp_path / "pw"))
    ok = cli("init", "--repo", str(tmp_path / "t3"), "--copy-chunker-from", str(source["repo"]), "--json")
    assert ok.code == 0, ok.err
    assert lines(ok.out)[-1]["chunker_from"] and "chunker_from" in lines(ok.out)[-1]


def test_a_reader_without_the_feature_refuses_a_config_with_chunk_keys(source: dict[str, Any], tmp_path: Path,
                                                                        env: dict[str, str],
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from dtstore import format as fmt
    from tests.helpers import init_repo

    cache = Path(env["DTSTORE_CACHE_DIR"])
    with open_repo(source["repo"], PASSWORD, cache) as src:
        init_repo(str(tmp_path / "t"), cache, copy_chunker_from=src).close()
    monkeypatch.setattr(fmt, "KNOWN_FEATURES", frozenset())
    from dtstore.errors import UnsupportedFormat

    with pytest.raises(UnsupportedFormat, match="chunk-keys"):
        Repository.open(str(tmp_path / "t"), PASSWORD, cache_dir=cache)


# mount ----------------------------------------------------------------------------------------------------------------

def test_mount_tree_layout_and_reads(source: dict[str, Any], env: dict[str, str]) -> None:
    """The file system without FUSE: runs everywhere."""
    cache = Path(env["DTSTORE_CACHE_DIR"])
    with open_repo(source["repo"], PASSWORD, cache) as repo:
        snaps = repo.snapshots()
        tree = MountTree(repo, time_name=lambda t: t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ"))
        assert tree.readdir("/") == [".", "..", "hosts", "ids", "snapshots", "tags"]
        names = tree.readdir("/snapshots")[2:]
        assert len(names) == 3 and "latest" in names
        assert tree.readlink("/snapshots/latest") == sorted(n for n in names if n != "latest")[-1]
        assert tree.readdir("/hosts")[2:] == ["h1", "h2"] and tree.readdir("/tags")[2:] == ["nightly"]
        assert tree.readdir("/ids")[2:] == sorted(s.short_id for s in snaps)
        data = source["data"]
        first = f"/ids/{snaps[0].short_id}{data}"
        assert set(tree.readdir(first)) >= {"small.txt", "big.bin", "sub", "empty"}
        attrs = tree.getattr(f"{first}/script.sh")
        assert attrs["st_mode"] & 0o777 == 0o555 and attrs["st_size"] == (data / "script.sh").stat().st_size
        assert attrs["st_mtime"] == (data / "script.sh").stat().st_mtime_ns
        big = random_bytes(150_000, seed=1)
        handle = tree.open(f"/tags/nightly/{tree.readlink('/tags/nightly/latest')}{data}/big.bin", os.O_RDONLY)
        assert tree.read(handle, 1000, 0) == big[:1000]
        assert tree.read(handle, 70_000, 40_000) == big[40_000:110_000]
        assert tree.read(handle, 10, len(big) - 4) == big[-4:] and tree.read(handle, 10, len(big) + 10) == b""
        tree.release(handle)
        with pytest.raises(MountError) as no_write:
            tree.open(f"{first}/small.txt", os.O_WRONLY)
        assert no_write.value.errno == errno.EROFS
        with pytest.raises(MountError) as absent:
            tree.getattr(f"{first}/no-such-file")
        assert absent.value.errno == errno.ENOENT
        name = os.fsdecode(b"latin1-\xe9t\xe9-\xff.dat")
        assert name in tree.readdir(first)
        handle = tree.open(f"{first}/{name}", os.O_RDONLY)
        assert tree.read(handle, 100, 0) == b"bytes name\n"


def _wait_for(predicate: Callable[[], bool], seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def _start_mount(repo: Path, point: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    if not os.path.exists("/dev/fuse"):
        pytest.skip("/dev/fuse does not exist on this machine: FUSE cannot be used here")
    why = fuse_available()
    assert why is None, f"FUSE is there but dtstore cannot use it: {why} (.ci/run installs fuse3 and dtstore[mount])"
    assert shutil.which("fusermount3") or shutil.which("fusermount"), "the fuse3 package is not installed"
    point.mkdir()
    process = subprocess.Popen([sys.executable, "-m", "dtstore.cli", "mount", "--repo", str(repo), str(point),
                                "--utc"], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               stdin=subprocess.DEVNULL)
    assert _wait_for(lambda: os.path.ismount(point) or process.poll() is not None), "mount did not appear"
    assert process.poll() is None, process.communicate()
    return process


@pytest.fixture
def mounted(source: dict[str, Any], tmp_path: Path, env: dict[str, str]) -> Iterator[Path]:
    point = tmp_path / "mnt"
    process = _start_mount(source["repo"], point, env)
    try:
        yield point
    finally:
        unmount = shutil.which("fusermount3") or shutil.which("fusermount") or "umount"
        subprocess.run([unmount, "-u", str(point)] if "fuser" in unmount else [unmount, str(point)], check=False,
                       capture_output=True)
        try:
            _, err = process.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            _, err = process.communicate()
        assert process.returncode == 0, err.decode()


def test_mount_serves_snapshots_read_only(mounted: Path, source: dict[str, Any]) -> None:
    data: Path = source["data"]
    assert sorted(os.listdir(mounted)) == ["hosts", "ids", "snapshots", "tags"]
    times = sorted(n for n in os.listdir(mounted / "snapshots") if n != "latest")
    assert len(times) == 2 and all("Z" in t for t in times)  # --utc (a tie in one second: "-1")
    assert os.readlink(mounted / "snapshots" / "latest") == times[-1]
    latest = mounted / "snapshots" / "latest" / data.relative_to("/")
    # the second snapshot is the tree as it is now: the same names, every file byte-identical, the
    # same mtimes and modes without the write bits, symlinks with their targets
    seen, want = tree_state(latest), tree_state(data)
    assert seen.keys() == want.keys()
    for rel, (kind, mode, mtime, content) in want.items():
        assert seen[rel][0] == kind and seen[rel][1] == mode & ~0o222, rel
        if kind != "dir":
            assert seen[rel][2:] == (mtime, content), rel
    first = mounted / "hosts" / "h1" / "latest" / data.relative_to("/") / "big.bin"
    assert first.read_bytes() == random_bytes(150_000, seed=1)
    assert (mounted / "tags" / "nightly" / times[0]).is_dir()
    ids = sorted(os.listdir(mounted / "ids"))
    assert ids == sorted(i[:8] for i in source["ids"])
    with pytest.raises(OSError) as refused:
        (latest / "small.txt").write_bytes(b"x")
    assert refused.value.errno in (errno.EROFS, errno.EACCES, errno.EPERM)
    with pytest.raises(OSError):
        (latest / "new-file").write_bytes(b"x")


def test_mount_ends_cleanly_on_ctrl_c(source: dict[str, Any], tmp_path: Path, env: dict[str, str]) -> None:
    point = tmp_path / "mnt"
    process = _start_mount(source["repo"], point, env)
    try:
        assert sorted(os.listdir(point)) == ["hosts", "ids", "snapshots", "tags"]
        process.send_signal(signal.SIGINT)
        _, err = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
        if os.path.ismount(point):
            subprocess.run(["fusermount3", "-u", str(point)], check=False)
    assert process.returncode == 0, err.decode()
    assert not os.path.ismount(point) and b"serving" in err


# snapshots: kinds and restore windows; restore-points honours --utc -----------------------------------------------

@pytest.fixture
def chain_repo(cli: Cli, repo_dir: Path, monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> Path:
    monkeypatch.setattr(points, "CHAIN_MODULES", MappingProxyType({**points.CHAIN_MODULES,
                                                                   chains.KIND: chains.__name__}))
    t0 = chains.T0
    metas = [
        {"mode": "full", "start": 100, "end": 100, "until": chains.iso(t0)},
        {"mode": "log", "start": 100, "end": 200, "until": chains.iso(t0 + dt.timedelta(hours=1))},
        {"mode": "log", "start": 200, "end": 300, "until": chains.iso(t0 + dt.timedelta(hours=2, minutes=45))},
        {"mode": "log", "start": 400, "end": 500, "until": chains.iso(t0 + dt.timedelta(hours=5))},  # a gap before it
    ]
    with Repository.open(str(repo_dir), PASSWORD, cache_dir=Path(env["DTSTORE_CACHE_DIR"])) as repo:
        for meta in metas:
            repo.snapshot([chains.ChainSource(meta)])  # type: ignore[list-item]
    return repo_dir


def test_snapshots_show_kind_and_the_window_each_log_extends(cli: Cli, chain_repo: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    data = tmp_path / "files"
    data.mkdir()
    (data / "f").write_text("x")
    assert cli("snapshot", "--repo", str(chain_repo), str(data)).code == 0
    records = lines(cli("snapshots", "--repo", str(chain_repo), "--json").out)
    assert [r["kind"] for r in records] == ["full", "log", "log", "log", None]
    t0 = chains.T0
    assert records[0]["restore_window"] is None and records[4]["restore_window"] is None
    assert records[1]["restore_window"] == {"from": chains.iso(t0), "to": chains.iso(t0 + dt.timedelta(hours=1))}
    assert records[2]["restore_window"] == {"from": chains.iso(t0),
                                            "to": chains.iso(t0 + dt.timedelta(hours=2, minutes=45))}
    assert records[3]["restore_window"] is None  # no chain reaches it

    monkeypatch.setenv("COLUMNS", "400")
    text = cli("snapshots", "--repo", str(chain_repo), "--utc").out.splitlines()
    assert text[0].split() == ["ID", "Time", "Host", "Kind", "Source", "Size", "Tags", "Paths"]
    assert [line.split()[4] for line in text[1:6]] == ["full", "log", "log", "log", "-"]  # date, time: 2 words
    assert "log → 2026-03-02 02:00:00Z" in text[2] and "log → 2026-03-02 03:45:00Z" in text[3]
    assert "log (unreachable)" in text[4]
    monkeypatch.setenv("COLUMNS", "80")
    narrow = cli("snapshots", "--repo", str(chain_repo)).out.splitlines()
    assert all(len(line) <= 80 for line in narrow) and any("…" in line for line in narrow), narrow
    assert len(narrow) == 7 and narrow[0].split() == text[0].split()


def test_restore_points_follow_the_time_rule(cli: Cli, chain_repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TZ", "Asia/Kolkata")
    time.tzset()
    try:
        utc = cli("restore-points", "--repo", str(chain_repo), "--utc").out
        local = cli("restore-points", "--repo", str(chain_repo)).out
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
    assert "2026-03-02 01:00:00Z … 2026-03-02 03:45:00Z" in utc, utc
    assert "2026-03-02 06:30:00 … 2026-03-02 09:15:00" in local, local
    assert "T01:00:00Z" not in utc + local
    source = points.restore_points([])
    assert source == []


def test_describe_keeps_its_default_format(chain_repo: Path, env: dict[str, str]) -> None:
    with Repository.open(str(chain_repo), PASSWORD, cache_dir=Path(env["DTSTORE_CACHE_DIR"])) as repo:
        snaps: list[Snapshot] = repo.snapshots()
    (source,) = points.restore_points(snaps)
    assert "2026-03-02T01:00:00Z … 2026-03-02T03:45:00Z" in source.describe()[0]
