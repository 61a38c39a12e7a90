"""The repository's compression setting: a zstd level, plus the zstd parameters new repositories get."""

from __future__ import annotations

import random
from typing import Any

import msgpack
import pytest
import zstandard

from dtstore import compression
from dtstore.compression import DEFAULT, Zstd
from dtstore.config import RepoConfig
from dtstore.errors import UnsupportedFormat, UsageError
from dtstore.format import CODEC_ZSTD


def _reloaded(doc: dict[str, Any]) -> RepoConfig:
    return RepoConfig.from_doc(msgpack.unpackb(msgpack.packb(doc)))


def test_a_new_config_gets_the_tuned_default_and_keeps_it() -> None:
    config = RepoConfig.new()
    assert config.compression == DEFAULT
    assert config.zstd_level == 1
    doc = config.to_doc()
    assert doc["compression"] == {"algorithm": "zstd", "level": 1,
                                  "parameters": {"hash_log": 16, "min_match": 6, "window_log": 18}}
    assert _reloaded(doc).compression == DEFAULT


def test_a_plain_level_is_written_and_read_without_parameters() -> None:
    doc = RepoConfig.new(zstd_level=3).to_doc()
    assert doc["compression"] == {"algorithm": "zstd", "level": 3}
    assert _reloaded(doc).compression == Zstd(3)


def test_an_older_config_reads_as_its_plain_level() -> None:
    doc = RepoConfig.new().to_doc()
    doc["compression"] = {"algorithm": "zstd", "level": 2}
    assert _reloaded(doc).compression == Zstd(2)


def test_a_parameter_this_dtstore_does_not_know_is_left_out() -> None:
    doc = RepoConfig.new().to_doc()
    doc["compression"]["parameters"]["a_future_knob"] = 3
    assert _reloaded(doc).compression == DEFAULT


@pytest.mark.parametrize("parameters", [{"hash_log": 99}, {"hash_log": "16"}, [16]])
def test_parameters_zstd_cannot_use_are_refused_clearly(parameters: object) -> None:
    doc = RepoConfig.new().to_doc()
    doc["compression"]["parameters"] = parameters
    with pytest.raises(UnsupportedFormat, match=r"zstd parameters|compression"):
        _reloaded(doc)


def test_init_refuses_a_bad_level_or_parameter() -> None:
    with pytest.raises(UsageError, match="between 0"):
        RepoConfig.new(zstd_level=23)
    with pytest.raises(UsageError, match="unknown zstd parameter"):
        Zstd.of(1, {"speed": 5})
    with pytest.raises(UsageError, match="zstd refuses"):
        Zstd.of(1, {"hash_log": 40})
    with pytest.raises(UsageError, match="window_log above 24"):
        Zstd.of(1, {"window_log": 25})


def test_the_default_is_applied_and_any_zstd_decoder_reads_it() -> None:
    rng = random.Random(3)
    data = b"".join(f"({i},'{rng.choice(['ab', 'cd', 'ef'])}',{rng.randrange(10**6)}),".encode()
                    for i in range(60_000))
    assert len(data) > 1 << 20
    encoded = compression.encode(data, DEFAULT)
    assert encoded[0] == CODEC_ZSTD
    frame = encoded[1:]
    assert zstandard.ZstdDecompressor().decompress(frame) == data
    assert compression.decode(encoded, len(data), "test") == data
    # the parameters really reach zstd: window_log 18 caps the window; level 1 alone takes 2^19
    assert zstandard.get_frame_parameters(frame).window_size == 1 << 18
    plain = compression.encode(data, Zstd(1))[1:]
    assert zstandard.get_frame_parameters(plain).window_size > 1 << 18
