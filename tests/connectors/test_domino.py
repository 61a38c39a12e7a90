"""The Domino connector in direct mode, against the simulated server (``tests/sim/domino``).

What these tests can prove: that the connector does what spec/connectors-domino.md says with files
laid out as the simulator lays them out.  They prove nothing about real NSF or TXN files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

import dtstore
from dtstore.connectors import RestoreRequest, make_source, restore_points, restore_to
from dtstore.connectors.base import SnapshotInfo
from dtstore.connectors.domino.chain import DominoPoint, links
from dtstore.connectors.domino.restore import INI_ASIDE, TRANSLOG_DIR
from dtstore.connectors.domino.url import parse_url
from dtstore.errors import ChainError, ConnectorError, UsageError
from tests.connectors.contract import new_repository, run_cli
from tests.sim.domino.server import DominoSim, tree

SMALL = 64 << 10
SKIP = ("pid.nbf", "names.lck")


@pytest.fixture
def sim(tmp_path: Path) -> DominoSim:
    server = DominoSim(tmp_path / "srv")
    server.init(extent_size=SMALL, db_size=SMALL, mail_users=6)
    server.write(extents=2)
    return server


@pytest.fixture
def repo(tmp_path: Path) -> dtstore.Repository:
    made = new_repository(tmp_path)
    yield made
    made.close()


def url(sim: DominoSim, **params: str) -> str:
    query = "&".join(f"{k}={v}" for k, v in params.items())
    return f"domino://{sim.data}" + (f"?{query}" if query else "")


def take(repo: dtstore.Repository, sim: DominoSim, mode: str, **params: str) -> dtstore.Snapshot:
    return repo.snapshot([make_source(url(sim, **params), repo=repo, mode=mode)])  # type: ignore[list-item]


def data_tree(sim: DominoSim) -> dict[str, bytes]:
    return {k: v for k, v in tree(sim.data).items() if k not in SKIP and k != "notes.ini"}


def translog_tree(sim: DominoSim) -> dict[str, bytes]:
    return {k: v for k, v in tree(sim.translog).items() if k != "nlogctrl.lfh"}


def test_url_forms_and_errors() -> None:
    parsed = parse_url("domino:///local/notesdata?ini=/opt/notes.ini&snapshot=1&exclude=*.ft&exclude=tmp")
    assert parsed.data == Path("/local/notesdata") and parsed.ini == Path("/opt/notes.ini") and parsed.snapshot
    assert parsed.excludes == ("*.ft", "tmp")
    assert parse_url("domino:///C:/Domino/Data").data == Path("C:/Domino/Data")
    for bad, error in [("domino://host/local/notesdata", "local directory"), ("domino:///x?colour=1", "unknown"),
                       ("domino:///x?snapshot=maybe", "snapshot="), ("domino://", "data directory")]:
        with pytest.raises(UsageError, match=error) as info:
            parse_url(bad)
        assert "domino:///PATH/TO/notesdata" in str(info.value)


def test_full_log_restore_end_to_end(sim: DominoSim, repo: dtstore.Repository, tmp_path: Path) -> None:
    before_full = data_tree(sim)
    ini = sim.ini.read_bytes()
    full = take(repo, sim, "full")
    meta = full.source_metadata
    assert meta["mode"] == "full" and meta["log"]["style"] == "archive"
    assert meta["server"]["name"] == "CN=sim1/O=Acme" and meta["server"]["version"] == "14.0.0"
    assert [e["sequence"] for e in meta["extents"]] == [1, 2, 3] and meta["extents"][-1]["partial"]
    assert all(len(e["sha256"]) == 64 for e in meta["extents"])
    dbs = {d["file"]: d for d in meta["databases"]}
    assert set(dbs) == set(sim.databases())
    assert dbs["names.nsf"]["ods"] == 55 and ":" in dbs["names.nsf"]["replica_id"] and dbs["names.nsf"]["dbiid"]
    assert meta["control"]["item"] == "domino/translog/nlogctrl.lfh" and meta["ini"]["item"] == "domino/notes.ini"
    assert "names.lck" not in {f[0] for f in meta["files"]}  # excluded

    # more extents and changed mail files: the log run takes only the extents from where the full ended
    sim.write(extents=3, databases=3)
    log = take(repo, sim, "log")
    lm = log.source_metadata
    end = DominoPoint.parse(meta["log_end"])
    assert lm["mode"] == "log" and lm["log_start"] == meta["log_end"]
    assert [e["sequence"] for e in lm["extents"]] == list(range(end.sequence, end.sequence + 4))
    assert lm["db_copies"] == [] and lm["files_new"] == []
    at_log = translog_tree(sim)

    shutil.rmtree(sim.root)  # the server is lost
    target = tmp_path / "restore" / "notesdata"
    plan = restore_to(RestoreRequest(f"domino://{target}"), repo=repo)
    assert plan.to_json()["base"] == full.id and plan.to_json()["snapshots"] == [full.id, log.id]
    restored = tree(target)
    assert (target / INI_ASIDE).read_bytes() == ini and "notes.ini" not in restored
    assert {k: v for k, v in restored.items() if not k.startswith((TRANSLOG_DIR, INI_ASIDE))} == before_full
    assert tree(target / TRANSLOG_DIR) == at_log  # every extent, the current one with its newest bytes
    assert not (target / TRANSLOG_DIR / "nlogctrl.lfh").exists()


def test_a_second_full_reads_only_the_changed_files(sim: DominoSim, repo: dtstore.Repository) -> None:
    first = take(repo, sim, "full")
    sim.write(extents=0, databases=2)
    again = take(repo, sim, "full")
    files = first.summary["files"]
    assert again.summary["files"] == files
    # read again: the (at most 5) changed databases, the current extent, the control file; nothing else
    assert files - again.summary["files_unchanged"] <= 5 + 1 + 1, again.summary
    assert again.summary["bytes_read"] < again.summary["bytes_total"] / 2


def test_latest_restore_equals_the_latest_snapshot(sim: DominoSim, repo: dtstore.Repository, tmp_path: Path) -> None:
    take(repo, sim, "full")
    sim.write(extents=1, compact=["mail/user002.nsf"])
    sim.add_daos(2)
    auto = take(repo, sim, "auto")
    assert auto.source_metadata["mode"] == "log"
    assert [d["file"] for d in auto.source_metadata["db_copies"]] == ["mail/user002.nsf"]
    assert len(auto.source_metadata["files_new"]) == 2  # new DAOS objects ride with the log
    state = data_tree(sim)
    compacted = state["mail/user002.nsf"]
    logs = translog_tree(sim)
    target = tmp_path / "r" / "notesdata"
    restore_to(RestoreRequest(f"domino://{target}"), repo=repo)
    restored = tree(target)
    assert restored["mail/user002.nsf"] == compacted  # the copy taken after the new DBIID
    for name in [n for n in state if n.startswith("DAOS/")]:
        assert restored[name] == state[name]
    assert tree(target / TRANSLOG_DIR) == logs


def test_restore_chosen_databases_and_until(sim: DominoSim, repo: dtstore.Repository, tmp_path: Path) -> None:
    full = take(repo, sim, "full")
    sim.write(extents=1)
    first = take(repo, sim, "log")
    sim.write(extents=1)
    take(repo, sim, "log")
    target = tmp_path / "one"
    plan = restore_to(RestoreRequest(f"domino://{target}", scope=("mail/user001.nsf",), dry_run=True), repo=repo)
    assert {f["dest"] for f in plan.to_json()["files"] if f["area"] == "data"} == {"mail/user001.nsf"}
    assert not target.exists()  # a dry run writes nothing
    until = first.source_metadata["covered_until"]
    plan = restore_to(RestoreRequest(f"domino://{target}", until=until, scope=("mail/user001.nsf",)), repo=repo)
    assert plan.to_json()["snapshots"] == [full.id, first.id]
    assert sorted(tree(target)) == sorted(["mail/user001.nsf", *(f"{TRANSLOG_DIR}/{n}" for n in tree(
        target / TRANSLOG_DIR))])
    with pytest.raises(UsageError, match=r"no database mail/nobody\.nsf"):
        restore_to(RestoreRequest(f"domino://{tmp_path / 'x'}", scope=("mail/nobody.nsf",)), repo=repo)


def test_restore_never_overwrites(sim: DominoSim, repo: dtstore.Repository, tmp_path: Path) -> None:
    take(repo, sim, "full")
    target = tmp_path / "live"
    target.mkdir()
    (target / "names.nsf").write_bytes(b"live database")
    (target / "pid.nbf").write_text(f"{os.getpid()} server\n")
    with pytest.raises(ConnectorError, match="open on it"):
        restore_to(RestoreRequest(f"domino://{target}"), repo=repo)
    (target / "pid.nbf").unlink()
    with pytest.raises(ConnectorError, match="never overwrites"):
        restore_to(RestoreRequest(f"domino://{target}"), repo=repo)
    assert (target / "names.nsf").read_bytes() == b"live database"
    restore_to(RestoreRequest(f"domino://{target}?replace=1"), repo=repo)
    assert (target / "names.nsf").read_bytes() == (sim.data / "names.nsf").read_bytes()


def test_a_running_server_is_refused_unless_snapshot(sim: DominoSim, repo: dtstore.Repository) -> None:
    sim.mark_running(os.getpid())
    with pytest.raises(ConnectorError, match="server is running"):
        take(repo, sim, "full")
    assert repo.snapshots() == []
    full = take(repo, sim, "full", snapshot="1")
    assert full.source_metadata["snapshot"] is True
    sim.write(extents=1)
    assert take(repo, sim, "log").source_metadata["mode"] == "log"  # extents are read with shared access
    sim.write(extents=0, compact=["mail/user001.nsf"])
    with pytest.raises(ConnectorError, match=r"database mail/user001\.nsf"):
        take(repo, sim, "auto")  # the new copy would be an open NSF
    sim.mark_stopped()


@pytest.mark.parametrize("breaking, message", [
    ("missing", r"extent S0000003\.TXN is missing"),
    ("logid", r"new LogID"),
    ("circular", r"circular style"),
    ("dbiid", r"database mail/user003\.nsf has a new DBIID"),
    ("newdb", r"database mail/new\.nsf is new"),
])
def test_chain_breaks_have_their_own_messages(sim: DominoSim, repo: dtstore.Repository, breaking: str,
                                              message: str, tmp_path: Path,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    take(repo, sim, "full")  # ends in extent 3
    sim.write(extents=2)
    if breaking == "missing":
        sim.remove_extent(3)
    elif breaking == "logid":
        sim.recreate_log()
        sim.write(extents=1)
    elif breaking == "circular":
        sim.set_style(0)
    elif breaking == "dbiid":
        sim.write(extents=0, compact=["mail/user003.nsf"])
    else:
        shutil.copy(sim.data / "mail/user001.nsf", sim.data / "mail/new.nsf")
    with pytest.raises(ChainError, match=message) as info:
        take(repo, sim, "log")
    assert info.value.exit_code == 17
    cli = run_cli(capsys, tmp_path, "snapshot", url(sim), "--mode", "log")
    assert cli.code == 17 and "full" in cli.err, cli
    healed = take(repo, sim, "auto")
    if breaking in ("dbiid", "newdb"):
        assert healed.source_metadata["mode"] == "log" and len(healed.source_metadata["db_copies"]) == 1
    else:
        assert healed.source_metadata["mode"] == "full" and healed.source_metadata["auto_reason"]


def test_restore_points_and_gaps(sim: DominoSim, repo: dtstore.Repository) -> None:
    full = take(repo, sim, "full")
    sim.write(extents=1)
    log = take(repo, sim, "log")
    nothing = take(repo, sim, "log")  # no new log bytes: a link one mark on (no gap, no fork)
    assert nothing.source_metadata["log_end"] == nothing.source_metadata["log_start"] + "+1"
    sim.write(extents=0)
    after = take(repo, sim, "log")
    assert after.source_metadata["log_start"] == nothing.source_metadata["log_end"]
    [points] = restore_points(repo.snapshots())
    [stream] = points.streams
    assert points.kind == "domino" and len(stream.windows) == 1 and stream.gaps == [] and stream.point_in_time
    assert [link.snapshot_id for link in stream.windows[0].links] == [full.id, log.id, nothing.id, after.id]
    history = [SnapshotInfo.of(s) for s in repo.snapshots()]
    assert [link.kind for link in links(history)] == ["full", "log", "log", "log"]


def test_log_without_a_full_is_a_chain_error(sim: DominoSim, repo: dtstore.Repository) -> None:
    with pytest.raises(ChainError, match="no earlier direct-mode snapshot"):
        take(repo, sim, "log")
    assert take(repo, sim, "auto").source_metadata["mode"] == "full"


def test_positions_parse_and_order() -> None:
    a, b = DominoPoint.parse("AB:3@100"), DominoPoint.parse("AB:4")
    assert a < b and str(a) == "AB:3@100" and DominoPoint.parse("7") == DominoPoint("", 7, 0)
    assert DominoPoint.parse("AB:3@100+2") == DominoPoint("AB", 3, 100, 2)
    assert a.after(a) == DominoPoint("AB", 3, 100, 1) and a.after(b) == b
    with pytest.raises(UsageError):
        DominoPoint.parse("AB:x")


@pytest.mark.slow
def test_real_extent_size(tmp_path: Path) -> None:
    """64 MiB extents, as on a real server: the full, then a log run with one more extent."""
    sim = DominoSim(tmp_path / "srv")
    sim.init(extent_size=64 << 20, db_size=1 << 20, mail_users=2)
    sim.write(extents=1, record=4 << 20)
    with new_repository(tmp_path) as repo:
        full = take(repo, sim, "full")
        sim.write(extents=1, record=4 << 20)
        log = take(repo, sim, "log")
        assert [e["size"] for e in log.source_metadata["extents"]] == [64 << 20, 64 << 20]
        assert log.summary["bytes_new"] < 80 << 20  # the re-sent extent's old bytes are deduplicated
        target = tmp_path / "r"
        restore_to(RestoreRequest(f"domino://{target}"), repo=repo)
        assert tree(target / TRANSLOG_DIR) == translog_tree(sim)
        assert full.id in restore_to(RestoreRequest(f"domino://{tmp_path / 'x'}", dry_run=True),
                                     repo=repo).to_json()["snapshots"]
