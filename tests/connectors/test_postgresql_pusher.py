"""The WAL pusher without a server: batches, idempotency, conflicts and consolidation (a fake data directory)."""

from __future__ import annotations

from pathlib import Path

import pytest

import dtstore
from dtstore.connectors.base import SnapshotInfo
from dtstore.connectors.postgresql.chain import links
from dtstore.connectors.postgresql.pushd import Pusher
from dtstore.errors import ConnectorError
from tests.helpers import init_repo, random_bytes

SEGMENT = 1 << 20


def segment_name(n: int) -> str:
    return f"00000001{n // 256:08X}{n % 256:08X}"


@pytest.fixture
def pgdata(tmp_path: Path) -> Path:
    data = tmp_path / "pgdata"
    (data / "global").mkdir(parents=True)
    (data / "global" / "pg_control").write_bytes((42).to_bytes(8, "little") + bytes(200))
    (data / "pg_wal" / "archive_status").mkdir(parents=True)
    return data


def write_segment(pgdata: Path, n: int, *, ready: bool = True, salt: int = 0) -> Path:
    path = pgdata / "pg_wal" / segment_name(n)
    path.write_bytes(random_bytes(SEGMENT, seed=n * 10 + salt))
    if ready:
        (pgdata / "pg_wal" / "archive_status" / f"{path.name}.ready").touch()
    return path


@pytest.fixture
def repo(tmp_path: Path) -> dtstore.Repository:
    return init_repo(str(tmp_path / "repo"), tmp_path / "cache")


def test_a_push_takes_the_ready_files_along_and_answers_them_at_once(repo: dtstore.Repository, pgdata: Path) -> None:
    paths = [write_segment(pgdata, n) for n in range(1, 5)]
    pusher = Pusher(repo, batch=8, host="h")
    assert pusher.push(paths[0], pgdata).startswith("pushed in snapshot")
    assert [pusher.push(p, pgdata) for p in paths[1:]] == ["done (pushed ahead)"] * 3
    assert pusher.stats["snapshots"] == 1 and pusher.stats["files"] == 4
    assert Pusher(repo, host="h").push(paths[2], pgdata) == "done (already archived)"  # a new pusher: by hash


def test_another_file_under_an_archived_name_is_refused(repo: dtstore.Repository, pgdata: Path) -> None:
    path = write_segment(pgdata, 1)
    Pusher(repo, host="h").push(path, pgdata)
    write_segment(pgdata, 1, salt=1)
    with pytest.raises(ConnectorError, match="different contents"):
        Pusher(repo, host="h").push(path, pgdata)


def test_consolidation_reads_nothing_and_keeps_every_file(repo: dtstore.Repository, pgdata: Path,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pusher = Pusher(repo, batch=1, host="h", consolidate=4)
    for n in range(1, 5):
        pusher.push(write_segment(pgdata, n), pgdata)
    before = {s.id for s in repo.snapshots()}
    assert len(before) == 4

    def no_reading(*_: object) -> None:
        raise AssertionError("consolidation read a WAL file back")

    monkeypatch.setattr(repo, "open_item", no_reading)
    done = pusher.maybe_consolidate("42")
    assert done and done.startswith("consolidated 4")
    (merged,) = repo.snapshots()
    assert merged.id not in before and SnapshotInfo.of(merged).meta["consolidates"]
    assert merged.summary["bytes_stored"] < 100_000  # a manifest: no WAL data again
    monkeypatch.undo()
    for n in range(1, 5):
        assert repo.open_item(merged, f"wal/{segment_name(n)}").read() == random_bytes(SEGMENT, seed=n * 10)
    logs = [link for link in links([SnapshotInfo.of(s) for s in repo.snapshots()]) if link.kind == "log"]
    assert [(str(link.start), str(link.end)) for link in logs] == [(segment_name(1), segment_name(4))]

