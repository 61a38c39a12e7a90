"""Key-derivation calibration (spec/repository-format.md [K5]): the strength a repository gets."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dtstore.crypto import keys
from dtstore.crypto.keys import MAX_KDF, ScryptParams, calibrate_scrypt


def _timings(monkeypatch: pytest.MonkeyPatch, seconds: list[float]) -> list[ScryptParams]:
    """Make each timed derivation at N = 2**14 take the next of ``seconds``; returns what was timed."""
    timed: list[ScryptParams] = []
    values: Iterator[float] = iter(seconds)

    def fake(params: ScryptParams) -> float:
        timed.append(params)
        return next(values)

    monkeypatch.setattr(keys, "_time_scrypt", fake)
    return timed


def test_a_slow_first_derivation_does_not_weaken_the_key(monkeypatch: pytest.MonkeyPatch) -> None:
    # the first derivation also pays for touching scrypt's memory, or lands on a busy moment
    timed = _timings(monkeypatch, [0.2, 0.05, 0.07])
    params = calibrate_scrypt(0.3)
    assert params.n == 1 << 16  # from 0.05 s: 2**15 takes 0.1 s, 2**16 0.2 s, 2**17 would take 0.4 s
    assert timed == [ScryptParams(n=1 << 14)] * keys.CALIBRATION_TRIALS
    assert (params.r, params.p) == (8, 1)


def test_calibration_stops_at_the_cap(monkeypatch: pytest.MonkeyPatch) -> None:
    _timings(monkeypatch, [0.001] * keys.CALIBRATION_TRIALS)
    assert calibrate_scrypt(0.3) == MAX_KDF


def test_a_slow_machine_keeps_the_smallest_n(monkeypatch: pytest.MonkeyPatch) -> None:
    _timings(monkeypatch, [0.5] * keys.CALIBRATION_TRIALS)
    assert calibrate_scrypt(0.3).n == 1 << 14
