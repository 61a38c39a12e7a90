"""dtstore forget on connector sources: retention keeps restore chains whole, shows each source's
restorable windows before → after, and refuses (without --force) to remove by ID what a snapshot that
stays needs.

The snapshots are real (a local repository), made by a stand-in connector whose kind ``chaintest`` is
registered as a chain module for the test: this module's :func:`links` and :func:`explain`.  Its
positions are :class:`Scn` numbers: a log continues a chain when it starts where the chain ends.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import Any, BinaryIO

import pytest

import dtstore
from dtstore import clock
from dtstore.connectors import points
from dtstore.connectors.base import SnapshotInfo, from_iso
from dtstore.connectors.chains import Link
from dtstore.connectors.positions import Scn
from dtstore.errors import EXIT_USAGE
from dtstore.sources.base import Entry, Reporter
from tests.cli.conftest import Result
from tests.helpers import PASSWORD

KIND = "chaintest"
SOURCE = "chaintest:db1"
T0 = dt.datetime(2026, 3, 2, 1, 0, tzinfo=dt.UTC)


def iso(moment: dt.datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# --- the chain module of the stand-in connector -----------------------------------------------------------------


def links(history: Sequence[SnapshotInfo]) -> list[Link]:
    found = []
    for snap in history:
        meta = snap.meta
        found.append(Link(snap.id, snap.short_id, snap.time, meta["mode"], Scn(meta["start"]), Scn(meta["end"]),
                          from_iso(meta["until"])))
    return found


def explain(end: Scn, next_start: Scn | None) -> str:
    return f"nothing continues SCN {end}" if next_start is None else f"SCN {end} .. {next_start} missing"


class ChainSource:
    kind = KIND
    def __init__(self, meta: dict[str, Any], source_id: str = SOURCE) -> None:
        self.display_paths = ["chaintest://db1"]
        self.meta = meta
        self.source_id = source_id

    def entries(self, reporter: Reporter) -> Iterator[Entry]:
        @contextmanager
        def opener() -> Iterator[BinaryIO]:
            yield io.BytesIO(json.dumps(self.meta).encode())

        yield Entry(path=b"chaintest/data", type="file", opener=opener)

    def metadata(self) -> dict[str, Any]:
        return dict(self.meta)


@pytest.fixture(autouse=True)
def chain_kind(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(points, "CHAIN_MODULES", MappingProxyType({**points.CHAIN_MODULES, KIND: __name__}))


class History:
    """Snapshots made at chosen times: ``add("f1", 0, "full", 0, 10)`` is a full at T0 + 0 h."""

    def __init__(self, url: str, cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.url, self.cache = url, cache
        self.ids: dict[str, str] = {}
        self.untils: dict[str, str] = {}
        self.monkeypatch = monkeypatch

    def add(self, name: str, hours: float, mode: str, start: int, end: int, *, tags: Sequence[str] = (),
            source_id: str = SOURCE) -> None:
        when = T0 + dt.timedelta(hours=hours)
        self.monkeypatch.setattr(clock, "now", lambda: when)
        meta = {"mode": mode, "start": start, "end": end, "until": iso(when - dt.timedelta(minutes=1))}
        with dtstore.Repository.open(self.url, PASSWORD, cache_dir=self.cache) as repo:
            self.ids[name] = repo.snapshot([ChainSource(meta, source_id)], tags=tags, host="h").id
        self.untils[name] = str(meta["until"])

    def short(self, name: str) -> str:
        return self.ids[name][:8]

    def until(self, name: str) -> str:
        """The restore point of the snapshot ``name``: its ``until``, as forget shows it."""
        return self.untils[name]

    def remaining(self) -> set[str]:
        names = {v: k for k, v in self.ids.items()}
        with dtstore.Repository.open(self.url, PASSWORD, cache_dir=self.cache) as repo:
            return {names[s.id] for s in repo.snapshots()}


@pytest.fixture
def history(repo_dir: Path, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> History:
    h = History(str(repo_dir), Path(env["DTSTORE_CACHE_DIR"]), monkeypatch)
    h.add("full", 0, "full", 10, 10)
    h.add("log1", 11, "log", 10, 20)
    h.add("log2", 17, "log", 20, 30)
    monkeypatch.setattr(clock, "now", lambda: T0 + dt.timedelta(days=1))
    return h


Cli = Callable[..., Result]


def decisions(result: Result) -> dict[str, dict[str, Any]]:
    return {r["short_id"]: r for r in map(json.loads, result.out.splitlines()) if r["type"] == "decision"}


def events(result: Result, kind: str) -> list[dict[str, Any]]:
    return [r for r in map(json.loads, result.out.splitlines()) if r["type"] == kind]


def test_keep_daily_keeps_the_middle_log_the_latest_needs(history: History, cli: Cli) -> None:
    r = cli("--json", "forget", "--repo", history.url, "--keep-daily", "7")
    assert r.code == 0, r.err
    d = decisions(r)
    assert all(x["keep"] for x in d.values())
    assert d[history.short("log1")]["reasons"] == [f"needed by {history.short('log2')} (restore chain)"]
    assert d[history.short("log2")]["reasons"] == ["daily snapshot"]
    assert history.remaining() == {"full", "log1", "log2"}
    (windows,) = events(r, "windows")
    span = {"from": history.until("full"), "to": history.until("log2")}
    assert windows == {"type": "windows", "kind": KIND, "source": SOURCE, "stream": "", "before": [span],
                       "after": [span], "lost": [], "stranded": []}


def test_keep_last_2_keeps_the_only_full(history: History, cli: Cli) -> None:
    r = cli("forget", "--repo", history.url, "--keep-last", "2", "--dry-run")
    assert r.code == 0, r.err
    line = next(x for x in r.out.splitlines() if x.startswith(f"  {history.short('full')}"))
    assert " keep " in line and f"needed by {history.short('log2')} and 1 more (restore chain)" in line
    assert "restorable (before → after)" in r.out
    assert f"{KIND} {SOURCE}: {history.until('full')} … {history.until('log2')} → unchanged" in r.out
    assert "would remove 0 snapshot(s), keep 3" in r.out


def test_a_policy_that_drops_a_whole_chain_shows_the_window_lost(history: History, cli: Cli) -> None:
    history.add("full2", 20, "full", 30, 30)
    history.add("log3", 22, "log", 30, 40)
    r = cli("forget", "--repo", history.url, "--keep-last", "1")
    assert r.code == 0, r.err
    assert history.remaining() == {"full2", "log3"}
    full, log2, full2, log3 = (history.until(n) for n in ("full", "log2", "full2", "log3"))
    assert (f"{KIND} {SOURCE}: {full} … {log3} → {full2} … {log3} (no longer restorable: {full} … {full2})"
            in r.out)
    assert log2 < full2


def test_forget_by_id_refuses_to_strand_a_kept_log(history: History, cli: Cli) -> None:
    for extra in ((), ("--dry-run",), ("--json",)):
        r = cli("forget", "--repo", history.url, history.short("log1"), *extra)
        assert r.code == EXIT_USAGE, r
        assert history.remaining() == {"full", "log1", "log2"}
    (error,) = events(r, "error")
    message = error["message"]
    assert f"refusing to forget {history.short('log1')}" in message
    assert (f"{KIND} {SOURCE} would lose {history.until('full')} … {history.until('log2')}, and log "
            f"{history.short('log2')} would stay but restore nothing") in message
    assert "--force" in message
    (windows,) = events(r, "windows")
    assert windows["stranded"] == [history.ids["log2"]]
    assert windows["before"] == [{"from": history.until("full"), "to": history.until("log2")}]
    assert windows["after"] == [{"from": history.until("full"), "to": history.until("full")}]
    assert windows["lost"] == [{"from": history.until("full"), "to": history.until("log2")}]
    r = cli("forget", "--repo", history.url, history.short("full"))
    assert r.code == EXIT_USAGE and "log " + history.short("log1") + ", log " + history.short("log2") in r.err
    assert "would lose " + history.until("full") + " … " + history.until("log2") in r.err


def test_force_removes_and_says_what_is_lost(history: History, cli: Cli) -> None:
    r = cli("forget", "--repo", history.url, history.short("log1"), "--force")
    assert r.code == 0, r.err
    assert history.remaining() == {"full", "log2"}
    assert (f"--force: {KIND} {SOURCE} loses {history.until('full')} … {history.until('log2')}; log "
            f"{history.short('log2')} restores nothing now") in r.err
    assert f"→ {history.until('full')} … {history.until('log1')}" not in r.out  # log1 is gone too
    full, log2 = history.until("full"), history.until("log2")
    assert f"→ {full} (no longer restorable: {full} … {log2})" in r.out


def test_forget_by_id_of_what_nothing_needs_is_allowed(history: History, cli: Cli) -> None:
    r = cli("forget", "--repo", history.url, history.short("log2"))
    assert r.code == 0, r.err
    assert history.remaining() == {"full", "log1"}
    assert (f"{history.until('full')} … {history.until('log2')} → {history.until('full')} … {history.until('log1')}"
            f" (no longer restorable: {history.until('log1')} … {history.until('log2')})") in r.out
    r = cli("forget", "--repo", history.url, history.short("full"), history.short("log1"))
    assert r.code == 0, r.err
    assert history.remaining() == set()
    assert "→ nothing restorable" in r.out


def test_force_needs_ids(history: History, cli: Cli) -> None:
    r = cli("forget", "--repo", history.url, "--keep-last", "1", "--force")
    assert r.code == EXIT_USAGE and "--force only applies to snapshots named by ID" in r.err


def test_what_filtered_out_snapshots_need_is_kept(history: History, cli: Cli) -> None:
    # tag filter: only the nightly fulls are considered; log1 and log2 (untagged) stay, and need "full"
    history.add("full2", 20, "full", 30, 30, tags=["nightly"])
    r = cli("--json", "forget", "--repo", history.url, "--tag", "nightly", "--keep-last", "1")
    assert r.code == 0, r.err
    assert history.remaining() == {"full", "log1", "log2", "full2"}
    # no full tagged nightly but full2; "full" is not considered at all: nothing to decide
    assert set(decisions(r)) == {history.short("full2")}
    history.add("log3", 22, "log", 30, 40, tags=["hourly"])
    history.add("log4", 23, "log", 40, 50)
    r = cli("--json", "forget", "--repo", history.url, "--tag", "hourly", "--keep-tag", "none")
    assert r.code == 0, r.err  # log4 stays (not considered) and needs log3
    assert decisions(r)[history.short("log3")]["reasons"] == [f"needed by {history.short('log4')} (restore chain)"]
    assert history.remaining() == {"full", "log1", "log2", "full2", "log3", "log4"}


def test_chains_cross_groups(history: History, cli: Cli) -> None:
    history.add("log3", 20, "log", 30, 40, tags=["hourly"])
    r = cli("--json", "forget", "--repo", history.url, "--group-by", "tags", "--keep-tag", "hourly")
    assert r.code == 0, r.err
    d = decisions(r)
    assert d[history.short("full")]["group"] == {"tags": ""} and d[history.short("log3")]["group"] == {"tags": "hourly"}
    assert d[history.short("full")]["reasons"] == [f"needed by {history.short('log3')} and 2 more (restore chain)"]
    assert history.remaining() == {"full", "log1", "log2", "log3"}


def test_other_sources_are_untouched_and_not_shown(history: History, cli: Cli) -> None:
    history.add("other", 18, "full", 5, 5, source_id="chaintest:db2")
    r = cli("--json", "forget", "--repo", history.url, "--source", "chaintest:db2", "--keep-last", "1")
    assert r.code == 0, r.err
    assert [w["source"] for w in events(r, "windows")] == ["chaintest:db2"]
    r = cli("--json", "forget", "--repo", history.url, history.short("other"))
    assert r.code == 0, r.err
    (windows,) = events(r, "windows")
    assert windows["after"] == [] and windows["lost"] == windows["before"]
    assert history.remaining() == {"full", "log1", "log2"}
