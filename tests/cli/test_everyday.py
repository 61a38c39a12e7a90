"""Issue 17: the everyday commands a restic/borg user expects -- excludes on ``snapshot``, snapshot
filters on every command that takes a SNAPSHOT, ``ls PATH``, ``diff``, ``find``, ``tag``, one time
rule (``--utc``), tables that fit the terminal, and ``generate`` (man pages, completion)."""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dtstore import Repository
from dtstore.sources.excludes import CACHEDIR_SIGNATURE
from tests.cli.conftest import Result
from tests.helpers import PASSWORD

Cli = Callable[..., Result]


def lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def ids(cli: Cli, repo: str) -> list[str]:
    return [o["id"] for o in lines(cli("snapshots", "--repo", repo, "--json").out)]


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "data"
    for rel, data in {"a.txt": b"a\n", "b.log": b"log\n", "UPPER.LOG": b"LOG\n", "sub/c.txt": b"c" * 50,
                      "sub/big.bin": b"B" * 5000, "cache/x": b"cached"}.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(data)
    (root / "cache/CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE + b"\n")
    return root


def stored(cli: Cli, repo: str, root: Path, ref: str = "latest") -> set[str]:
    result = cli("ls", "--repo", repo, ref)
    assert result.code == 0, result.err
    return {line[len(str(root)) + 1:] for line in result.out.splitlines() if line.startswith(str(root) + "/")}


# snapshot: excludes -------------------------------------------------------------------------------

def test_snapshot_excludes(cli: Cli, repo_dir: Path, tree: Path, tmp_path: Path) -> None:
    repo = str(repo_dir)
    (tmp_path / "ex").write_text("# logs\n*.log\n")
    result = cli("snapshot", "--repo", repo, str(tree), "--exclude-file", str(tmp_path / "ex"), "--exclude-caches",
                 "--exclude-larger-than", "1K", "-e", "c.txt")
    assert result.code == 0, result.err
    assert stored(cli, repo, tree) == {"a.txt", "UPPER.LOG", "sub", "cache", "cache/CACHEDIR.TAG"}
    assert cli("snapshot", "--repo", repo, str(tree), "--iexclude", "*.log", "--iexclude", "/nowhere").code == 0
    assert stored(cli, repo, tree) == {"a.txt", "sub", "sub/c.txt", "sub/big.bin", "cache", "cache/x",
                                       "cache/CACHEDIR.TAG"}
    meta = lines(cli("snapshots", "--repo", repo, "--json").out)[0]["source"]["metadata"]
    assert meta["excludes"]["exclude_caches"] is True and meta["excludes"]["exclude"] == ["c.txt"]


def test_snapshot_files_from_raw_and_verbatim(cli: Cli, repo_dir: Path, tree: Path, tmp_path: Path) -> None:
    repo = str(repo_dir)
    (tmp_path / "raw").write_bytes(os.fsencode(tree / "a.txt") + b"\0" + os.fsencode(tree / "sub") + b"\0")
    assert cli("snapshot", "--repo", repo, "--files-from-raw", str(tmp_path / "raw"), "-e", "big.bin").code == 0
    assert cli("ls", "--repo", repo, "latest").out.split() == [str(tree / "a.txt"), str(tree / "sub"),
                                                               str(tree / "sub/c.txt")]
    (tmp_path / "globs").write_text(f"# comment\n{tree}/*.log\n")
    assert cli("snapshot", "--repo", repo, "--files-from", str(tmp_path / "globs"), str(tree / "a.txt")).code == 0
    assert sorted(cli("ls", "--repo", repo, "latest").out.split()) == [str(tree / "a.txt"), str(tree / "b.log")]


@pytest.mark.parametrize("args", [
    ["-", "--stdin-name", "x", "--exclude", "*.log"],
    ["--from-command", "true", "--stdin-name", "x", "--one-file-system"],
    ["mysql://u@localhost/db", "--exclude-caches"],
    ["DATA", "--exclude-larger-than", "12Q"],
    ["DATA", "--exclude", "[oops"],
    ["DATA", "--exclude-file", "/nonexistent/list"],
    ["--files-from", "/nonexistent/list"],
])
def test_snapshot_bad_exclude_options_are_usage_errors(cli: Cli, repo_dir: Path, tree: Path,
                                                       args: list[str]) -> None:
    args = [str(tree) if a == "DATA" else a for a in args]
    result = cli("snapshot", "--repo", str(repo_dir), *args)
    assert result.code == 2, (result.out, result.err)
    assert ids(cli, str(repo_dir)) == []


# snapshot selection -------------------------------------------------------------------------------

@pytest.fixture
def two_hosts(cli: Cli, repo_dir: Path, tree: Path, tmp_path: Path) -> dict[str, str]:
    """Snapshots: host a (tag x) of tree, host b (tag y) of tree, then host a of other (tag x,z)."""
    other = tmp_path / "other"
    other.mkdir()
    (other / "o.txt").write_text("other\n")
    repo = str(repo_dir)
    for host, tags, path in (("a", "x", tree), ("b", "y", tree), ("a", "x,z", other)):
        tag_args = [arg for t in tags.split(",") for arg in ("--tag", t)]
        assert cli("snapshot", "--repo", repo, "--host", host, *tag_args, str(path)).code == 0
    a1, b1, a2 = ids(cli, repo)
    return {"a1": a1, "b1": b1, "a2": a2, "repo": repo, "other": str(other)}


def test_latest_with_filters_on_ls_dump_restore(cli: Cli, two_hosts: dict[str, str], tree: Path,
                                                tmp_path: Path) -> None:
    repo = two_hosts["repo"]
    assert cli("ls", "--repo", repo, "latest").out.split() == [two_hosts["other"], two_hosts["other"] + "/o.txt"]
    assert str(tree / "a.txt") in cli("ls", "--repo", repo, "--host", "b", "latest").out
    assert str(tree / "a.txt") in cli("ls", "--repo", repo, "--host", "a", "--path", str(tree), "latest").out
    assert cli("ls", "--repo", repo, "--tag", "x,z", "latest").out.split()[0] == two_hosts["other"]
    assert cli("ls", "--repo", repo, "--source", f"files:{tree}", "--host", "a", "latest").code == 0
    nothing = cli("ls", "--repo", repo, "--host", "b", "--tag", "x", "latest")
    assert nothing.code == 1 and "--host b --tag x" in nothing.err
    # a snapshot named by ID must pass the filter too
    assert cli("ls", "--repo", repo, "--host", "b", two_hosts["a1"][:8]).code == 1
    assert cli("ls", "--repo", repo, "--host", "a", two_hosts["a1"][:8]).code == 0

    dumped = cli("dump", "--repo", repo, "--tag", "y", "latest", str(tree / "a.txt"))
    assert dumped.code == 0 and dumped.out == "a\n"
    target = tmp_path / "r"
    result = cli("restore", "--repo", repo, "latest", "--host", "b", "--target", str(target), "--json")
    assert result.code == 0, result.err
    assert lines(result.out)[-1]["snapshot_id"] == two_hosts["b1"]
    assert (target / str(tree).lstrip("/") / "sub/c.txt").read_bytes() == b"c" * 50

    listed = lines(cli("snapshots", "--repo", repo, "--json", "--host", "a", "--host", "b", "--tag", "x").out)
    assert [s["id"] for s in listed] == [two_hosts["a1"], two_hosts["a2"]]
    assert [s["id"] for s in lines(cli("snapshots", "--repo", repo, "--json", "--path", two_hosts["other"]).out)] \
        == [two_hosts["a2"]]


def test_ls_paths_long_and_recursive(cli: Cli, repo_dir: Path, tree: Path) -> None:
    repo = str(repo_dir)
    assert cli("snapshot", "--repo", repo, str(tree)).code == 0
    shown = cli("ls", "--repo", repo, "latest", str(tree)).out.split()
    assert shown == [str(tree), *(str(tree / n) for n in ("UPPER.LOG", "a.txt", "b.log", "cache", "sub"))]
    assert cli("ls", "--repo", repo, "latest", str(tree / "sub") + "/").out.split() == [
        str(tree / "sub"), str(tree / "sub/big.bin"), str(tree / "sub/c.txt")]
    deep = cli("ls", "--repo", repo, "latest", str(tree), "--recursive").out.split()
    assert str(tree / "sub/c.txt") in deep and str(tree / "cache/x") in deep
    long = cli("ls", "--repo", repo, "-l", "latest", str(tree / "sub/big.bin")).out.strip()
    st = os.stat(tree / "sub/big.bin")
    assert re.fullmatch(rf"-rw-r--r-- +{st.st_uid} +{st.st_gid} +5000 \d{{4}}-\d\d-\d\d \d\d:\d\d:\d\d "
                        rf"{re.escape(str(tree / 'sub/big.bin'))}", long), long
    item = lines(cli("ls", "--repo", repo, "--json", "latest", str(tree / "a.txt")).out)[0]
    assert item["uid"] == st.st_uid and item["mtime"].endswith("Z")
    missing = cli("ls", "--repo", repo, "latest", "/no/such/path")
    assert missing.code == 1 and "no item" in missing.err


# diff ---------------------------------------------------------------------------------------------

def test_diff_reports_each_kind_of_change(cli: Cli, repo_dir: Path, tree: Path) -> None:
    repo = str(repo_dir)
    assert cli("snapshot", "--repo", repo, str(tree)).code == 0
    (tree / "a.txt").write_bytes(b"changed content\n")        # modified
    (tree / "b.log").unlink()                                   # removed
    (tree / "new.txt").write_bytes(b"new\n")                    # added
    os.chmod(tree / "sub/c.txt", 0o600)                          # metadata only
    os.utime(tree / "UPPER.LOG", ns=(0, 10**18))                 # metadata only (mtime)
    assert cli("snapshot", "--repo", repo, str(tree)).code == 0
    first, second = ids(cli, repo)
    result = cli("diff", "--repo", repo, "--json", first[:8], "latest")
    assert result.code == 0, result.err
    events = lines(result.out)
    changes = {e["path"].removeprefix(str(tree)): (e["change"], e["fields"]) for e in events if e["type"] == "change"}
    assert changes["/a.txt"][0] == "modified" and "content" in changes["/a.txt"][1]
    assert changes["/b.log"] == ("removed", [])
    assert changes["/new.txt"] == ("added", [])
    assert changes["/sub/c.txt"] == ("metadata", ["mode"])
    assert changes["/UPPER.LOG"] == ("metadata", ["mtime"])
    summary = events[-1]
    assert summary["type"] == "summary" and summary["first"] == first and summary["second"] == second
    assert (summary["added"], summary["removed"], summary["modified"]) == (1, 1, 1)
    assert summary["metadata"] >= 2  # the directories' mtimes changed too
    text = cli("diff", "--repo", repo, first, second).out.splitlines()
    assert f"+  {tree}/new.txt" in text and f"-  {tree}/b.log" in text
    assert any(line.startswith(f"M  {tree}/a.txt") for line in text)
    assert any(line.startswith(f"U  {tree}/sub/c.txt") and "(mode)" in line for line in text)
    assert cli("diff", "--repo", repo, first, first).out.splitlines()[-1].startswith("0 added, 0 removed")


# find ---------------------------------------------------------------------------------------------

def test_find_across_snapshots(cli: Cli, two_hosts: dict[str, str], tree: Path) -> None:
    repo = two_hosts["repo"]
    found = lines(cli("find", "--repo", repo, "--json", "*.txt").out)
    matches = [(m["snapshot_id"], m["path"]) for m in found if m["type"] == "match"]
    assert (two_hosts["a1"], str(tree / "sub/c.txt")) in matches
    assert (two_hosts["a2"], two_hosts["other"] + "/o.txt") in matches
    assert found[-1] == {"type": "summary", "matches": len(matches), "snapshots": 3}
    # case, path patterns, --snapshot and filters
    insensitive = lines(cli("find", "--repo", repo, "--json", "-i", "*.log").out)
    assert len([m for m in insensitive if m["type"] == "match"]) == 4
    assert [m["path"] for m in lines(cli("find", "--repo", repo, "--json", "*.log", "--snapshot",
                                         two_hosts["b1"][:8]).out) if m["type"] == "match"] == [str(tree / "b.log")]
    by_path = lines(cli("find", "--repo", repo, "--json", f"{tree}/**/c.txt", "--host", "b").out)
    assert [(m["snapshot_id"], m["path"]) for m in by_path if m["type"] == "match"] == [
        (two_hosts["b1"], str(tree / "sub/c.txt"))]
    text = cli("find", "--repo", repo, "nothing-matches-this")
    assert text.code == 0 and text.out.strip() == "0 match(es) in 3 snapshot(s)"


# tag ----------------------------------------------------------------------------------------------

def test_tag_rewrites_manifests(cli: Cli, two_hosts: dict[str, str], env: dict[str, str]) -> None:
    repo = two_hosts["repo"]
    result = cli("tag", "--repo", repo, "--json", "--add", "keep", "--remove", "x", two_hosts["a1"][:8])
    assert result.code == 0, result.err
    (change,) = lines(result.out)[-1]["changed"]
    assert change["old"] == two_hosts["a1"] and change["new"] != two_hosts["a1"] and change["tags"] == ["keep"]
    now = {s["id"]: s for s in lines(cli("snapshots", "--repo", repo, "--json").out)}
    assert two_hosts["a1"] not in now and now[change["new"]]["original"] == two_hosts["a1"]
    assert now[change["new"]]["time"] and now[change["new"]]["summary"]["files"] == 7
    # a second rewrite keeps the first original
    again = lines(cli("tag", "--repo", repo, "--json", "--set", "p,q", change["new"][:8]).out)[-1]
    newest = again["changed"][0]["new"]
    assert {s["id"]: s for s in lines(cli("snapshots", "--repo", repo, "--json").out)}[newest]["original"] \
        == two_hosts["a1"]
    # by filter: every snapshot of host a; unchanged ones keep their ID
    before = set(ids(cli, repo))
    done = lines(cli("tag", "--repo", repo, "--json", "--host", "a", "--add", "z").out)[-1]
    assert done["unchanged"] == 1 and len(done["changed"]) == 1  # a2 already has z
    assert two_hosts["a2"] in set(ids(cli, repo)) and two_hosts["b1"] in before & set(ids(cli, repo))
    # the data is still there
    with Repository.open(repo, PASSWORD, cache_dir=env["DTSTORE_CACHE_DIR"]) as opened:
        assert opened.check().ok


@pytest.mark.parametrize(("args", "message"), [
    (["--set", "a", "--add", "b"], "--set cannot be combined"),
    ([], "nothing to do"),
])
def test_tag_usage_errors(cli: Cli, repo_dir: Path, args: list[str], message: str) -> None:
    result = cli("tag", "--repo", str(repo_dir), *args)
    assert result.code == 2 and message in result.err


def test_tag_writes_every_new_manifest_before_deleting_an_old_one(cli: Cli, two_hosts: dict[str, str],
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    from dtstore.snapshots.store import SnapshotStore

    order: list[str] = []
    save, delete = SnapshotStore.save, SnapshotStore.delete

    def saving(self: SnapshotStore, snapshot: Any) -> Any:
        done = save(self, snapshot)
        order.append("save")
        return done

    def deleting(self: SnapshotStore, snapshot_id: str) -> None:
        order.append("delete")
        delete(self, snapshot_id)

    monkeypatch.setattr(SnapshotStore, "save", saving)
    monkeypatch.setattr(SnapshotStore, "delete", deleting)
    assert cli("tag", "--repo", two_hosts["repo"], "--add", "new").code == 0
    assert order == ["save"] * 3 + ["delete"] * 3


# time zones and table width -----------------------------------------------------------------------

@pytest.fixture
def kolkata() -> Iterator[None]:
    """Local time is +05:30 (no DST) for the test, and the process's zone is restored after it."""
    before = os.environ.get("TZ")
    os.environ["TZ"] = "Asia/Kolkata"
    time.tzset()
    try:
        yield
    finally:
        if before is None:
            del os.environ["TZ"]
        else:
            os.environ["TZ"] = before
        time.tzset()


def test_one_time_rule_and_tables_that_fit(cli: Cli, two_hosts: dict[str, str], monkeypatch: pytest.MonkeyPatch,
                                           tree: Path, kolkata: None) -> None:
    repo = two_hosts["repo"]
    local = cli("snapshots", "--repo", repo).out
    utc = cli("snapshots", "--repo", repo, "--utc").out
    stamp = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ?")
    local_times, utc_times = stamp.findall(local), stamp.findall(utc)
    assert len(local_times) == 3 and all(t.endswith("Z") for t in utc_times)
    assert not any(t.endswith("Z") for t in local_times) and local_times != utc_times
    stats_local, stats_utc = cli("stats", "--repo", repo).out, cli("stats", "--repo", repo, "--utc").out
    assert stamp.findall(stats_local) == local_times and stamp.findall(stats_utc) == utc_times
    assert stamp.findall(cli("ls", "--repo", repo, "-l", "--utc", "latest").out)[0].endswith("Z")

    monkeypatch.setenv("COLUMNS", "76")
    narrow = cli("snapshots", "--repo", repo).out.splitlines()
    assert all(len(line) <= 76 for line in narrow), narrow
    assert any("…" in line for line in narrow)
    assert narrow[0].split() == ["ID", "Time", "Host", "Kind", "Source", "Size", "Tags", "Paths"]
    monkeypatch.setenv("COLUMNS", "300")
    wide = cli("snapshots", "--repo", repo).out
    assert "…" not in wide and f"files:{tree}" in wide


# S3 -----------------------------------------------------------------------------------------------

def test_commands_against_s3(cli: Cli, s3_env: str, tree: Path, tmp_path: Path) -> None:
    assert cli("init", "--repo", s3_env).code == 0
    assert cli("snapshot", "--repo", s3_env, "--host", "s3host", "--exclude", "*.log", str(tree)).code == 0
    (tree / "a.txt").write_bytes(b"v2\n")
    assert cli("snapshot", "--repo", s3_env, "--host", "s3host", str(tree), "--exclude-caches").code == 0
    first, second = ids(cli, s3_env)
    changes = [e for e in lines(cli("diff", "--repo", s3_env, "--json", first, second).out) if e["type"] == "change"]
    assert {(c["path"].removeprefix(str(tree)), c["change"]) for c in changes} >= {
        ("/a.txt", "modified"), ("/b.log", "added")}
    assert all(not c["path"].startswith(str(tree / "cache")) or c["change"] == "removed" for c in changes)
    assert [m["path"] for m in lines(cli("find", "--repo", s3_env, "--json", "a.txt", "-s", "latest").out)
            if m["type"] == "match"] == [str(tree / "a.txt")]
    tagged = lines(cli("tag", "--repo", s3_env, "--json", "--host", "s3host", "--add", "s3").out)[-1]
    assert len(tagged["changed"]) == 2 and first not in ids(cli, s3_env)
    assert cli("dump", "--repo", s3_env, "--tag", "s3", "latest", str(tree / "a.txt")).out == "v2\n"


# help, man pages, completion ----------------------------------------------------------------------

def test_generate_man_pages(cli: Cli, tmp_path: Path) -> None:
    result = cli("generate", "--man", str(tmp_path / "man1"))
    assert result.code == 0, result.err
    pages = {p.name for p in (tmp_path / "man1").iterdir()}
    assert {"dtstore.1", "dtstore-snapshot.1", "dtstore-diff.1", "dtstore-tag.1", "dtstore-generate.1"} <= pages
    page = (tmp_path / "man1/dtstore-snapshot.1").read_text()
    assert page.startswith(".TH DTSTORE-SNAPSHOT 1") and "\\-\\-exclude\\-caches" in page
    assert ".SH EXAMPLES" in page and ".SH EXIT STATUS" in page
    if shutil.which("man"):
        shown = subprocess.run(["man", "-l", "-P", "cat", str(tmp_path / "man1/dtstore-snapshot.1")],
                               capture_output=True, text=True, env={**os.environ, "MANWIDTH": "100"}, check=False)
        assert shown.returncode == 0, shown.stderr
        assert "--one-file-system" in shown.stdout and "EXIT STATUS" in shown.stdout
        assert "warning" not in shown.stderr
    assert cli("generate").code == 2
    assert cli("generate", "--completion", "tcsh").code == 2


def _bash_complete(script: Path, words: list[str]) -> list[str]:
    line = " ".join(shlex.quote(w) for w in words)
    program = (f"source {script}; COMP_WORDS=({line}); COMP_CWORD={len(words) - 1}; _dtstore; "
               "printf '%s\\n' \"${COMPREPLY[@]}\"")
    done = subprocess.run(["bash", "-c", program], capture_output=True, text=True, check=True)
    return done.stdout.split()


def test_bash_completion_completes_commands_options_and_choices(cli: Cli, tmp_path: Path) -> None:
    result = cli("generate", "--completion", "bash")
    assert result.code == 0
    script = tmp_path / "dtstore.bash"
    script.write_text(result.out)
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert {"diff", "dump"} <= set(_bash_complete(script, ["dtstore", "d"]))
    assert "--exclude-caches" in _bash_complete(script, ["dtstore", "--repo", "/x", "snapshot", "--exclude-c"])
    assert _bash_complete(script, ["dtstore", "generate", "--completion", ""]) == ["bash", "fish", "zsh"]
    assert set(_bash_complete(script, ["dtstore", "key", ""])) == {"list", "add", "remove", "passwd", "convert"}


@pytest.mark.parametrize("shell", ["zsh", "fish"])
def test_other_completions_parse(cli: Cli, tmp_path: Path, shell: str) -> None:
    result = cli("generate", "--completion", shell)
    assert result.code == 0 and "--exclude-caches" in result.out.replace("-l exclude-caches", "--exclude-caches")
    if shutil.which(shell) is None:
        pytest.skip(f"{shell} is not installed")
    script = tmp_path / f"dtstore.{shell}"
    script.write_text(result.out)
    subprocess.run([shell, "-n", str(script)], check=True)
