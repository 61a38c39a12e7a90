"""bench.stages and bench.compare's data sets: the figures issue 18 §1 is judged by."""

from __future__ import annotations

import os
from pathlib import Path

from bench.compare import Dump, Measured, ToolResult, bound_table, other_v1, other_v2
from bench.stages import STAGES, measure_stages
from dtstore.compression import Zstd


def test_stage_costs_and_bound(tmp_path: Path) -> None:
    path = tmp_path / "rows.sql"
    path.write_bytes(b"".join(b"INSERT INTO t VALUES (%d,'name %d');\n" % (i, i % 977) for i in range(200_000)))
    costs = measure_stages(path, Zstd(2), scratch_parent=tmp_path)
    assert costs["bytes"] == path.stat().st_size
    assert costs["compression"] == "zstd level 2"
    assert costs["chunks"] > 3 and costs["packs"] >= 1
    assert costs["stored_bytes"] < costs["bytes"] / 2  # compressible rows, compressed
    assert set(costs["cpu_s_per_gib"]) == set(STAGES)
    assert abs(costs["sum_s_per_gib"] - sum(costs["cpu_s_per_gib"].values())) < 0.01
    assert costs["bound_s_per_gib"] == round(costs["sum_s_per_gib"] / costs["cores"], 3)
    assert sorted(os.listdir(tmp_path)) == ["rows.sql"]  # the scratch packs are gone
    assert "bound" in bound_table(costs, None)


def test_edited_version_of_a_data_set(tmp_path: Path) -> None:
    v1: Dump = other_v1(tmp_path, "sysbench", 2 << 20, seed=3)
    v2 = other_v2(tmp_path, "sysbench", 2 << 20, seed=3)
    old, new = v1.path.read_bytes(), v2.path.read_bytes()
    assert len(new) == len(old) + len(old) // 50
    changed = sum(a != b for a, b in zip(old, new, strict=False))
    assert 0 < changed <= len(old) // 100
    assert other_v2(tmp_path, "sysbench", 2 << 20, seed=3).blake3 == v2.blake3  # cached, not made again


def _backup(seconds: float, cpu: float) -> Measured:
    return Measured(["dtstore", "snapshot"], 0, seconds, 0.0, 1 << 20, cpu, 0.0, "log")


def test_each_round_s_stages_beside_that_round_s_backup() -> None:
    gib = 1 << 30
    rounds = [{"bytes": gib, "sum_s_per_gib": sum_s, "bound_s_per_gib": sum_s / 2, "cores": 2,
               "cpu_s_per_gib": dict.fromkeys(STAGES, sum_s / len(STAGES))} for sum_s in (6.0, 8.0, 7.0)]
    backups = [_backup(4.0, 7.0), _backup(5.0, 9.0), _backup(3.5, 7.5)]
    best = {**rounds[0], "sum_s_per_gib": 6.0, "bound_s_per_gib": 3.0, "rounds": 3}
    dtstore = ToolResult("dtstore", steps={"backup1": backups[2]}, history={"backup1": backups})
    table = bound_table(best, dtstore, rounds)
    rows = {line.split("|")[1].strip(): line.split("|")[-2].strip() for line in table.splitlines()
            if line.startswith("| ") and line.endswith("|")}
    assert rows["best"] == "86%"  # 3.0 / 3.5: least stage sum beside the fastest backup
    assert (rows["round 1"], rows["round 2"], rows["round 3"]) == ("75%", "80%", "100%")
    assert rows["median of the rounds"] == "80%"
    assert "round" not in bound_table(best, dtstore, rounds[:2])  # not paired when a round is missing
