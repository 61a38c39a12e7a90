"""The ``dtstore`` command-line contract of issue 2: commands, SNAPSHOT references, passwords, JSON
output and exit codes."""

from __future__ import annotations

import builtins
import ctypes
import datetime as dt
import errno
import json
import os
import random
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import dtstore.restore as restore_module
import dtstore.sources.files as files_module
from dtstore import Repository
from dtstore.compression import DEFAULT as DEFAULT_COMPRESSION
from dtstore.compression import Zstd
from tests.cli.conftest import Result, run_dtstore
from tests.helpers import (
    NON_UTF8_NAME,
    PASSWORD,
    UNICODE_NAME,
    flip_byte,
    make_sample_tree,
    random_bytes,
    restored,
    tree_state,
)

Cli = Callable[..., Result]


def make_utf8_tree(root: Path) -> dict[str, bytes]:
    """Only UTF-8 names (in-process runs print through pytest's strict UTF-8 capture)."""
    files = {
        "small.txt": b"hello\n",
        "empty": b"",
        "big.bin": random_bytes(120_000, seed=21),
        "sub/deep/file.txt": b"deep\n" * 500,
        UNICODE_NAME: "unicode ✓\n".encode(),
    }
    for rel, data in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    os.symlink("small.txt", root / "link")
    return files


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = text.splitlines()
    assert lines, "no output"
    parsed = []
    for line in lines:
        obj = json.loads(line)
        assert isinstance(obj, dict), line
        parsed.append(obj)
    return parsed


def snapshot_ids(cli: Cli, repo: Path) -> list[str]:
    result = cli("snapshots", "--repo", str(repo), "--json")
    assert result.code == 0, result.err
    return [o["id"] for o in json_lines(result.out)] if result.out.strip() else []


@pytest.fixture
def src(tmp_path: Path) -> Path:
    root = tmp_path / "src"
    root.mkdir()
    make_utf8_tree(root)
    return root


# init ----------------------------------------------------------------------------------------

def test_init_creates_a_repository_once(cli: Cli, tmp_path: Path) -> None:
    repo = tmp_path / "new-repo"
    result = cli("init", "--repo", str(repo), "--json")
    assert result.code == 0, result.err
    (summary,) = json_lines(result.out)
    assert summary["type"] == "summary"
    assert re.fullmatch(r"[0-9a-f]{32}", summary["repository_id"])
    assert (repo / "config").is_file()
    assert snapshot_ids(cli, repo) == []

    again = cli("init", "--repo", str(repo))
    assert again.code == 1
    assert "already" in again.err
    text = cli("init", "--repo", str(tmp_path / "third"))
    assert text.code == 0
    assert "created repository" in text.out


def test_init_compression_level_is_kept_in_the_config_and_used(cli: Cli, env: dict[str, str],
                                                                tmp_path: Path) -> None:
    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "omega", "sigma", "kappa", "theta"]
    data = "".join(f"INSERT INTO t VALUES ({i},'{rng.choice(words)} {rng.choice(words)}',{rng.randrange(10**6)});\n"
                   for i in range(30000)).encode()
    (tmp_path / "dump.sql").write_bytes(data)
    stored = {}
    for level in (None, 0, 1, 19):
        repo = tmp_path / f"level-{level}"
        chosen = () if level is None else ("--compression-level", str(level))
        made = cli("init", "--repo", str(repo), *chosen)
        assert made.code == 0
        expected = DEFAULT_COMPRESSION if level is None else Zstd(level)
        assert f"compression: {expected.describe()}" in made.out
        assert cli("snapshot", "--repo", str(repo), str(tmp_path / "dump.sql")).code == 0
        with Repository.open(str(repo), PASSWORD) as opened:
            assert opened.config.compression == expected
        stored[level] = sum(p.stat().st_size for p in (repo / "data").rglob("*") if p.is_file())
        dumped = run_dtstore("dump", "--repo", str(repo), "latest", str(tmp_path / "dump.sql"), env=env)
        assert dumped.returncode == 0, dumped.stderr
        assert dumped.stdout == data
    assert stored[0] > len(data) > stored[1] > stored[19]
    assert stored[None] < len(data) // 2


@pytest.mark.parametrize("level", ["23", "-1", "fast"])
def test_init_refuses_a_bad_compression_level_and_writes_nothing(cli: Cli, tmp_path: Path, level: str) -> None:
    repo = tmp_path / "repo"
    result = cli("init", "--repo", str(repo), f"--compression-level={level}")
    assert result.code == 2, result.err
    assert not repo.exists() or not any(repo.rglob("*"))


# snapshot, snapshots, ls, restore, dump -------------------------------------------------------

def test_snapshot_paths_with_tags_and_host_then_list(cli: Cli, repo_dir: Path, src: Path) -> None:
    before = dt.datetime.now(dt.UTC)
    result = cli("snapshot", "--repo", str(repo_dir), "--tag", "nightly", "--tag", "db", "--host", "db-host-1",
                 str(src))
    assert result.code == 0, result.err
    assert re.search(r"snapshot [0-9a-f]{8} saved", result.out)
    assert result.err == ""  # no progress output when stderr is not a terminal

    listed = cli("snapshots", "--repo", str(repo_dir), "--json")
    assert listed.code == 0
    (snap,) = json_lines(listed.out)
    assert re.fullmatch(r"[0-9a-f]{64}", snap["id"])
    assert snap["time"].endswith("Z")
    when = dt.datetime.fromisoformat(snap["time"].replace("Z", "+00:00"))
    assert before - dt.timedelta(seconds=5) <= when <= dt.datetime.now(dt.UTC) + dt.timedelta(seconds=5)
    assert snap["host"] == "db-host-1"
    assert snap["tags"] == ["nightly", "db"]
    assert snap["source"]["kind"] == "files"
    assert snap["paths"] == [str(src)]

    text = cli("snapshots", "--repo", str(repo_dir))
    assert text.code == 0
    assert snap["id"][:8] in text.out
    assert "db-host-1" in text.out


def test_snapshots_json_prints_one_object_per_snapshot(cli: Cli, repo_dir: Path, src: Path) -> None:
    for tag in ("one", "two", "three"):
        assert cli("snapshot", "--repo", str(repo_dir), "--tag", tag, str(src)).code == 0
    objs = json_lines(cli("snapshots", "--repo", str(repo_dir), "--json").out)
    assert [o["tags"] for o in objs] == [["one"], ["two"], ["three"]]
    assert len({o["id"] for o in objs}) == 3
    for o in objs:
        assert {"id", "time", "host", "tags", "source", "paths"} <= o.keys()


def test_ls_lists_every_item(cli: Cli, repo_dir: Path, src: Path) -> None:
    assert cli("snapshot", "--repo", str(repo_dir), str(src)).code == 0
    result = cli("ls", "--repo", str(repo_dir), "latest")
    assert result.code == 0, result.err
    expected = {str(src)} | {str(src / rel) for rel in tree_state(src)}
    assert set(result.out.splitlines()) == expected
    long = cli("ls", "--repo", str(repo_dir), "--long", "latest")
    assert long.code == 0
    assert any(line.startswith("lrwx") and line.endswith("-> small.txt") for line in long.out.splitlines())
    objs = json_lines(cli("ls", "--repo", str(repo_dir), "--json", "latest").out)
    by_path = {o["path"]: o for o in objs if o.get("type") == "item"}
    assert by_path[str(src / "big.bin")]["size"] == 120_000
    assert by_path[str(src / "big.bin")]["kind"] == "file"
    assert by_path[str(src / "link")]["target"] == "small.txt"


def test_restore_whole_snapshot_and_with_include(cli: Cli, repo_dir: Path, tmp_path: Path) -> None:
    src = tmp_path / "full"
    make_sample_tree(src)
    assert cli("snapshot", "--repo", str(repo_dir), str(src)).code == 0

    target = tmp_path / "target"
    result = cli("restore", "--repo", str(repo_dir), "latest", "--target", str(target))
    assert result.code == 0, result.err
    assert tree_state(restored(target, src)) == tree_state(src)

    partial = tmp_path / "partial"
    result = cli("restore", "--repo", str(repo_dir), "latest", "--target", str(partial),
                 "--include", str(src / "sub"), "--include", str(src / UNICODE_NAME))
    assert result.code == 0, result.err
    full = tree_state(src)
    wanted = {k: v for k, v in full.items() if k == "sub" or k.startswith("sub/") or k == UNICODE_NAME}
    assert tree_state(restored(partial, src)) == wanted

    nothing = cli("restore", "--repo", str(repo_dir), "latest", "--target", str(tmp_path / "x"),
                  "--include", str(src / "no-such-file"))
    assert nothing.code == 2
    assert "nothing in the snapshot matches" in nothing.err


def test_restore_to_a_target_without_room_exits_19(cli: Cli, repo_dir: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    src = tmp_path / "full"
    make_sample_tree(src)
    assert cli("snapshot", "--repo", str(repo_dir), str(src)).code == 0

    def no_room(fd: int, mode: int, offset: int, length: int) -> int:
        ctypes.set_errno(errno.ENOSPC)
        return -1

    monkeypatch.setattr(restore_module, "_fallocate", lambda: no_room)
    target = tmp_path / "target"
    result = cli("restore", "--repo", str(repo_dir), "latest", "--target", str(target))
    assert result.code == 19, result.err
    assert "no room in" in result.err and "nothing was fetched" in result.err
    assert not [p for p in target.rglob("*") if p.is_file()]


def test_dump_writes_the_file_byte_identical_to_stdout(env: dict[str, str], cli: Cli, repo_dir: Path,
                                                       src: Path) -> None:
    assert cli("snapshot", "--repo", str(repo_dir), str(src)).code == 0
    done = run_dtstore("dump", "--repo", str(repo_dir), "latest", str(src / "big.bin"), env=env)
    assert done.returncode == 0, done.stderr
    assert done.stdout == (src / "big.bin").read_bytes()
    empty = cli("dump", "--repo", str(repo_dir), "latest", str(src / "empty"))
    assert (empty.code, empty.out) == (0, "")
    missing = cli("dump", "--repo", str(repo_dir), "latest", str(src / "missing"))
    assert missing.code == 1
    assert missing.out == ""
    assert "missing" in missing.err
    directory = cli("dump", "--repo", str(repo_dir), "latest", str(src / "sub"))
    assert directory.code == 2
    assert "not a file" in directory.err


def test_snapshot_reference_by_full_id_prefix_and_latest(cli: Cli, repo_dir: Path, src: Path) -> None:
    assert cli("snapshot", "--repo", str(repo_dir), "--tag", "old", str(src)).code == 0
    (src / "added.txt").write_bytes(b"only in the second snapshot\n")
    assert cli("snapshot", "--repo", str(repo_dir), "--tag", "new", str(src)).code == 0
    old_id, new_id = snapshot_ids(cli, repo_dir)

    def listing(ref: str) -> set[str]:
        result = cli("ls", "--repo", str(repo_dir), ref)
        assert result.code == 0, result.err
        return set(result.out.splitlines())

    added = str(src / "added.txt")
    assert added not in listing(old_id)
    assert added in listing(new_id)
    assert added not in listing(old_id[:8])
    assert added in listing(new_id[:12])
    assert added in listing(new_id.upper()[:10])
    assert listing("latest") == listing(new_id)

    unknown = cli("ls", "--repo", str(repo_dir), "ffffffffffff" if not old_id.startswith("f") else "000000000000")
    assert unknown.code == 1
    assert "no snapshot matches" in unknown.err


def test_latest_on_an_empty_repository_is_an_error(cli: Cli, repo_dir: Path) -> None:
    result = cli("ls", "--repo", str(repo_dir), "latest")
    assert result.code == 1
    assert "no snapshots" in result.err


def test_corrupted_data_exits_16_naming_the_pack(cli: Cli, repo_dir: Path, src: Path, tmp_path: Path) -> None:
    assert cli("snapshot", "--repo", str(repo_dir), str(src)).code == 0
    packs = sorted(p for p in (repo_dir / "data").rglob("*") if p.is_file())
    for pack in packs:
        flip_byte(pack, 100)
    result = cli("restore", "--repo", str(repo_dir), "latest", "--target", str(tmp_path / "t"))
    assert result.code == 16
    assert any(p.name in result.err for p in packs)
    assert "not restored" in result.err
    dumped = cli("dump", "--repo", str(repo_dir), "latest", str(src / "big.bin"))
    assert dumped.code == 16
    assert "corrupt" in dumped.err


# stdin and --from-command ---------------------------------------------------------------------

def test_stdin_snapshot_and_dump_round_trip(env: dict[str, str], cli: Cli, repo_dir: Path) -> None:
    data = random_bytes(300_000, seed=31) + b"\n-- end of dump\n"
    done = run_dtstore("snapshot", "--repo", str(repo_dir), "--stdin-name", "mysql/all.sql", "-",
                       env=env, stdin=data)
    assert done.returncode == 0, done.stderr
    dumped = run_dtstore("dump", "--repo", str(repo_dir), "latest", "mysql/all.sql", env=env)
    assert dumped.returncode == 0, dumped.stderr
    assert dumped.stdout == data
    (snap,) = json_lines(cli("snapshots", "--repo", str(repo_dir), "--json").out)
    assert snap["source"]["kind"] == "stdin"
    assert snap["source"]["metadata"] == {"name": "mysql/all.sql"}


def test_stdin_needs_a_name(env: dict[str, str], repo_dir: Path) -> None:
    done = run_dtstore("snapshot", "--repo", str(repo_dir), "-", env=env, stdin=b"data")
    assert done.returncode == 2
    assert b"--stdin-name" in done.stderr


def test_from_command_success(cli: Cli, repo_dir: Path, tmp_path: Path) -> None:
    result = cli("snapshot", "--repo", str(repo_dir), "--from-command", "seq 1 30000", "--stdin-name", "numbers.txt")
    assert result.code == 0, result.err
    expected = "".join(f"{n}\n" for n in range(1, 30001)).encode()
    with Repository.open(str(repo_dir), PASSWORD) as repo:
        snap = repo.get_snapshot("latest")
        assert snap.source_kind == "command"
        assert snap.source_metadata["exit_status"] == 0
        assert "seq" not in json.dumps(snap.source_metadata)  # the command line is not recorded
        with repo.open_item(snap, "numbers.txt") as stream:
            assert stream.read() == expected


def test_from_command_failure_exits_1_and_makes_no_snapshot(cli: Cli, repo_dir: Path, src: Path) -> None:
    assert cli("snapshot", "--repo", str(repo_dir), str(src)).code == 0
    before = sorted(p.name for p in (repo_dir / "snapshots").iterdir())
    result = cli("snapshot", "--repo", str(repo_dir), "--from-command",
                 "head -c 200000 /dev/urandom; echo failing >&2; exit 7", "--stdin-name", "dump.sql")
    assert result.code == 1
    assert "status 7" in result.err
    assert "no snapshot" in result.err
    assert sorted(p.name for p in (repo_dir / "snapshots").iterdir()) == before
    assert len(snapshot_ids(cli, repo_dir)) == 1

    killed = cli("snapshot", "--repo", str(repo_dir), "--json", "--from-command", "kill -9 $$",
                 "--stdin-name", "dump.sql")
    assert killed.code == 1
    (error,) = [o for o in json_lines(killed.out) if o["type"] == "error"]
    assert error["exit_code"] == 1
    assert len(snapshot_ids(cli, repo_dir)) == 1


def test_from_command_failure_as_a_process(env: dict[str, str], repo_dir: Path) -> None:
    done = run_dtstore("snapshot", "--repo", str(repo_dir), "--from-command", "echo partial; false",
                       "--stdin-name", "x.sql", env=env)
    assert done.returncode == 1
    assert b"no snapshot" in done.stderr
    assert not (repo_dir / "snapshots").exists() or not any((repo_dir / "snapshots").iterdir())


# passwords ------------------------------------------------------------------------------------

def test_wrong_password_exits_12_without_echoing_it(env: dict[str, str], cli: Cli, repo_dir: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    wrong = "Tr0ub4dor-wrong-pw-91x"
    done = run_dtstore("snapshots", "--repo", str(repo_dir), env={**env, "DTSTORE_PASSWORD": wrong})
    assert done.returncode == 12
    assert b"wrong password" in done.stderr.lower()
    assert wrong.encode() not in done.stderr + done.stdout
    assert PASSWORD.encode() not in done.stderr + done.stdout
    monkeypatch.setenv("DTSTORE_PASSWORD", wrong)
    as_json = cli("ls", "--json", "--repo", str(repo_dir), "latest")
    assert as_json.code == 12
    (error,) = json_lines(as_json.out)
    assert error["type"] == "error"
    assert error["exit_code"] == 12
    assert "wrong password" in error["message"]
    assert wrong not in as_json.err + as_json.out


def test_password_from_file_and_command(cli: Cli, repo_dir: Path, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTSTORE_PASSWORD", "not the password")
    assert cli("snapshots", "--repo", str(repo_dir)).code == 12

    secret = tmp_path / "password.txt"
    secret.write_text(PASSWORD + "\n")
    monkeypatch.setenv("DTSTORE_PASSWORD_FILE", str(secret))
    assert cli("snapshots", "--repo", str(repo_dir)).code == 0  # the file wins over DTSTORE_PASSWORD

    monkeypatch.setenv("DTSTORE_PASSWORD_FILE", str(tmp_path / "missing.txt"))
    missing = cli("snapshots", "--repo", str(repo_dir))
    assert missing.code == 2
    assert "DTSTORE_PASSWORD_FILE" in missing.err

    monkeypatch.delenv("DTSTORE_PASSWORD_FILE")
    monkeypatch.setenv("DTSTORE_PASSWORD_COMMAND", f"printf '%s\\n' '{PASSWORD}'")
    assert cli("snapshots", "--repo", str(repo_dir)).code == 0  # the command wins over DTSTORE_PASSWORD
    monkeypatch.setenv("DTSTORE_PASSWORD_COMMAND", "echo nope")
    assert cli("snapshots", "--repo", str(repo_dir)).code == 12
    monkeypatch.setenv("DTSTORE_PASSWORD_COMMAND", "exit 4")
    failing = cli("snapshots", "--repo", str(repo_dir))
    assert failing.code == 2
    assert "DTSTORE_PASSWORD_COMMAND" in failing.err


def test_no_password_anywhere_is_a_usage_error(env: dict[str, str], repo_dir: Path) -> None:
    bare = {k: v for k, v in env.items() if k != "DTSTORE_PASSWORD"}
    done = run_dtstore("snapshots", "--repo", str(repo_dir), env=bare)
    assert done.returncode == 2
    assert b"DTSTORE_PASSWORD" in done.stderr


# repository location, usage errors ------------------------------------------------------------

def test_no_repository_exits_10(env: dict[str, str], cli: Cli, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    done = run_dtstore("snapshots", "--repo", str(tmp_path / "nothing-here"), env=env)
    assert done.returncode == 10
    assert b"no dtstore repository" in done.stderr
    (tmp_path / "empty-dir").mkdir()
    monkeypatch.setenv("DTSTORE_REPOSITORY", str(tmp_path / "empty-dir"))
    result = cli("ls", "latest")
    assert result.code == 10
    assert "empty-dir" in result.err


def test_repository_from_environment(cli: Cli, repo_dir: Path, src: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DTSTORE_REPOSITORY", str(repo_dir))
    assert cli("snapshot", str(src)).code == 0
    assert len(json_lines(cli("snapshots", "--json").out)) == 1


def test_global_options_before_the_command(cli: Cli, repo_dir: Path, src: Path) -> None:
    assert cli("--repo", str(repo_dir), "snapshot", str(src)).code == 0
    result = cli("--json", "--repo", str(repo_dir), "snapshots")
    assert result.code == 0, result.err
    (snap,) = json_lines(result.out)
    assert snap["paths"] == [str(src)]


@pytest.mark.parametrize("args", [[], ["snapshot", "--no-such-option", "x"]])
def test_usage_errors_exit_2(env: dict[str, str], repo_dir: Path, args: list[str]) -> None:
    done = run_dtstore(*args, *(["--repo", str(repo_dir)] if args else []), env=env)
    assert done.returncode == 2, done.stderr
    assert b"usage:" in done.stderr
    assert done.stdout == b""


def test_usage_errors_in_process(cli: Cli, repo_dir: Path, src: Path) -> None:
    assert cli("snapshots").code == 2  # no repository given
    assert cli("frobnicate").code == 2
    assert cli("restore", "--repo", str(repo_dir), "latest").code == 2  # no --target
    assert cli("ls", "--repo", str(repo_dir)).code == 2  # no SNAPSHOT
    assert cli("snapshot", "--repo", str(repo_dir)).code == 2  # nothing to back up
    assert cli("snapshot", "--repo", str(repo_dir), "--from-command", "true").code == 2  # no --stdin-name
    assert cli("snapshot", "--repo", str(repo_dir), "-", str(src), "--stdin-name", "x").code == 2
    missing = cli("snapshot", "--repo", str(repo_dir), str(src / "does-not-exist"))
    assert missing.code == 2
    assert "no such file" in missing.err
    assert snapshot_ids(cli, repo_dir) == []


# unreadable sources → exit 3 ----------------------------------------------------------------

def test_unreadable_file_exits_3_and_snapshot_is_made(cli: Cli, repo_dir: Path, src: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    denied = os.fsencode(src / "small.txt")

    def guarded_open(path: Any, *args: Any, **kwargs: Any) -> Any:
        if os.fsencode(path) == denied:
            raise PermissionError(13, "Permission denied", path)
        return builtins.open(path, *args, **kwargs)

    monkeypatch.setattr(files_module, "open", guarded_open, raising=False)
    result = cli("snapshot", "--repo", str(repo_dir), str(src))
    assert result.code == 3
    assert str(src / "small.txt").lstrip("/") in result.err
    assert "Permission denied" in result.err
    assert len(snapshot_ids(cli, repo_dir)) == 1

    as_json = cli("snapshot", "--repo", str(repo_dir), "--json", str(src))
    assert as_json.code == 3
    objs = json_lines(as_json.out)
    assert any(o["type"] == "warning" and o["path"].endswith("small.txt") for o in objs)
    assert objs[-1]["type"] == "summary"
    assert len(objs[-1]["warnings"]) == 1
    assert len(snapshot_ids(cli, repo_dir)) == 2


def test_skipped_special_file_exits_3_as_a_process(env: dict[str, str], cli: Cli, repo_dir: Path,
                                                   src: Path) -> None:
    os.mkfifo(src / "a-fifo")
    done = run_dtstore("snapshot", "--repo", str(repo_dir), str(src), env=env)
    assert done.returncode == 3, done.stderr
    assert b"a-fifo" in done.stderr
    assert len(snapshot_ids(cli, repo_dir)) == 1


# --json everywhere ---------------------------------------------------------------------------

def test_json_output_is_only_json_lines_ending_in_a_summary(cli: Cli, repo_dir: Path, src: Path,
                                                            tmp_path: Path) -> None:
    snap = cli("snapshot", "--repo", str(repo_dir), "--json", "--tag", "t", str(src))
    assert snap.code == 0, snap.err
    objs = json_lines(snap.out)
    summary = objs[-1]
    assert summary["type"] == "summary"
    assert re.fullmatch(r"[0-9a-f]{64}", summary["snapshot_id"])
    assert summary["files"] == 5
    assert summary["bytes_total"] == sum(p.stat().st_size for p in src.rglob("*")
                                         if p.is_file() and not p.is_symlink())
    assert all(o["type"] in ("status", "warning", "summary") for o in objs)

    second = json_lines(cli("snapshot", "--repo", str(repo_dir), "--json", str(src)).out)[-1]
    assert second["files_unchanged"] == second["files"] == 5
    assert second["bytes_read"] == 0

    restore = cli("restore", "--repo", str(repo_dir), "--json", "latest", "--target", str(tmp_path / "t"))
    assert restore.code == 0
    assert json_lines(restore.out)[-1]["type"] == "summary"
    assert json_lines(restore.out)[-1]["snapshot_id"] == second["snapshot_id"]

    for args in (["snapshots"], ["ls", "latest"]):
        result = cli(*args, "--repo", str(repo_dir), "--json")
        assert result.code == 0
        json_lines(result.out)

    err = cli("ls", "--repo", str(repo_dir), "--json", "0000000000000000000")
    assert err.code == 1
    (error,) = json_lines(err.out)
    assert error == {"type": "error", "message": error["message"], "exit_code": 1}


def test_json_output_stays_valid_utf8_with_non_utf8_names(env: dict[str, str], cli: Cli, repo_dir: Path,
                                                          tmp_path: Path) -> None:
    src = tmp_path / "full"
    make_sample_tree(src)
    assert cli("snapshot", "--repo", str(repo_dir), str(src)).code == 0
    done = run_dtstore("ls", "--repo", str(repo_dir), "--json", "latest", env=env)
    assert done.returncode == 0, done.stderr
    objs = [json.loads(line) for line in done.stdout.decode("utf-8").splitlines()]
    assert len(objs) == len(tree_state(src)) + 1
    paths = {o["path"] for o in objs}
    assert any(os.fsdecode(NON_UTF8_NAME)[:6] in p for p in paths)


def test_ls_of_non_utf8_names_does_not_crash_on_a_strict_utf8_terminal(env: dict[str, str], cli: Cli,
                                                                       repo_dir: Path, tmp_path: Path) -> None:
    """With LANG=en_US.UTF-8 Python's stdout is strict UTF-8 (emulated here with PYTHONIOENCODING)."""
    src = tmp_path / "full"
    make_sample_tree(src)
    assert cli("snapshot", "--repo", str(repo_dir), str(src)).code == 0
    done = run_dtstore("ls", "--repo", str(repo_dir), "latest", env={**env, "PYTHONIOENCODING": "utf-8"})
    assert done.returncode == 0, done.stderr[-500:]
    assert len(done.stdout.splitlines()) == len(tree_state(src)) + 1
    assert b"Traceback" not in done.stderr


def test_snapshot_id_names_the_manifest_object(cli: Cli, repo_dir: Path, src: Path) -> None:
    assert cli("snapshot", "--repo", str(repo_dir), str(src)).code == 0
    (snap_id,) = snapshot_ids(cli, repo_dir)
    (manifest,) = (repo_dir / "snapshots").iterdir()
    assert manifest.name == snap_id


def test_version_and_help(cli: Cli) -> None:
    done = cli("--version")
    assert done.code == 0
    assert done.out.startswith("dtstore ")
    helped = cli("--help")
    assert helped.code == 0
    assert "12 wrong password" in helped.out
