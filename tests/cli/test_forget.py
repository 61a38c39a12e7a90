"""dtstore forget, run in-process against a real local repository made with the library."""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dtstore
from dtstore import clock
from dtstore.cli.main import main
from dtstore.errors import EXIT_USAGE
from tests.helpers import PASSWORD, init_repo, machine_time_zone


class Repo:
    """A repository in tmp_path with named snapshots: alpha/db ×4 (the oldest tagged keep-me),
    beta/db ×2, alpha/other ×1 — created in that order, so in that time order."""

    def __init__(self, tmp_path: Path) -> None:
        self.url = str(tmp_path / "repo")
        self.cache = tmp_path / "cache"
        self.ids: dict[str, str] = {}
        with init_repo(self.url, self.cache) as repo:
            for name, host, source, tags in [
                ("a1", "alpha", "db", ["keep-me"]), ("a2", "alpha", "db", []), ("a3", "alpha", "db", ["x"]),
                ("a4", "alpha", "db", []), ("b1", "beta", "db", []), ("b2", "beta", "db", []),
                ("o1", "alpha", "other", []),
            ]:
                snap = repo.snapshot([dtstore.StdinSource(source, io.BytesIO(name.encode() * 100))],
                                     tags=tags, host=host)
                self.ids[name] = snap.id

    def remaining(self) -> set[str]:
        """Names of the snapshots still in the repository (opened afresh)."""
        by_id = {v: k for k, v in self.ids.items()}
        with dtstore.Repository.open(self.url, PASSWORD, cache_dir=self.cache) as repo:
            return {by_id[s.id] for s in repo.snapshots()}

    def name(self, snapshot_id: str) -> str:
        return {v: k for k, v in self.ids.items()}[snapshot_id]


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DTSTORE_PASSWORD", PASSWORD)
    monkeypatch.setenv("DTSTORE_CACHE_DIR", str(tmp_path / "cache"))
    for name in ("DTSTORE_PASSWORD_FILE", "DTSTORE_PASSWORD_COMMAND", "DTSTORE_REPOSITORY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def repo(env: None, tmp_path: Path) -> Repo:
    return Repo(tmp_path)


ALL = {"a1", "a2", "a3", "a4", "b1", "b2", "o1"}


def forget(repo: Repo, *args: str) -> int:
    return int(main(["forget", "--repo", repo.url, *args]))


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_dry_run_removes_nothing_and_says_why(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    assert forget(repo, "--keep-last", "1", "--keep-tag", "keep-me", "--dry-run") == 0
    out = capsys.readouterr().out
    assert repo.remaining() == ALL
    assert "host=alpha source=stdin:db" in out and "host=beta source=stdin:db" in out
    assert "host=alpha source=stdin:other" in out
    assert "--keep-last 1 --keep-tag keep-me" in out
    lines = {line.split()[0]: line for line in out.splitlines() if line.startswith("  ") and line.split()}
    assert "keep" in lines[repo.ids["a4"][:8]] and "last snapshot" in lines[repo.ids["a4"][:8]]
    assert "tag keep-me" in lines[repo.ids["a1"][:8]]
    assert "remove" in lines[repo.ids["a2"][:8]]
    assert "dry run: would remove 3 snapshot(s), keep 4; nothing was removed" in out


def test_real_run_removes_exactly_what_the_dry_run_planned(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    assert forget(repo, "--keep-last", "1", "--keep-tag", "keep-me", "--dry-run", "--json") == 0
    planned = json_lines(capsys.readouterr().out)
    assert forget(repo, "--keep-last", "1", "--keep-tag", "keep-me", "--json") == 0
    done = json_lines(capsys.readouterr().out)
    assert [d for d in planned if d["type"] == "decision"] == [d for d in done if d["type"] == "decision"]
    removed = {repo.name(d["id"]) for d in done if d["type"] == "decision" and not d["keep"]}
    assert removed == {"a2", "a3", "b1"}
    assert repo.remaining() == ALL - removed == {"a1", "a4", "b2", "o1"}
    assert done[-1] == {"type": "summary", "kept": 4, "removed": 3, "dry_run": False}
    assert planned[-1] == {"type": "summary", "kept": 4, "removed": 3, "dry_run": True}


def test_json_decision_shape(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "forget", "--repo", repo.url, "--keep-last", "2", "--keep-tag", "keep-me", "-n"]) == 0
    records = json_lines(capsys.readouterr().out)
    decisions = [r for r in records if r["type"] == "decision"]
    assert [r["type"] for r in records] == ["decision"] * 7 + ["summary"]
    assert {repo.name(d["id"]) for d in decisions} == ALL
    for d in decisions:
        assert {"type", "id", "time", "host", "source", "keep", "reasons"} <= set(d)
        assert isinstance(d["keep"], bool) and isinstance(d["reasons"], list)
        assert d["time"].endswith("Z") and dt.datetime.fromisoformat(d["time"].replace("Z", "+00:00"))
        assert d["keep"] == bool(d["reasons"])
    by_name = {repo.name(d["id"]): d for d in decisions}
    assert by_name["a1"]["reasons"] == ["tag keep-me"]
    assert by_name["a4"]["reasons"] == ["last snapshot"]
    assert by_name["a3"]["reasons"] == ["last snapshot"]
    assert by_name["a2"] == {**by_name["a2"], "keep": False, "reasons": [], "host": "alpha", "source": "stdin:db"}
    assert by_name["a2"]["group"] == {"host": "alpha", "source": "stdin:db"}
    # Newest first within a group.
    alpha_db = [repo.name(d["id"]) for d in decisions if d["group"] == {"host": "alpha", "source": "stdin:db"}]
    assert alpha_db == ["a4", "a3", "a2", "a1"]
    assert records[-1] == {"type": "summary", "kept": 6, "removed": 1, "dry_run": True}
    assert repo.remaining() == ALL


def test_group_by_and_filters(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    assert forget(repo, "--keep-last", "1", "--group-by", "host", "--host", "beta") == 0
    assert repo.remaining() == ALL - {"b1"}
    assert forget(repo, "--keep-last", "1", "--tag", "x") == 0  # only a3 considered: it is the last of its group
    assert repo.remaining() == ALL - {"b1"}
    assert forget(repo, "--keep-last", "2", "--group-by", "") == 0
    assert repo.remaining() == {"b2", "o1"}
    out = capsys.readouterr().out
    assert "all snapshots" in out


def test_source_filter(repo: Repo) -> None:
    assert forget(repo, "--keep-last", "1", "--source", "stdin:db") == 0
    assert repo.remaining() == {"a4", "b2", "o1"}


def test_explicit_snapshot_ids(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    assert forget(repo, repo.ids["a2"][:10], repo.ids["b1"], "--dry-run", "--json") == 0
    records = json_lines(capsys.readouterr().out)
    assert {repo.name(r["id"]) for r in records if r["type"] == "decision"} == {"a2", "b1"}
    assert all(r["reasons"] == ["named on the command line"] for r in records if r["type"] == "decision")
    assert repo.remaining() == ALL
    assert forget(repo, repo.ids["a2"][:10], repo.ids["b1"]) == 0
    assert repo.remaining() == ALL - {"a2", "b1"}
    assert "removed 2 snapshot(s), kept 0" in capsys.readouterr().out


def test_unknown_snapshot_id_removes_nothing(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    assert forget(repo, repo.ids["a2"], "0" * 64) == 1
    assert "no snapshot matches" in capsys.readouterr().err
    assert repo.remaining() == ALL


@pytest.mark.parametrize(("args", "message"), [
    ((), "empty policy"),
    (("--keep-last", "0"), "empty policy"),
    (("--keep-within", "0d"), "empty policy"),
    (("--host", "alpha"), "empty policy"),
    (("--keep-within", "2 days"), "invalid duration"),
    (("--keep-daily", "-3"), "--keep-daily must be a number"),
    (("--keep-last", "1", "--group-by", "host,user"), "cannot group by user"),
    (("--keep-tag", ""), "--keep-tag needs a tag"),
])
def test_usage_errors_exit_2_and_remove_nothing(repo: Repo, capsys: pytest.CaptureFixture[str],
                                                args: tuple[str, ...], message: str) -> None:
    assert forget(repo, *args) == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert repo.remaining() == ALL


def test_ids_and_policy_together_are_refused(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    assert forget(repo, repo.ids["a1"], "--keep-last", "1") == EXIT_USAGE
    assert forget(repo, repo.ids["a1"], "--host", "alpha") == EXIT_USAGE
    assert "not both" in capsys.readouterr().err
    assert repo.remaining() == ALL


def test_empty_policy_json_error(repo: Repo, capsys: pytest.CaptureFixture[str]) -> None:
    assert forget(repo, "--json") == EXIT_USAGE
    (record,) = json_lines(capsys.readouterr().out)
    assert record["type"] == "error" and record["exit_code"] == EXIT_USAGE


def test_prune_runs_after_forget_when_available(repo: Repo, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[set[str]] = []

    def fake_prune(self: dtstore.Repository) -> None:
        calls.append({repo.name(s.id) for s in self.snapshots()})

    monkeypatch.setattr(dtstore.Repository, "prune", fake_prune, raising=False)
    assert forget(repo, "--keep-last", "1", "--prune", "--dry-run") == 0
    assert calls == []
    assert forget(repo, "--keep-last", "1", "--prune") == 0
    assert calls == [{"a4", "b2", "o1"}]
    assert forget(repo, "--keep-last", "1", "--prune") == 0  # nothing removed: no prune, like restic
    assert len(calls) == 1


def test_prune_with_the_real_prune(repo: Repo) -> None:
    assert forget(repo, "--keep-last", "1", "--prune") == 0
    assert repo.remaining() == {"a4", "b2", "o1"}


@pytest.fixture
def utc_machine(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with machine_time_zone(monkeypatch, "UTC"):
        yield


def test_calendar_rule_with_a_frozen_clock(env: None, tmp_path: Path, utc_machine: None,
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    current = [dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)]
    monkeypatch.setattr(clock, "now", lambda: current[0])
    url, cache = str(tmp_path / "repo"), tmp_path / "cache"
    made: dict[dt.datetime, str] = {}
    with init_repo(url, cache) as r:
        for when in [dt.datetime(2026, 1, d, h, tzinfo=dt.UTC) for d, h in ((1, 12), (2, 9), (2, 18), (3, 7))]:
            current[0] = when
            made[when] = r.snapshot([dtstore.StdinSource("db", io.BytesIO(b"x"))], host="h").id
    current[0] = dt.datetime(2026, 1, 20, tzinfo=dt.UTC)
    # keep-within counts back from the newest snapshot (3 Jan 07:00), not from now (20 Jan).
    assert main(["forget", "--repo", url, "--keep-daily", "2", "--keep-within", "12h", "--json"]) == 0
    records = json_lines(capsys.readouterr().out)
    reasons = {r["time"]: r["reasons"] for r in records if r["type"] == "decision"}
    assert reasons == {"2026-01-03T07:00:00Z": ["within 12h", "daily snapshot"],
                       "2026-01-02T18:00:00Z": ["daily snapshot"],
                       "2026-01-02T09:00:00Z": [], "2026-01-01T12:00:00Z": []}
    with dtstore.Repository.open(url, PASSWORD, cache_dir=cache) as r:
        assert {s.id for s in r.snapshots()} == {made[dt.datetime(2026, 1, 3, 7, tzinfo=dt.UTC)],
                                                 made[dt.datetime(2026, 1, 2, 18, tzinfo=dt.UTC)]}
