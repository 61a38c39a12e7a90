"""Options that only mean something for a database are usage errors elsewhere, never ignored."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from tests.cli.conftest import Result


@pytest.fixture
def snapped(repo_dir: Path, tmp_path: Path, cli: Callable[..., Result]) -> str:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("hello")
    done = cli("snapshot", "--repo", str(repo_dir), "--json", str(tmp_path / "data"))
    assert done.code == 0, done.err
    return str(repo_dir)


@pytest.mark.parametrize("flags", [["--mode", "log"], ["--mode", "full"], ["--stage", "/tmp"], ["--lock-wait", "5"]])
def test_connector_only_snapshot_options_refused_for_paths(snapped: str, tmp_path: Path,
                                                           cli: Callable[..., Result], flags: list[str]) -> None:
    done = cli("snapshot", "--repo", snapped, *flags, str(tmp_path / "data"))
    assert done.code == 2 and flags[0] in done.err and "only for a connector URL" in done.err
    assert cli("snapshot", "--repo", snapped, *flags, "--from-command", "echo hi", "--stdin-name", "x").code == 2


@pytest.mark.parametrize("flags", [["--until", "2026-11-28 14:03:00"], ["--until-position", "mysql-bin.000001:4"],
                                   ["--databases", "shop"], ["--allow-gap"], ["--dry-run"]])
def test_database_restore_options_refused_with_target(snapped: str, tmp_path: Path, cli: Callable[..., Result],
                                                      flags: list[str]) -> None:
    done = cli("restore", "--repo", snapped, "latest", "--target", str(tmp_path / "out"), *flags)
    assert done.code == 2 and flags[0] in done.err and "only apply with --to" in done.err
    assert not (tmp_path / "out").exists()


def test_database_restore_refuses_an_empty_until_and_an_unknown_mode(snapped: str, cli: Callable[..., Result]) -> None:
    url = "mysql://root@localhost/?socket=/nonexistent/sock"
    done = cli("restore", "--repo", snapped, "--to", url, "--until", "", "--dry-run")
    assert done.code == 2 and "empty" in done.err
    done = cli("restore", "--repo", snapped, "--to", url, "--until", "2026-11-28T14:03:00Z",
               "--until-position", "mysql-bin.000001:4", "--dry-run")
    assert done.code == 2 and "not both" in done.err
    done = cli("snapshot", "--repo", snapped, url, "--mode", "diff")
    assert done.code == 2 and "no 'diff' mode" in done.err and "full, log, auto" in done.err


def test_a_files_snapshot_is_no_restore_point_of_a_database(snapped: str, cli: Callable[..., Result]) -> None:
    done = cli("restore", "--repo", snapped, "latest", "--to", "mysql://root@localhost/?socket=/x", "--dry-run")
    assert done.code == 2 and "not a mysql snapshot" in done.err
