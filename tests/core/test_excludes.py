"""Excludes with restic's semantics: a table of patterns against a tree, and the other options
(exclude files, --files-from, CACHEDIR.TAG, sizes, one file system), through ``FilesSource``."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dtstore import Excludes, FilesSource
from dtstore.errors import UsageError
from dtstore.sources.excludes import CACHEDIR_SIGNATURE, Pattern, files_from, parse_size, read_pattern_file

TREE = [
    "home/user/work/main.go",
    "home/user/work/notes.txt",
    "home/user/work/sub/deep/lib.go",
    "home/user/work/Makefile",
    "home/user/Documents/cv.pdf",
    "home/user/Documents/old/letter.TXT",
    "home/user/.cache/thumb.png",
    "home/user/foo/inside.txt",
    "home/user/bar/foo",
    "home/other/foo.go",
    "srv/data/big.iso",
    "srv/data/Big.ISO",
    "srv/logs/a.log",
]


class _Quiet:
    def warn(self, path: bytes, message: str) -> None:
        raise AssertionError(f"unexpected warning {path!r}: {message}")


def make_tree(root: Path) -> None:
    for rel in TREE:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x" * (1000 if rel.endswith(("iso", "ISO")) else 10))


def selected(root: Path, excludes: Excludes, paths: list[str] | None = None) -> set[str]:
    source = FilesSource(paths or [str(root)], excludes=excludes)
    prefix = os.fsencode(root).lstrip(b"/") + b"/"
    return {e.path[len(prefix):].decode() for e in source.entries(_Quiet()) if e.path.startswith(prefix)}


def files(names: set[str]) -> set[str]:
    return {n for n in names if n in TREE}


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    root = tmp_path / "t"
    make_tree(root)
    return root


ALL = set(TREE)

# (patterns (ROOT stands for the tree's absolute path), case-insensitive?, files expected to be left out)
CASES: list[tuple[list[str], bool, set[str]]] = [
    # restic manual: "*.go" excludes every Go file, at any depth
    (["*.go"], False, {"home/user/work/main.go", "home/user/work/sub/deep/lib.go", "home/other/foo.go"}),
    # a plain name matches that component anywhere, and everything below it
    (["foo"], False, {"home/user/foo/inside.txt", "home/user/bar/foo"}),
    # anchored at the root: only that subtree
    (["ROOT/home/user/foo"], False, {"home/user/foo/inside.txt"}),
    (["/home/user/foo"], False, set()),  # anchored patterns start at the real root
    # ** for any number of directories (restic: "$HOME/**/*.go")
    (["ROOT/home/**/*.go"], False, {"home/user/work/main.go", "home/user/work/sub/deep/lib.go", "home/other/foo.go"}),
    (["ROOT/home/user/work/**/lib.go"], False, {"home/user/work/sub/deep/lib.go"}),
    # a multi-component relative pattern matches consecutive components anywhere
    (["work/sub"], False, {"home/user/work/sub/deep/lib.go"}),
    # ?, character classes and negated classes
    (["?.log"], False, {"srv/logs/a.log"}),
    (["[A-Z]*"], False, {"home/user/work/Makefile", "home/user/Documents/cv.pdf", "home/user/Documents/old/letter.TXT",
                         "srv/data/Big.ISO"}),
    (["*.[^g]*"], False, {"home/user/work/notes.txt", "home/user/Documents/cv.pdf",
                          "home/user/Documents/old/letter.TXT", "home/user/.cache/thumb.png",
                          "home/user/foo/inside.txt", "srv/data/big.iso", "srv/data/Big.ISO", "srv/logs/a.log"}),
    # hidden directories
    ([".*"], False, {"home/user/.cache/thumb.png"}),
    # case: --exclude is case-sensitive, --iexclude is not (restic's example: *.iso)
    (["*.iso"], False, {"srv/data/big.iso"}),
    (["*.iso"], True, {"srv/data/big.iso", "srv/data/Big.ISO"}),
    (["*.txt"], True, {"home/user/work/notes.txt", "home/user/Documents/old/letter.TXT", "home/user/foo/inside.txt"}),
    # restic manual: exclude everything in $HOME but Documents ("$HOME/**/*" then "!$HOME/Documents")
    (["ROOT/home/user/*", "!ROOT/home/user/Documents"], False,
     ALL - {"home/user/Documents/cv.pdf", "home/user/Documents/old/letter.TXT"}
     - {t for t in TREE if not t.startswith("home/user/")}),
    # the last matching pattern decides
    (["*.txt", "!notes.txt"], False, {"home/user/Documents/old/letter.TXT", "home/user/foo/inside.txt"} - {
        "home/user/Documents/old/letter.TXT"}),
    (["!notes.txt", "*.txt"], False, {"home/user/work/notes.txt", "home/user/foo/inside.txt"}),
    # escaping a wildcard
    (["\\*.go"], False, set()),
]


@pytest.mark.parametrize(("patterns", "ignore_case", "left_out"), CASES,
                         ids=[" ".join(c[0]) + (" (i)" if c[1] else "") for c in CASES])
def test_pattern_table(tree: Path, patterns: list[str], ignore_case: bool, left_out: set[str]) -> None:
    pats = tuple(p.replace("ROOT", str(tree)) for p in patterns)
    excludes = Excludes(iexclude=pats) if ignore_case else Excludes(exclude=pats)
    assert files(selected(tree, excludes)) == ALL - left_out


# restic's manual, "Excluding files": an exclude file with "*.go" and "foo/**/bar", which excludes
# foo/x/y/z/bar, foo/x/bar and foo/bar
RESTIC_TREE = ["work/main.go", "work/foo/bar", "work/foo/x/bar", "work/foo/x/y/z/bar", "work/foo/barn",
               "work/foo/x/keep", "work/bar", "work/main.c"]
RESTIC_CASES: list[tuple[list[str], set[str]]] = [
    (["*.c"], {"work/main.c"}),
    (["*.go", "foo/**/bar"], {"work/main.go", "work/foo/bar", "work/foo/x/bar", "work/foo/x/y/z/bar"}),
    (["ROOT/work/*"], set(RESTIC_TREE)),
    (["ROOT/work/*", "!ROOT/work/foo"], {"work/main.go", "work/bar", "work/main.c"}),
    (["**/x/**"], {"work/foo/x/bar", "work/foo/x/y/z/bar", "work/foo/x/keep"}),
]


@pytest.mark.parametrize(("patterns", "left_out"), RESTIC_CASES, ids=[" ".join(c[0]) for c in RESTIC_CASES])
def test_restic_manual_examples(tmp_path: Path, patterns: list[str], left_out: set[str]) -> None:
    root = tmp_path / "r"
    for rel in RESTIC_TREE:
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    listing = tmp_path / "excludes.txt"
    listing.write_text("\n".join(["# from restic's manual", *(p.replace("ROOT", str(root)) for p in patterns)]))
    got = selected(root, Excludes(exclude_file=(str(listing),)))
    assert {p for p in got if p in RESTIC_TREE} == set(RESTIC_TREE) - left_out


def test_pattern_files_expand_variables_as_restic_does(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("WHO", "bob")
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    listing = tmp_path / "ex"
    listing.write_text("/home/$WHO/foo\n/home/${WHO}/bar\nprice$$\n/a$NOT_SET_ANYWHERE/b\n")
    assert read_pattern_file(str(listing)) == ["/home/bob/foo", "/home/bob/bar", "price$", "/a/b"]


def test_reincluded_files_bring_their_directories_and_nothing_else(tree: Path) -> None:
    got = selected(tree, Excludes(exclude=(f"{tree}/home/user/*", f"!{tree}/home/user/Documents")))
    assert "home/user/Documents" in got and "home/user/Documents/old" in got
    assert "home/user/work" not in got and "home/user/.cache" not in got
    assert "home/user" in got


def test_an_excluded_directory_is_not_entered(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    entered: list[bytes] = []
    real = os.scandir

    def spy(path: bytes) -> object:
        entered.append(path)
        return real(path)

    monkeypatch.setattr(os, "scandir", spy)
    selected(tree, Excludes(exclude=("work",)))
    assert not any(p.endswith(b"/work") or b"/work/" in p for p in entered)


def test_exclude_files_comments_whitespace_and_variables(tree: Path, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TREE", str(tree))
    listing = tmp_path / "excludes.txt"
    listing.write_text("# comment\n\n   *.go  \n$TREE/srv\n")
    ilisting = tmp_path / "iexcludes.txt"
    ilisting.write_text("*.TXT\n")
    got = files(selected(tree, Excludes(exclude_file=(str(listing),), iexclude_file=(str(ilisting),))))
    assert got == {"home/user/work/Makefile", "home/user/Documents/cv.pdf", "home/user/.cache/thumb.png",
                   "home/user/bar/foo"}


def test_exclude_caches_needs_the_standard_signature(tree: Path) -> None:
    (tree / "home/user/.cache/CACHEDIR.TAG").write_bytes(CACHEDIR_SIGNATURE + b"\n# made by a tool\n")
    (tree / "srv/logs/CACHEDIR.TAG").write_bytes(b"Signature: not the right one\n")
    got = selected(tree, Excludes(exclude_caches=True))
    # restic: the directory and its tag are kept, the rest of its contents is not
    assert {p for p in got if p.startswith("home/user/.cache")} == {"home/user/.cache", "home/user/.cache/CACHEDIR.TAG"}
    assert "srv/logs/a.log" in got and "srv/logs/CACHEDIR.TAG" in got
    assert "home/user/.cache/thumb.png" in selected(tree, Excludes())


def test_exclude_if_present_with_and_without_header(tree: Path) -> None:
    (tree / "srv/logs/.nobackup").write_bytes(b"")
    (tree / "srv/data/.nobackup").write_bytes(b"keep me")
    got = selected(tree, Excludes(exclude_if_present=(".nobackup",)))
    assert {p for p in got if p.startswith("srv/")} == {"srv/logs", "srv/logs/.nobackup", "srv/data",
                                                         "srv/data/.nobackup"}
    got = selected(tree, Excludes(exclude_if_present=(".nobackup:keep",)))
    assert "srv/logs/a.log" in got and "srv/data/.nobackup" in got and "srv/data/big.iso" not in got


def test_exclude_larger_than(tree: Path) -> None:
    got = files(selected(tree, Excludes(exclude_larger_than=parse_size("999"))))
    assert got == ALL - {"srv/data/big.iso", "srv/data/Big.ISO"}
    assert files(selected(tree, Excludes(exclude_larger_than=1000))) == ALL  # larger than, not equal


@pytest.mark.parametrize(("text", "size"), [("0", 0), ("1024", 1024), ("1k", 1024), ("2M", 2 << 20), ("1.5G", 3 << 29),
                                            ("3T", 3 << 40), ("2MiB", 2 << 20), ("10 KB", 10240)])
def test_sizes(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize("bad", ["", "x", "1Q", "-1", "1..2k"])
def test_bad_sizes_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        parse_size(bad)


def test_one_file_system_stores_mount_points_empty(tree: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = os.lstat
    mount = os.fsencode(tree / "srv/data")

    def fake(path: bytes | str, *args: object, **kwargs: object) -> os.stat_result:
        st = real(path)
        p = os.fsencode(path)
        if p == mount or p.startswith(mount + b"/"):
            values = list(st)
            values[2] = st.st_dev + 1  # st_dev
            return os.stat_result(values)
        return st

    monkeypatch.setattr(os, "lstat", fake)
    got = selected(tree, Excludes(one_file_system=True))
    assert "srv/data" in got and "srv/data/big.iso" not in got and "srv/logs/a.log" in got
    assert "srv/data/big.iso" in selected(tree, Excludes())


def test_estimated_size_counts_what_entries_yield(tree: Path) -> None:
    source = FilesSource([str(tree)], excludes=Excludes(iexclude=("*.iso",)))
    assert source.estimated_size() == 10 * (len(TREE) - 2)
    assert FilesSource([str(tree)]).estimated_size() == 10 * (len(TREE) - 2) + 2000


def test_files_from_modes(tree: Path, tmp_path: Path) -> None:
    listing = tmp_path / "list"
    listing.write_text(f"# comment\n\n{tree}/srv/*/a.log\n  {tree}/home/other  \n")
    assert files_from(str(listing)) == [f"{tree}/srv/logs/a.log", f"{tree}/home/other"]
    verbatim = tmp_path / "verbatim"
    verbatim.write_text(f"{tree}/srv/logs/a.log\n# not a comment\n\n")
    assert files_from(str(verbatim), mode="verbatim") == [f"{tree}/srv/logs/a.log", "# not a comment"]
    weird = tree / "line\nbreak *.txt"
    weird.write_bytes(b"")
    raw = tmp_path / "raw"
    raw.write_bytes(os.fsencode(weird) + b"\0" + os.fsencode(tree / "srv") + b"\0")
    assert files_from(str(raw), mode="raw") == [str(weird), str(tree / "srv")]
    empty_glob = tmp_path / "nomatch"
    empty_glob.write_text(f"{tree}/nothing-*\n")
    with pytest.raises(UsageError, match="matches no file"):
        files_from(str(empty_glob))


def test_config_keys_build_the_same_excludes(tree: Path, tmp_path: Path) -> None:
    listing = tmp_path / "ex"
    listing.write_text("*.log\n")
    config = {"exclude": ["*.go"], "iexclude": "*.ISO", "exclude_file": [str(listing)], "exclude_caches": True,
              "exclude_larger_than": "1M", "one_file_system": True}
    built = Excludes.from_config(config)
    assert built == Excludes(exclude=("*.go",), iexclude=("*.ISO",), exclude_file=(str(listing),),
                             exclude_caches=True, exclude_larger_than=1 << 20, one_file_system=True)
    assert set(config) <= set(Excludes.KEYS)
    with pytest.raises(UsageError, match="unknown"):
        Excludes.from_config({"exclude": [], "exclude_larger": "1M"})
    with pytest.raises(UsageError):
        Excludes.from_config({"exclude_caches": "yes"})


@pytest.mark.parametrize("bad", ["", "!", "foo[", "[a"])
def test_bad_patterns_are_usage_errors(bad: str) -> None:
    with pytest.raises(UsageError):
        Excludes(exclude=(bad,))


def test_whole_path_matching_for_find() -> None:
    assert Pattern("/a/**/c").matches("/a/b/c", whole=True)
    assert not Pattern("/a/**/c").matches("/a/b/c/d", whole=True)
    assert Pattern("/a/**/c").matches("/a/b/c/d")


def test_estimate_gives_up_when_told(tree: Path) -> None:
    import threading

    stop = threading.Event()
    stop.set()
    assert FilesSource([str(tree)]).estimated_size(stop=stop) == 0


def test_backup_progress_carries_the_estimated_total(tree: Path, tmp_path: Path) -> None:
    from dtstore import ProgressEvent
    from tests.helpers import init_repo

    events: list[ProgressEvent] = []
    with init_repo(str(tmp_path / "repo"), tmp_path / "cache") as repo:
        snap = repo.snapshot([FilesSource([str(tree)], excludes=Excludes(exclude=("*.iso",)))],
                             progress=events.append)
    total = 10 * (len(TREE) - 2) + 1000  # Big.ISO stays: --exclude is case-sensitive
    assert snap.summary["bytes_total"] == total
    assert events and events[0].bytes_total == total  # the head start: known from the first event
    assert events[-1].bytes_done == events[-1].bytes_total == total
