"""bench.stages and bench.compare's data sets: the figures issue 18 §1 is judged by."""

from __future__ import annotations

import os
from pathlib import Path

from bench.compare import Dump, bound_table, other_v1, other_v2
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
