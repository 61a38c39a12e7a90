"""The Exchange connector against the simulated server (``tests/sim/exchange``): what the fakes can show.

End to end in file mode and in server mode (fake PowerShell discovery, ``diskshadow``, ``wbadmin``,
``eseutil`` on PATH): full → more generations → a log run adds only those → the source deleted →
restore → fake soft recovery → Clean Shutdown, page by page equal to what the simulated Exchange wrote.
BackupComplete (log truncation) happens after a committed snapshot and never after a failed upload or a
``kill -9``; a missing generation, a wrong log signature and circular logging are refused with their own
messages.  Nothing here ran against a real Exchange server.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import dtstore
from dtstore.connectors import RestoreRequest, make_source, restore_points, restore_to
from dtstore.connectors.exchange.ese import parse_database_header, parse_log_header, scan_folder
from dtstore.connectors.exchange.url import parse_url
from dtstore.connectors.positions import ExchangeGeneration
from dtstore.errors import ChainError, ConnectorError, UsageError
from tests.connectors.contract import run_cli
from tests.helpers import PASSWORD, init_repo
from tests.sim.exchange.store import SimServer, read_versions
from tests.sim.exchange.tools import write_bin

LOG = 32 * 1024
PAGE = 8192


@pytest.fixture
def sim(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimServer:
    server = SimServer.init(tmp_path / "sim", log_size=LOG, page_size=PAGE)
    server.write(3)
    monkeypatch.setenv("PATH", f"{write_bin((tmp_path / 'sim').resolve())}{os.pathsep}{os.environ['PATH']}")
    return SimServer(tmp_path / "sim")


@pytest.fixture
def repo(tmp_path: Path) -> Iterator[dtstore.Repository]:
    made = init_repo(str(tmp_path / "repo"), tmp_path / "cache")
    yield made
    made.close()


def file_url(sim: SimServer, name: str = "DB1") -> str:
    return f"exchange:///?edb={sim.db(name)['edb']}&logs={sim.stream_of(name)['folder']}"


def server_url(tmp_path: Path, *names: str, extra: str = "") -> str:
    return f"exchange://localhost/{','.join(names)}?stage={tmp_path / 'stage'}{extra}"


def take(repo: dtstore.Repository, url: str, mode: str) -> dtstore.Snapshot:
    source = make_source(url, repo=repo, mode=mode)
    return repo.snapshot([source])


def db_meta(snap: dtstore.Snapshot, name: str = "DB1") -> dict[str, Any]:
    return next(d for d in snap.source_metadata["databases"] if d["name"] == name)


def fresh(sim: SimServer) -> SimServer:
    return SimServer(sim.root)


def restore_target(tmp_path: Path, name: str = "out") -> tuple[str, Path, Path]:
    edb, logs = tmp_path / name / "DB1.edb", tmp_path / name / "logs"
    return f"exchange:///?edb={edb}&logs={logs}", edb, logs


# --- the files: headers and names ------------------------------------------------------------------------------


def test_ese_headers_of_both_eras_parse_and_damage_is_refused(tmp_path: Path) -> None:
    for era, digits in (("2003", 5), ("2016", 8)):
        server = SimServer.init(tmp_path / era, era=era, log_size=LOG, page_size=PAGE)
        server.write(2)
        first = server.state["databases"][0]
        header = parse_database_header(Path(first["edb"]).read_bytes()[:4096], first["edb"])
        assert header.state_name == "Dirty Shutdown" and header.required == (2, 3) and header.page_size == PAGE
        folder = scan_folder(os.listdir(server.stream_of(first["name"])["folder"]))
        assert folder.digits == digits and sorted(folder.generations) == [1, 2] and folder.current == "E00.log"
        assert folder.checkpoint == "E00.chk" and len(folder.reserve) == 2
        log = parse_log_header(server.log_path(first["name"], 2).read_bytes()[:4096])
        assert log.generation == 2 and log.signature == header.log_signature and not log.circular
        assert ExchangeGeneration.from_file_name(folder.generations[2]) == ("E00", 2)
    damaged = bytearray(Path(first["edb"]).read_bytes()[:4096])
    damaged[300] ^= 1
    with pytest.raises(ConnectorError, match="damaged"):
        parse_database_header(bytes(damaged))
    assert scan_folder(["E00.log", "E000000A.log", "E000000000B.log"]).digits == 8  # past 0xFFFFF ESE uses 8 digits


def test_urls_are_checked_before_anything_runs() -> None:
    assert parse_url("exchange:///?edb=C:\\Ex\\DB1.edb&logs=C:\\Ex\\Logs").edb == "C:\\Ex\\DB1.edb"
    for bad, error in (("exchange://server7/DB1", "runs on the Exchange server itself"),
                       ("exchange://admin:pw@localhost/", "no user or password"),
                       ("exchange:///?edb=/x/DB1.edb", "needs edb=PATH and logs=DIR"),
                       ("exchange:///?edb=/x/DB1.txt&logs=/x", "must name an .edb"),
                       ("exchange://localhost/?vss=sometimes", "vss= must be full"),
                       ("exchange://localhost/?colour=blue", "unknown Exchange URL parameter"),
                       ("exchange:///?edb=/x/a.edb&logs=/x&prefix=X1", "prefix= must be")):
        with pytest.raises(UsageError, match=error) as info:
            make_source(bad, repo=None)
        assert "expected exchange://localhost/" in str(info.value)
        assert "pw" not in str(info.value) or "pw@" not in str(info.value)


# --- file mode end to end --------------------------------------------------------------------------------------


@pytest.mark.parametrize("era", ["2016", "2003"])
def test_file_mode_full_log_restore_and_soft_recovery(tmp_path: Path, repo: dtstore.Repository,
                                                      monkeypatch: pytest.MonkeyPatch, era: str) -> None:
    server = SimServer.init(tmp_path / "sim", era=era, log_size=LOG, page_size=PAGE)
    server.write(3)
    monkeypatch.setenv("PATH", f"{write_bin((tmp_path / 'sim').resolve())}{os.pathsep}{os.environ['PATH']}")
    name = server.state["databases"][0]["name"]
    url = file_url(server, name)
    full = take(repo, url, "full")
    meta = db_meta(full, name)
    assert (meta["first"], meta["last"], meta["current_generation"]) == (1, 3, 4)
    assert meta["header"]["state"] == "Dirty Shutdown" and meta["header"]["required"] == [3, 4]
    assert full.source_metadata["truncation"] == "never" and meta["edb"] and meta["chk"]
    assert (meta["stm"] is not None) == (era == "2003")
    server = fresh(server)
    server.write(4)
    log = take(repo, url, "log")
    lmeta = db_meta(log, name)
    assert [entry["generation"] for entry in lmeta["logs"]] == [4, 5, 6, 7]  # only the new ones
    assert lmeta["edb"] is None and lmeta["header"] is None  # the EDB is not read again
    assert log.source_metadata["parent"] == full.id
    assert not any(bytes(i.path).endswith(b".edb") for i in repo.list_items(log))
    nothing = take(repo, url, "log")  # nothing new: a snapshot that adds almost nothing
    assert db_meta(nothing, name)["first"] is None and nothing.summary["bytes_stored"] < 4096
    expected = fresh(server).expected(name, 7)
    shutil.rmtree(tmp_path / "sim" / "C")  # the source is gone
    target, edb, logs = restore_target(tmp_path)
    target = target.replace("DB1.edb", f"{name}.edb")
    edb = edb.with_name(f"{name}.edb")
    plan = restore_to(RestoreRequest(target, scope=(name,)), repo=repo)
    assert plan.to_json()["last"] == 7 and plan.to_json()["first"] == 1
    restored = parse_database_header(edb.read_bytes()[:4096])
    assert restored.state_name == "Clean Shutdown" and restored.required == (0, 0)
    assert read_versions(edb, PAGE) == expected
    assert "E00.log" in os.listdir(logs) and "E00.chk" in os.listdir(logs)
    [points] = restore_points(repo.snapshots())
    assert [len(s.windows) for s in points.streams] == [1] and not points.streams[0].gaps


def test_the_full_alone_is_behind_and_a_position_target_replays_up_to_that_generation(
        sim: SimServer, repo: dtstore.Repository, tmp_path: Path) -> None:
    url = file_url(sim)
    take(repo, url, "full")
    fresh(sim).write(5)
    take(repo, url, "log")
    target, edb, _ = restore_target(tmp_path, "recover0")
    restore_to(RestoreRequest(target + "&recover=0"), repo=repo)
    assert parse_database_header(edb.read_bytes()[:4096]).state_name == "Dirty Shutdown"
    assert read_versions(edb, PAGE) != fresh(sim).expected("DB1", 8)  # the logs matter
    target, edb, logs = restore_target(tmp_path, "at6")
    plan = restore_to(RestoreRequest(target, until_position="gen:6"), repo=repo)
    assert plan.to_json()["last"] == 6
    assert read_versions(edb, PAGE) == fresh(sim).expected("DB1", 6)
    assert "E0000000006.log" not in os.listdir(logs)  # generation 6 is the current log E00.log


def test_restore_refuses_an_existing_database_or_a_used_log_folder_and_dry_run_touches_nothing(
        sim: SimServer, repo: dtstore.Repository, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    take(repo, file_url(sim), "full")
    target, edb, logs = restore_target(tmp_path)
    calls = sim.root / "calls.log"
    plan = restore_to(RestoreRequest(target, dry_run=True), repo=repo)
    text = "\n".join(plan.describe())
    assert "eseutil /r E00 /l" in text and "eseutil /mh" in text and "Clean Shutdown" in text
    assert not edb.parent.exists() and not calls.exists()
    result = run_cli(capsys, tmp_path, "restore", "--to", target, "--dry-run")
    assert result.code == 0 and "command: eseutil /r E00" in result.out, result
    logs.mkdir(parents=True)
    (logs / "E00.log").write_bytes(b"x")
    with pytest.raises(ConnectorError, match="not empty"):
        restore_to(RestoreRequest(target), repo=repo)
    (logs / "E00.log").unlink()
    edb.write_bytes(b"precious")
    with pytest.raises(ConnectorError, match="never overwrites"):
        restore_to(RestoreRequest(target), repo=repo)
    assert edb.read_bytes() == b"precious" and os.listdir(logs) == []


# --- refusals: each with its own message ----------------------------------------------------------------------


def test_a_missing_generation_is_refused_in_log_mode_and_heals_with_a_full_in_auto(
        sim: SimServer, repo: dtstore.Repository, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = file_url(sim)
    full = take(repo, url, "full")
    sim = fresh(sim)
    sim.write(3)
    sim.delete_generation("DB1", 5)
    with pytest.raises(ChainError, match=r"generation 5 \(E0000000005.log\) of database DB1 is missing") as info:
        take(repo, url, "log")
    assert info.value.exit_code == 17 and "full snapshot is needed" in str(info.value)
    cli = run_cli(capsys, tmp_path, "snapshot", url, "--mode", "log")
    assert cli.code == 17 and "is missing" in cli.err, cli
    healed = take(repo, url, "auto")
    assert healed.source_metadata["mode"] == "full" and "missing" in healed.source_metadata["auto_reason"]
    assert [s.id for s in repo.snapshots()] == [full.id, healed.id]


def test_a_recreated_log_stream_is_refused_for_its_log_signature(sim: SimServer, repo: dtstore.Repository) -> None:
    url = file_url(sim)
    take(repo, url, "full")
    sim = fresh(sim)
    sim.reset_logs("DB1")
    sim.write(2)
    with pytest.raises(ChainError, match=r"log signature of database DB1 is .* its log stream was recreated"):
        take(repo, url, "log")
    assert take(repo, url, "auto").source_metadata["mode"] == "full"


def test_circular_logging_is_refused_in_file_and_server_mode(
        sim: SimServer, repo: dtstore.Repository, tmp_path: Path) -> None:
    url = file_url(sim)
    take(repo, url, "full")
    sim = fresh(sim)
    sim.set_circular("DB1")
    sim.write(2)
    with pytest.raises(ChainError, match="circular logging is on for database DB1"):
        take(repo, url, "log")
    take(repo, server_url(tmp_path, "DB1"), "full")
    with pytest.raises(ChainError, match="circular logging is on for database DB1"):
        take(repo, server_url(tmp_path, "DB1"), "log")


# --- server mode: VSS through diskshadow, BackupComplete only from committed() ---------------------------------------


def test_server_mode_end_to_end_with_truncation_after_each_committed_snapshot(
        sim: SimServer, repo: dtstore.Repository, tmp_path: Path) -> None:
    url = server_url(tmp_path, extra="&system-state=1")
    source = make_source(url, repo=repo, mode="full")
    seen: list[list[int]] = []
    inner = source.committed

    def spy(snapshot: Any) -> None:
        seen.append(fresh(sim).generations("DB1"))  # when the hook runs the snapshot is already listed
        assert snapshot.id in [s.id for s in dtstore.Repository.open(str(tmp_path / "repo"), PASSWORD,
                                                                   cache_dir=tmp_path / "c2").snapshots()]
        inner(snapshot)

    source.committed = spy  # type: ignore[method-assign]
    full = repo.snapshot([source])
    assert seen == [[1, 2, 3, 4]]  # nothing truncated before the commit (4: rolled by the writer's freeze)
    assert fresh(sim).generations("DB1") == [3, 4]  # BackupComplete: below the checkpoint (3) at create
    events = fresh(sim).events()
    assert events.index("shadow created") < events.index("backup complete")
    assert full.source_id == "exchange:exsim" and full.source_metadata["system_state"]["files"] == 2
    assert [d["name"] for d in full.source_metadata["databases"]] == ["DB1", "DB2"]
    assert full.source_metadata["server"]["version"].startswith("Version 15.1")
    fresh(sim).write(2)
    log = take(repo, url, "log")
    assert [e["generation"] for e in db_meta(log)["logs"]] == [5, 6, 7]  # 7: rolled at the snapshot
    assert log.source_metadata["system_state"] is None
    expected = fresh(sim).expected("DB1", 7)
    shutil.rmtree(tmp_path / "sim" / "C")
    target, edb, _ = restore_target(tmp_path)
    restore_to(RestoreRequest(target, scope=("DB1",)), repo=repo)
    assert read_versions(edb, PAGE) == expected
    assert parse_database_header(edb.read_bytes()[:4096]).state_name == "Clean Shutdown"
    assert not list((tmp_path / "stage").iterdir())  # the stage is gone, the shadow unexposed
    calls = [json.loads(line) for line in (sim.root / "calls.log").read_text().splitlines()]
    assert ["eseutil", "/r", "E00", f"/l{edb.parent / 'logs'}", f"/s{edb.parent / 'logs'}", f"/d{edb.parent}"] in calls


def test_vss_copy_never_truncates(sim: SimServer, repo: dtstore.Repository, tmp_path: Path) -> None:
    take(repo, server_url(tmp_path, "DB1", extra="&vss=copy"), "full")
    assert fresh(sim).generations("DB1") == [1, 2, 3, 4] and "backup complete" not in fresh(sim).events()


def test_no_truncation_when_the_upload_fails(sim: SimServer, tmp_path: Path, s3_env: str, s3_server: Any,
                                             monkeypatch: pytest.MonkeyPatch,
                                             flaky_proxy_factory: Any) -> None:
    import functools

    import dtstore.unlocking as unlocking_module
    from dtstore.storage.wrappers import RetryingStore

    host, port = s3_server.endpoint_url.removeprefix("http://").split(":")
    proxy = flaky_proxy_factory(host, int(port))
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url())
    monkeypatch.setattr(unlocking_module, "RetryingStore",
                        functools.partial(RetryingStore, sleep=lambda _: None, attempts=2))
    import botocore.retries.standard
    import s3fs

    monkeypatch.setattr(s3fs.S3FileSystem, "retries", 1)  # as tests/remote/test_faults.py: no waiting
    monkeypatch.setattr(botocore.retries.standard.ExponentialBackoff, "delay_amount", lambda self, context: 0.0)
    init_repo(s3_env, tmp_path / "cache", pack_size=64 * 1024).close()
    with dtstore.Repository.open(s3_env, PASSWORD, cache_dir=tmp_path / "cache") as repo:
        source = make_source(server_url(tmp_path), repo=repo, mode="full")
        real_entries = source.entries

        def entries(reporter: Any) -> Iterator[Any]:
            for n, entry in enumerate(real_entries(reporter)):
                if n == 4:
                    proxy.pause()  # S3 goes away while the logs are being uploaded
                yield entry

        source.entries = entries  # type: ignore[method-assign]
        with pytest.raises(dtstore.DtstoreError):
            repo.snapshot([source])
        source.close()  # what dropping the source (or dtstore exiting) does: diskshadow's input ends
    events = fresh(sim).events()
    assert "shadow created" in events and "backup aborted" in events and "backup complete" not in events
    assert fresh(sim).generations("DB1") == [1, 2, 3, 4]  # every log still there
    proxy.resume()
    bucket, prefix = s3_env.removeprefix("s3://").split("/", 1)
    client = s3_server.client()  # the failed run could not remove its source lock while S3 was away (and this
    for item in client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/locks/").get("Contents", []):  # pid lives)
        client.delete_object(Bucket=bucket, Key=item["Key"])
    with dtstore.Repository.open(s3_env, PASSWORD, cache_dir=tmp_path / "cache") as repo:
        take(repo, server_url(tmp_path), "full")  # the next good run truncates, after its commit
    assert fresh(sim).generations("DB1") == [3, 4, 5] and "backup complete" in fresh(sim).events()


@pytest.mark.slow
def test_no_truncation_after_kill_9(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = SimServer.init(tmp_path / "sim", log_size=LOG, page_size=65536, pages=400)
    server.write(3)
    bin_dir = write_bin((tmp_path / "sim").resolve())
    init_repo(str(tmp_path / "repo"), tmp_path / "cache").close()
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "DTSTORE_PASSWORD": PASSWORD,
           "DTSTORE_CACHE_DIR": str(tmp_path / "cli-cache")}
    argv = [sys.executable, "-m", "dtstore.cli.main", "snapshot", server_url(tmp_path), "--repo",
            str(tmp_path / "repo"), "--limit-upload", "256"]
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while "shadow created" not in fresh(server).events() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # well inside the upload (≈ 50 MB at 256 KiB/s)
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    while "backup aborted" not in fresh(server).events() and time.monotonic() < deadline:
        time.sleep(0.05)  # diskshadow sees the end of its input and ends the session without BackupComplete
    events = fresh(server).events()
    assert "backup aborted" in events and "backup complete" not in events, events
    assert fresh(server).generations("DB1") == [1, 2, 3, 4]
    with dtstore.Repository.open(str(tmp_path / "repo"), PASSWORD, cache_dir=tmp_path / "cache") as repo:
        assert repo.snapshots() == []
        monkeypatch.setenv("PATH", env["PATH"])
        take(repo, server_url(tmp_path), "full")  # the dead run's stage is swept, the next run completes
    assert fresh(server).generations("DB1") == [3, 4, 5]


def test_exchange_2003_has_no_discovery_and_a_failed_writer_makes_no_snapshot(
        tmp_path: Path, repo: dtstore.Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    old = SimServer.init(tmp_path / "old", era="2003", log_size=LOG, page_size=PAGE)
    monkeypatch.setenv("PATH", f"{write_bin((tmp_path / 'old').resolve())}{os.pathsep}{os.environ['PATH']}")
    with pytest.raises(ConnectorError, match="file mode"):
        make_source("exchange://localhost/", repo=repo)
    server = SimServer.init(tmp_path / "new", log_size=LOG, page_size=PAGE)
    monkeypatch.setenv("PATH", f"{write_bin((tmp_path / 'new').resolve())}{os.pathsep}{os.environ['PATH']}")
    server.state["writer"] = "failed"
    server.save()
    with pytest.raises(ConnectorError, match="did not expose"):
        take(repo, server_url(tmp_path), "full")
    assert repo.snapshots() == [] and fresh(server).generations("DB1") == [] and old.root.exists()
    with pytest.raises(ConnectorError, match="do not exist on EXSIM"):
        make_source(server_url(tmp_path, "NoSuchDB"), repo=repo)


# --- the simulator's command line -----------------------------------------------------------------------------------


def test_simulator_command_line(tmp_path: Path) -> None:
    root = tmp_path / "cli-sim"
    run = [sys.executable, "-m", "tests.sim.exchange", "--root", str(root)]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    subprocess.run([*run, "init", "--era", "2003", "--databases", "priv1,pub1", "--log-size", "65536"], check=True,
                   env=env, capture_output=True)
    subprocess.run([*run, "write", "--generations", "2"], check=True, env=env, capture_output=True)
    folder = subprocess.run([*run, "bin"], check=True, env=env, capture_output=True, text=True).stdout.strip()
    out = subprocess.run([os.path.join(folder, "eseutil"), "/mh", str(root / "C/Exchsrvr/MDBDATA/priv1.edb")],
                         capture_output=True, text=True, check=True).stdout
    assert "State: Dirty Shutdown" in out and "Log Required: 2-3" in out
    logs = sorted(os.listdir(root / "C/Exchsrvr/MDBDATA"))
    assert "E0000001.log" in logs and "E0000002.log" in logs and "priv1.stm" in logs and "res1.log" in logs
    assert os.path.getsize(root / "C/Exchsrvr/MDBDATA/E0000001.log") == 65536


@pytest.mark.slow
def test_real_sizes(tmp_path: Path, repo: dtstore.Repository, monkeypatch: pytest.MonkeyPatch) -> None:
    """Exchange 2003: 5 MiB logs, 4 KiB pages; Exchange 2016: 1 MiB logs, 32 KiB pages."""
    for era, size in (("2003", 5 << 20), ("2016", 1 << 20)):
        server = SimServer.init(tmp_path / era, era=era, pages=64)
        monkeypatch.setenv("PATH", f"{write_bin((tmp_path / era).resolve())}{os.pathsep}{os.environ['PATH']}")
        server.write(4)
        name = server.state["databases"][0]["name"]
        take(repo, file_url(server, name), "full")
        fresh(server).write(3)
        log = take(repo, file_url(server, name), "log")
        assert {e["size"] for e in db_meta(log, name)["logs"]} == {size}
        edb, logs = tmp_path / f"out-{era}" / f"{name}.edb", tmp_path / f"out-{era}" / "logs"
        restore_to(RestoreRequest(f"exchange:///?edb={edb}&logs={logs}", scope=(name,),
                                  source_id=log.source_id), repo=repo)
        assert read_versions(edb, server.page_size) == fresh(server).expected(name, 7)


def test_restore_into_a_recovery_database_on_the_server(sim: SimServer, repo: dtstore.Repository,
                                                        tmp_path: Path) -> None:
    take(repo, server_url(tmp_path), "full")
    fresh(sim).write(2)
    log = take(repo, server_url(tmp_path), "log")
    plan = restore_to(RestoreRequest("exchange://localhost/RDB1?recovery-db=1", scope=("DB1",), dry_run=True),
                      repo=repo)
    assert any("New-MailboxDatabase -Recovery" in step for step in plan.steps)
    restore_to(RestoreRequest("exchange://localhost/RDB1?recovery-db=1", scope=("DB1",)), repo=repo)
    edb = Path(sim.db("DB1")["edb"]).parent.parent / "RDB1" / "DB1.edb"
    assert read_versions(edb, PAGE) == fresh(sim).expected("DB1", db_meta(log)["last"])
    assert parse_database_header(edb.read_bytes()[:4096]).state_name == "Clean Shutdown"
    assert fresh(sim).events()[-2:] == ["recovery-db RDB1", "mount RDB1"]
    with pytest.raises(UsageError, match="recovery-db=1"):
        restore_to(RestoreRequest("exchange://localhost/RDB1", dry_run=True), repo=repo)
    with pytest.raises(UsageError, match="pick one with --databases"):
        restore_to(RestoreRequest("exchange://localhost/RDB1?recovery-db=1", dry_run=True), repo=repo)


def test_a_time_target_keeps_the_generations_closed_before_it(repo: dtstore.Repository, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    sim = SimServer.init(tmp_path / "sim", databases=["DB1"], log_size=LOG, page_size=PAGE, clock="real")
    monkeypatch.setenv("PATH", f"{write_bin((tmp_path / 'sim').resolve())}{os.pathsep}{os.environ['PATH']}")
    sim.write(3)
    url = file_url(sim)
    take(repo, url, "full")
    fresh(sim).write(4)  # generations 4..7, one simulated minute each
    log = take(repo, url, "log")
    created = {e["generation"]: e["created"] for e in db_meta(log)["logs"]}
    target, edb, _ = restore_target(tmp_path)
    plan = restore_to(RestoreRequest(target, until=created[6]), repo=repo)  # 5 closed when 6 was created
    assert plan.to_json()["last"] == 5
    assert read_versions(edb, PAGE) == fresh(sim).expected("DB1", 5)


def test_windows_paths_map_into_the_exposed_shadow_copy() -> None:
    from pathlib import PureWindowsPath

    from dtstore.connectors.exchange.ese import windows_aware
    from dtstore.connectors.exchange.server import ShadowSession

    live = r"C:\Program Files\Microsoft\Exchange Server\V15\Mailbox\DB1\DB1.edb"
    exposed = PureWindowsPath(r"D:\stage\dtstore-exchange-1\shadow-1")
    mapped = ShadowSession.shadow_path(None, live, "C:\\", exposed)  # type: ignore[arg-type]
    assert str(mapped) == str(exposed) + live[2:]
    assert isinstance(windows_aware(live), PureWindowsPath) and windows_aware(live).stem == "DB1"
    with pytest.raises(ConnectorError, match="is not on volume"):
        ShadowSession.shadow_path(None, live, "E:\\", PureWindowsPath("D:/x"))  # type: ignore[arg-type]
