"""``restore-points`` for MySQL against a real server: one window over a whole chain; a middle log
snapshot forgotten (its binlogs gone from the archive) shown as a gap naming the missing binlog file(s);
``restore`` refusing to cross the gap (exit 17) unless ``--allow-gap``, which stops exactly at the end
of the chain before it; a new full healing the chain.  Library and CLI (text and ``--json``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dtstore.connectors import RestoreRequest, restore_points
from dtstore.connectors import restore_to as restore_request
from dtstore.connectors.base import from_iso, iso
from dtstore.errors import ChainError
from tests.connectors.contract import run_cli
from tests.connectors.test_mysql_server import Contents, mysql_pwd, new_repo, next_second, restore, seed, snap
from tests.servers.mariadb import MariaDBFactory

NOWHERE = "mysql://root@localhost/?socket=/nonexistent/sock"  # planning alone never connects

CHANGES = [
    "UPDATE shop.items SET price = price + 1 WHERE id <= 10; INSERT INTO shop.orders (item, qty, at) "
    "VALUES (1, 2, NOW())",
    "INSERT INTO crm.contacts VALUES (201, 'second@example.org', NOW(), NOW()); DELETE FROM shop.items WHERE id > 390",
    "UPDATE crm.contacts SET email = 'third@example.org' WHERE id = 1; INSERT INTO shop.orders (item, qty, at) "
    "VALUES (2, 5, NOW())",
]


def missing_binlogs(meta: dict[str, object]) -> str:
    """How a gap names the binlogs a forgotten log snapshot held."""
    first, last = meta["binlog_first"], meta["binlog_last"]
    return f"{first} missing" if first == last else f"{first} .. {last} missing"


def test_restore_points_windows_and_a_forgotten_log_as_a_gap(
    mariadb_factory: MariaDBFactory, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    src = mariadb_factory("src", password="src-Secret-1")
    seed(src)
    repo = new_repo(tmp_path)
    full = snap(repo, src, "full")
    logs, states = [], []
    times = []
    for change in CHANGES:  # full, change, log, change, log, change, log
        src.sql(change)
        states.append(src.contents())
        times.append(next_second())
        logs.append(snap(repo, src, "log"))
    log1, log2, log3 = logs
    assert [s.source_metadata["mode"] for s in logs] == ["log"] * 3
    assert log2.source_metadata["binlog_from"] == log1.source_metadata["binlog_next"]
    assert log3.source_metadata["binlog_from"] == log2.source_metadata["binlog_next"]
    consistent = from_iso(full.source_metadata["consistent_at"])
    covered = [from_iso(s.source_metadata["covered_until"]) for s in logs]

    # one source, one window: from the full's consistent point to the last log's last event
    [points] = restore_points(repo.snapshots())
    assert (points.kind, points.source_id, points.snapshots) == ("mysql", full.source_id, 4)
    [stream] = points.streams
    [window] = stream.windows
    assert (window.start, window.end) == (consistent, covered[2]) and stream.gaps == []
    assert [b.snapshot_id for b in window.bases] == [full.id]
    assert [link.snapshot_id for link in window.links] == [full.id, log1.id, log2.id, log3.id]
    assert points.describe() == [f"mysql {full.source_id} restorable {iso(consistent)} … {iso(covered[2])}"]

    # the middle log goes: its binlogs are missing from the archive
    missing = missing_binlogs(log2.source_metadata)
    assert missing.startswith("mysql-bin.")
    repo.forget([log2.id])
    [points] = restore_points(repo.snapshots())
    assert points.snapshots == 3
    [stream] = points.streams
    [window] = stream.windows
    assert (window.start, window.end) == (consistent, covered[0])
    assert [link.snapshot_id for link in window.links] == [full.id, log1.id]
    [gap] = stream.gaps
    assert gap.reason == missing
    assert (gap.after.snapshot_id, gap.next.snapshot_id if gap.next else None) == (log1.id, log3.id)
    assert points.to_json()["streams"][0]["gaps"] == [{
        "stream": "", "from": iso(covered[0]), "to": iso(covered[2]), "after_snapshot": log1.id,
        "next_snapshot": log3.id, "reason": missing,
    }]
    text_line = (f"mysql {full.source_id} restorable {iso(consistent)} … {iso(covered[0])} "
                 f"(gap {iso(covered[0])}–{iso(covered[2])}: {missing})")
    assert points.describe() == [text_line]

    # the CLI shows the same, as text and as JSON lines
    shown = run_cli(capsys, tmp_path, "restore-points")  # times as the CLI shows them (local or --utc)
    assert shown.code == 0, shown
    [cli_line] = shown.out.splitlines()
    assert cli_line.startswith(f"mysql {full.source_id} restorable ") and cli_line.endswith(f": {missing})")
    assert cli_line.count(" … ") == 1 and cli_line.count("(gap ") == 1, cli_line
    as_json = run_cli(capsys, tmp_path, "restore-points", "--json")
    assert as_json.code == 0, as_json
    source_line, summary = (json.loads(line) for line in as_json.out.splitlines())
    assert summary == {"type": "summary", "sources": 1}
    assert source_line["type"] == "source" and source_line["source_id"] == full.source_id
    [json_stream] = source_line["streams"]
    assert [(w["from"], w["to"], w["snapshots"]) for w in json_stream["windows"]] == [
        (iso(consistent), iso(covered[0]), [full.id, log1.id])
    ]
    assert [g["reason"] for g in json_stream["gaps"]] == [missing]
    prefix = run_cli(capsys, tmp_path, "restore-points", "--source", full.source_id[:8])
    assert prefix.code == 0 and prefix.out == shown.out
    unknown = run_cli(capsys, tmp_path, "restore-points", "--source", "mysql:nosuch")
    assert unknown.code == 2, unknown

    # restore to the latest point refuses to cross the gap (17), and names it
    with pytest.raises(ChainError, match=rf"{missing}.*--allow-gap") as refused:
        restore_request(RestoreRequest(NOWHERE, dry_run=True), repo=repo)
    assert refused.value.exit_code == 17
    with pytest.raises(ChainError, match=rf"falls in a gap.*{missing}"):  # a moment the gap swallowed
        restore_request(RestoreRequest(NOWHERE, until=times[1].isoformat(), dry_run=True), repo=repo)
    cli = run_cli(capsys, tmp_path, "restore", "--to", NOWHERE)  # refused while planning: nothing connects
    assert cli.code == 17 and missing in cli.err, cli
    cli = run_cli(capsys, tmp_path, "restore", "--to", NOWHERE, "--allow-gap", "--dry-run", "--json")
    assert cli.code == 0, cli
    plan_json = json.loads(cli.out.splitlines()[-1])["plan"]
    assert plan_json["gap"]["reason"] == missing and [s["id"] for s in plan_json["logs"]] == [log1.id]

    # --allow-gap restores exactly to the end of the chain before the gap: the state at log 1
    target = mariadb_factory("dst", password="dst-Secret-2", server_id=2)
    plan = restore(repo, target, allow_gap=True)
    assert plan.gap is not None and plan.gap.reason == missing
    assert [s.id for s in plan.logs] == [log1.id] and plan.covered_until == log1.source_metadata["covered_until"]
    assert any(missing in line for line in plan.describe())
    restored: Contents = target.contents()
    assert restored == states[0] and restored != states[1]

    # a new full heals the chain: auto cannot continue the stranded log, so it takes a full
    with mysql_pwd(src.password):
        healed = snap(repo, src, "auto")
    assert healed.source_metadata["mode"] == "full" and "auto_reason" in healed.source_metadata
    [points] = restore_points(repo.snapshots())
    [stream] = points.streams
    assert [(w.start, w.end) for w in stream.windows] == [
        (consistent, covered[0]),
        (from_iso(healed.source_metadata["consistent_at"]),) * 2,
    ]
    [gap] = stream.gaps
    assert gap.reason == missing and gap.next is not None and gap.next.snapshot_id == healed.id
    latest = restore_request(RestoreRequest(NOWHERE, dry_run=True), repo=repo)  # no gap after the new full
    assert latest.to_json()["full"]["id"] == healed.id and latest.to_json()["gap"] is None
    repo.close()
