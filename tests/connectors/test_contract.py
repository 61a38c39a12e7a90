"""The connector contract suite: every connector keeps the same promises (``spec/connectors.md`` §7, §8).

Each test is generic and runs once per harness in ``HARNESSES`` (``contract.py`` says what a harness
provides; ``contract_mysql.py`` is MySQL's).  One source server per module; each test uses its own
repository.  Checked through the library (``make_source``, ``repo.snapshot``, ``restore_to``) and,
for the exit codes 2, 11 and 17, through the CLI as well.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

import dtstore
from dtstore.connectors import RestoreRequest, load, make_source, restore_points, restore_to
from dtstore.connectors.modes import MODES
from dtstore.errors import ChainError, RepositoryLocked, SourceError, StorageError, UsageError
from dtstore.storage import layout
from dtstore.storage.local import LocalStore
from tests.connectors.contract import (
    ConnectorHarness,
    Endpoint,
    Gate,
    PopenRecorder,
    SpySource,
    environment,
    fakes_on_path,
    listed_ids,
    new_repository,
    reopen,
    run_cli,
)
from tests.connectors.contract_domino import DominoHarness
from tests.connectors.contract_exchange import ExchangeHarness
from tests.connectors.contract_mssql import MssqlHarness
from tests.connectors.contract_mysql import MysqlHarness
from tests.connectors.contract_oracle import OracleHarness
from tests.connectors.contract_postgresql import PostgresqlHarness
from tests.helpers import PASSWORD
from tests.servers.postgresql import pg_dtstore  # noqa: F401 - fixture (PostgresqlHarness.start)

HARNESSES: list[type[ConnectorHarness]] = [MysqlHarness, OracleHarness, DominoHarness, MssqlHarness,
                                            ExchangeHarness, PostgresqlHarness]
"""one class per connector; adding SQL Server or Oracle is adding its harness here"""


@pytest.fixture(scope="module", params=HARNESSES, ids=[h.id for h in HARNESSES])
def harness(request: pytest.FixtureRequest) -> ConnectorHarness:
    made: ConnectorHarness = request.param()
    return made


@pytest.fixture(autouse=True)
def _applies(harness: ConnectorHarness, request: pytest.FixtureRequest) -> None:
    """A contract item the harness declares not applicable (``not_applicable``) is skipped, with its reason."""
    reason = harness.not_applicable.get(request.node.originalname.removeprefix("test_"))
    if reason is not None:
        pytest.skip(f"{harness.id}: {reason}")


@pytest.fixture(scope="module")
def source(harness: ConnectorHarness, request: pytest.FixtureRequest) -> Endpoint:
    return harness.start(request)


@pytest.fixture(autouse=True)
def _source_credentials(source: Endpoint) -> Iterator[None]:
    """Every test runs with the source's credentials in the environment (as a user's shell would)."""
    with source.using():
        yield


@pytest.fixture
def target(harness: ConnectorHarness, source: Endpoint, request: pytest.FixtureRequest) -> Endpoint:
    return harness.start_target(request)


@dataclass
class History:
    """A repository holding a full and a later snapshot of the source (``harness.next_mode``: a log, or a
    second full for a connector without log snapshots; read-only for the tests)."""

    base: Path
    repo: dtstore.Repository
    full: dtstore.Snapshot
    log: dtstore.Snapshot


@pytest.fixture(scope="module")
def history(harness: ConnectorHarness, source: Endpoint, tmp_path_factory: pytest.TempPathFactory) -> Iterator[History]:
    base = tmp_path_factory.mktemp("contract-history")
    repo = new_repository(base)
    full = take(repo, source, "full")
    harness.change()
    log = take(repo, source, harness.next_mode)
    yield History(base, repo, full, log)
    repo.close()


def take(repo: dtstore.Repository, source: Endpoint, mode: str, url: str | None = None, stage: Path | None = None,
         **options: float) -> dtstore.Snapshot:
    with source.using():
        made = make_source(url or source.url, repo=repo, mode=mode, stage_dir=stage)
        return repo.snapshot([made], **options)  # type: ignore[arg-type]


def spy(repo: dtstore.Repository, source: Endpoint, mode: str, base: Path | None = None, *, url: str | None = None,
        stage: Path | None = None, gate: Gate | None = None) -> SpySource:
    """The connector's Source for ``mode``, wrapped; with ``base``, committed() records what a
    freshly opened repository lists at that moment."""
    with source.using():
        inner = make_source(url or source.url, repo=repo, mode=mode, stage_dir=stage)
    return SpySource(inner, fresh=(lambda: listed_ids(base)) if base is not None else None, gate=gate)


# --- URLs and modes: usage errors (exit 2) before anything connects ------------------------------------------------


def test_bad_urls_are_usage_errors_that_echo_no_secret(
    harness: ConnectorHarness, source: Endpoint, history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    for bad in harness.bad_urls():
        with source.using(), pytest.raises(UsageError, match=bad.error) as made:
            make_source(bad.url, repo=None)
        with source.using(), pytest.raises(UsageError, match=bad.error) as planned:
            restore_to(RestoreRequest(bad.url, dry_run=True), repo=history.repo)
        with source.using():
            snapshot_cli = run_cli(capsys, history.base, "snapshot", bad.url)
            restore_cli = run_cli(capsys, history.base, "restore", "--to", bad.url, "--dry-run")
        for result in (snapshot_cli, restore_cli):
            assert result.code == 2, (bad.url, result)
            assert re.search(bad.error, result.err), (bad.url, result.err)
        texts = [str(made.value), str(planned.value), snapshot_cli.err, snapshot_cli.out, restore_cli.err]
        for secret in filter(None, (bad.secret, source.secret)):
            assert not any(secret in text for text in texts), (bad.url, texts)
    assert listed_ids(history.base) == [history.full.id, history.log.id]  # nothing was written
    with pytest.raises(UsageError, match=r"no connector for nosuch://"):
        make_source("nosuch://user@host/db", repo=None)


def test_an_unsupported_mode_is_a_usage_error_naming_the_supported_ones(
    harness: ConnectorHarness, source: Endpoint, history: History, capsys: pytest.CaptureFixture[str]
) -> None:
    supported = [*load(harness.scheme).modes, "auto"]
    unsupported = [m for m in MODES if m not in supported]
    nowhere = harness.unreachable_url()  # a usage error needs no server: the mode is checked first
    for mode in [*unsupported, "bogus"]:
        with pytest.raises(UsageError) as info:
            make_source(nowhere, repo=history.repo, mode=mode)
        assert info.value.exit_code == 2
        assert all(m in str(info.value) for m in supported), str(info.value)
    for mode in [*unsupported, "bogus"]:
        with source.using():
            result = run_cli(capsys, history.base, "snapshot", source.url, "--mode", mode)
        assert result.code == 2 and all(m in result.err for m in supported), result
    assert listed_ids(history.base) == [history.full.id, history.log.id]


# --- a failing tool, a truncated stream: no snapshot ----------------------------------------------------------------


def test_a_failing_or_truncated_tool_makes_no_snapshot(
    harness: ConnectorHarness, source: Endpoint, tmp_path: Path
) -> None:
    repo = new_repository(tmp_path)
    faults = harness.tool_faults(tmp_path)
    assert {f.mode for f in faults} >= {"full"}
    full_ids: list[str] = []
    for i, fault in enumerate(sorted(faults, key=lambda f: f.mode != "full")):  # the fulls' faults first
        if fault.mode != "full" and not full_ids:
            full_ids.append(take(repo, source, "full").id)  # a good base for the log faults
            harness.change()
        stage = tmp_path / f"stage-{i}" if fault.stage else None
        run = spy(repo, source, fault.mode, tmp_path, url=fault.url, stage=stage)
        with fakes_on_path(tmp_path / f"bin-{i}", fault.tools), source.using(), \
                pytest.raises(SourceError, match=fault.error) as info:
            repo.snapshot([run])  # type: ignore[list-item]
        assert run.commits == [], fault.name
        assert [s.id for s in repo.snapshots()] == full_ids, fault.name
        assert listed_ids(tmp_path) == full_ids, fault.name
        assert source.secret not in str(info.value), (fault.name, str(info.value))
        if stage is not None:
            assert not [p for p in stage.rglob("*")], f"{fault.name}: the stage folder was left behind"
    # the failed runs left nothing in the way (no source lock, no half chain): the next runs succeed
    done = take(repo, source, "log" if full_ids else "full", lock_wait=0)
    assert harness.mode_of(done) == ("log" if full_ids else "full")
    repo.close()


# --- committed(): after the manifest is durable, once, never for a failed run -------------------------------------


def test_committed_is_called_once_after_the_manifest_is_durable(
    harness: ConnectorHarness, source: Endpoint, tmp_path: Path
) -> None:
    repo = new_repository(tmp_path)
    made: list[dtstore.Snapshot] = []
    for mode in ("full", harness.next_mode):
        harness.change()
        run = spy(repo, source, mode, tmp_path)
        snapshot = repo.snapshot([run])  # type: ignore[list-item]
        made.append(snapshot)
        assert [c.snapshot.id for c in run.commits] == [snapshot.id], mode  # exactly once, this snapshot
        assert run.commits[0].listed == [s.id for s in made], mode  # already in the store when called
        assert run.prepared, "prepare() runs before the snapshot, under the source lock"
        with reopen(tmp_path, "check-cache") as fresh:
            stored = fresh.load_snapshot(snapshot.id)
            assert stored.source_metadata == run.commits[0].snapshot.source_metadata
            assert stored.source_id == run.commits[0].snapshot.source_id == run.source_id
    assert harness.mode_of(made[1]) == harness.next_mode
    # a hook that fails: the error reaches the caller, the snapshot stays committed, the lock is released
    harness.change()
    failing = spy(repo, source, harness.next_mode, tmp_path)
    failing.fail_commit = RuntimeError("the application refused the confirmation")
    with pytest.raises(RuntimeError, match="refused the confirmation"):
        repo.snapshot([failing])  # type: ignore[list-item]
    [commit] = failing.commits
    assert listed_ids(tmp_path) == [*(s.id for s in made), commit.snapshot.id]
    after = take(repo, source, harness.next_mode, lock_wait=0)  # a log continues the failed hook's log
    assert harness.mode_of(after) == harness.next_mode
    repo.close()


class FailingManifestStore(LocalStore):
    """A local store that cannot write manifests: every run's data is uploaded, its commit fails."""

    def put(self, name: str, data: bytes) -> None:
        if name.startswith(layout.SNAPSHOTS + "/"):
            raise StorageError(f"simulated failure writing {name}")
        super().put(name, data)


def test_committed_is_never_called_when_the_commit_fails(
    harness: ConnectorHarness, source: Endpoint, tmp_path: Path
) -> None:
    new_repository(tmp_path).close()
    with dtstore.Repository.open(FailingManifestStore(tmp_path / "repo"), PASSWORD,
                                 cache_dir=tmp_path / "cache") as failing:
        run = spy(failing, source, "full", tmp_path)
        with pytest.raises(StorageError, match="simulated failure"):
            failing.snapshot([run])  # type: ignore[list-item]
        assert run.commits == [] and failing.snapshots() == []
    assert listed_ids(tmp_path) == []
    with reopen(tmp_path, "cache") as repo:  # the source lock went with the failed run
        first = spy(repo, source, "full", tmp_path)
        repo.snapshot([first], lock_wait=0)  # type: ignore[list-item]
        assert len(first.commits) == 1


# --- a log that does not follow its base: exit 17 in log mode, a full in auto mode ---------------------------------


def test_a_log_that_does_not_follow_is_exit_17_in_log_mode_and_a_full_in_auto_mode(
    harness: ConnectorHarness, source: Endpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = new_repository(tmp_path)
    orphan = spy(repo, source, "log", tmp_path)
    with pytest.raises(ChainError) as nothing_before:  # a log with no base at all
        repo.snapshot([orphan])  # type: ignore[list-item]
    assert nothing_before.value.exit_code == 17 and orphan.commits == [] and repo.snapshots() == []

    full = take(repo, source, "full")
    harness.change()
    log = take(repo, source, "log")
    assert harness.mode_of(log) == "log"
    harness.break_chain()
    harness.change()
    broken = spy(repo, source, "log", tmp_path)
    with pytest.raises(ChainError, match=r"full snapshot is needed") as info:
        repo.snapshot([broken])  # type: ignore[list-item]
    assert info.value.exit_code == 17 and broken.commits == []
    assert source.secret not in str(info.value)
    assert listed_ids(tmp_path) == [full.id, log.id]
    with source.using():
        cli = run_cli(capsys, tmp_path, "snapshot", source.url, "--mode", "log")
    assert cli.code == 17 and "full snapshot is needed" in cli.err, cli
    assert listed_ids(tmp_path) == [full.id, log.id]

    healed = take(repo, source, "auto")
    assert harness.mode_of(healed) == "full" and harness.auto_reason(healed), healed.source_metadata
    harness.change()
    after = take(repo, source, "auto")  # the chain continues from the new full
    assert harness.mode_of(after) == "log" and not harness.auto_reason(after)
    [points] = restore_points(repo.snapshots())
    assert points.kind == harness.kind and len(points.streams) == 1
    # the healed full starts the newest window (which may also hold the old chain, when the break left
    # no restorable time between them: both fell in the same second)
    assert healed.id in [b.snapshot_id for b in points.streams[0].windows[-1].bases]
    assert points.streams[0].windows[-1].links[-1].snapshot_id == after.id

    repo.forget([full.id, log.id, healed.id])  # the newest log's base is gone
    with pytest.raises(ChainError):
        repo.snapshot([spy(repo, source, "log")])  # type: ignore[list-item]
    assert harness.mode_of(take(repo, source, "auto")) == "full"
    repo.close()


# --- two runs of one source at once never fork the chain -----------------------------------------------------------


@pytest.mark.slow
def test_two_concurrent_runs_of_one_source_never_fork_the_chain(
    harness: ConnectorHarness, source: Endpoint, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    repo = new_repository(tmp_path)
    full = take(repo, source, "full")
    harness.change()
    gate = Gate()
    first = spy(repo, source, "log", tmp_path, gate=gate)
    second_repo = reopen(tmp_path, "second-cache")  # another process, as far as the store can tell
    with ThreadPoolExecutor(2) as pool:
        running = pool.submit(repo.snapshot, [first])
        assert gate.started.wait(60), "the first run never started"
        # while it holds the source lock: a second run fails at once (11) or waits for it
        rival = spy(second_repo, source, "log", tmp_path)
        with pytest.raises(RepositoryLocked) as locked:
            second_repo.snapshot([rival], lock_wait=0)  # type: ignore[list-item]
        assert locked.value.exit_code == 11 and rival.prepared == [] and rival.commits == []
        with source.using():
            cli = run_cli(capsys, tmp_path, "snapshot", source.url, "--mode", "log")
        assert cli.code == 11, cli
        waiter = spy(second_repo, source, "log", tmp_path)
        waiting = pool.submit(second_repo.snapshot, [waiter], lock_wait=120)
        time.sleep(2.5)  # the waiter polls the lock (every second) meanwhile
        assert not waiting.done() and waiter.prepared == [], "the waiter did not wait for the lock"
        released_at = time.monotonic()
        harness.change()  # a change while the first run is still inside: it belongs to whichever log gets it
        gate.release.set()
        a = running.result(timeout=120)
        b = waiting.result(timeout=120)
    assert waiter.prepared and waiter.prepared[0] > released_at  # it read the history only under the lock
    assert [c.snapshot.id for c in first.commits] == [a.id] and [c.snapshot.id for c in waiter.commits] == [b.id]
    assert harness.mode_of(a) == harness.mode_of(b) == "log"
    assert listed_ids(tmp_path) == [full.id, a.id, b.id]
    [points] = restore_points(second_repo.snapshots())
    [stream] = points.streams
    assert len(stream.windows) == 1 and stream.gaps == []
    assert [link.snapshot_id for link in stream.windows[0].links] == [full.id, a.id, b.id]  # b continues a
    plan = restore_to(RestoreRequest(harness.unreachable_url(), dry_run=True), repo=second_repo)  # no fork
    assert plan.source_id == full.source_id
    second_repo.close()
    repo.close()


# --- a dry run touches nothing ---------------------------------------------------------------------------------------


def test_a_dry_run_touches_nothing(
    harness: ConnectorHarness, source: Endpoint, history: History, target: Endpoint,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    before = target.state()
    recorder = PopenRecorder().install(monkeypatch)
    nowhere = restore_to(RestoreRequest(harness.unreachable_url(), dry_run=True), repo=history.repo)
    assert nowhere.source_id == history.full.source_id and nowhere.describe()
    with target.using():
        plan = restore_to(RestoreRequest(target.url, dry_run=True), repo=history.repo)
        until = restore_to(RestoreRequest(target.url, dry_run=True, snapshot_id=history.full.id), repo=history.repo)
    assert plan.to_json()["source_id"] == until.to_json()["source_id"] == history.full.source_id
    assert recorder.argvs == [], "a dry run started a tool"
    monkeypatch.undo()
    assert target.state() == before
    result = run_cli(capsys, history.base, "restore", "--to", harness.unreachable_url(), "--dry-run")
    assert result.code == 0 and "dry run" in result.out, result
    assert listed_ids(history.base) == [history.full.id, history.log.id]


# --- secrets: in no argv, metadata, plan, output or error text -----------------------------------------------------


@pytest.mark.slow
def test_secrets_appear_in_no_argv_metadata_plan_or_error(
    harness: ConnectorHarness, source: Endpoint, target: Endpoint, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = target.state()
    recorder = PopenRecorder().install(monkeypatch)
    repo = new_repository(tmp_path)
    texts: list[str] = []
    take(repo, source, "full")
    take(repo, source, "full", stage=tmp_path / "stage")
    for url in harness.log_urls():
        harness.change()
        take(repo, source, "log", url=url)
    with source.using():
        cli = run_cli(capsys, tmp_path, "snapshot", source.url, "--mode", "auto", "--json")
    assert cli.code == 0, cli
    texts += [cli.out, cli.err]
    for shown in (run_cli(capsys, tmp_path, "snapshots", "--json"), run_cli(capsys, tmp_path, "restore-points"),
                  run_cli(capsys, tmp_path, "restore-points", "--json")):
        assert shown.code == 0, shown
        texts += [shown.out, shown.err]
    repo.close()  # the CLI wrote a snapshot: a Repository opened before it has not indexed its data
    repo = reopen(tmp_path, "cache")
    for snapshot in repo.snapshots():
        texts += [json.dumps(snapshot.to_json()), snapshot.source_id or "", *snapshot.paths]
    with target.using():
        dry = restore_to(RestoreRequest(target.url, dry_run=True), repo=repo)
        done = restore_to(RestoreRequest(target.url), repo=repo)
        cli = run_cli(capsys, tmp_path, "restore", "--to", target.url, "--dry-run", "--json")
    texts += [*dry.describe(), json.dumps(dry.to_json()), *done.describe(), json.dumps(done.to_json())]
    texts += [cli.out, cli.err]
    assert target.state() != empty, "the restore did nothing"

    refused_login = harness.refused_login()  # None: the source has no login (Domino's direct mode)
    refused_secret = refused_login[1] if refused_login is not None else source.secret
    if refused_login is not None:
        with environment(refused_login[0]), pytest.raises(SourceError) as refused:
            make_source(source.url, repo=repo)
        texts.append(str(refused.value))
        with environment(refused_login[0]):
            cli = run_cli(capsys, tmp_path, "snapshot", source.url)
        assert cli.code != 0
        texts += [cli.out, cli.err]
    with target.using(), pytest.raises(dtstore.DtstoreError) as overwrite:  # the target refuses to be overwritten
        restore_to(RestoreRequest(target.url), repo=repo)
    texts.append(str(overwrite.value))

    argvs = [" ".join(argv) for argv in recorder.argvs]
    assert set(harness.tools) <= set(recorder.tools()), recorder.tools()  # the scan saw the tools run
    for secret in (source.secret, target.secret, refused_secret, PASSWORD):
        leaks = [t for t in [*texts, *argvs] if secret in t]
        assert not leaks, f"{secret!r} leaked: {leaks[:3]}"
    repo.close()


# --- the form a bad URL's error shows -------------------------------------------------------------------------------


def test_bad_url_errors_show_the_expected_form(harness: ConnectorHarness, source: Endpoint) -> None:
    """A user who mistyped the URL is shown what it should look like (``URL_FORM``)."""
    missing = []
    for bad in harness.bad_urls():
        with pytest.raises(UsageError) as made:
            make_source(bad.url, repo=None)
        if harness.url_form not in str(made.value):
            missing.append(f"{bad.url}: {made.value}")
    assert not missing, f"errors without the form {harness.url_form}:\n" + "\n".join(missing)


def test_not_applicable_names_contract_items(harness: ConnectorHarness) -> None:
    """Every item a harness skips is a test of this suite (a misspelt name would skip nothing)."""
    items = {name.removeprefix("test_") for name in globals() if name.startswith("test_")}
    assert set(harness.not_applicable) <= items, sorted(set(harness.not_applicable) - items)
    assert set(harness.snapshot_modes) <= set(load(harness.scheme).modes), harness.snapshot_modes
