"""Round-trip property tests (hypothesis) for the pure layers: chunking, compression, packs, manifests,
sealing and key slots."""

from __future__ import annotations

import collections
import datetime as dt
import io
import os
import random
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from dtstore import compression
from dtstore.chunking import Chunker, ChunkerParams
from dtstore.content.pack import HEADER_SIZE, PackBuilder, open_blob, pack_id_of, pack_key, parse_pack
from dtstore.crypto.aead import Sealer
from dtstore.crypto.keyed_hash import ChunkHasher
from dtstore.crypto.keys import CHEAP_KDF, MasterKey, unwrap_key, wrap_key
from dtstore.errors import IntegrityError, WrongPassword
from dtstore.format import BLOB_DATA, BLOB_META, CODEC_RAW, CODEC_ZSTD
from dtstore.snapshots.manifest import Item, Snapshot, decode_items, decode_manifest, encode_item, encode_manifest

FAST = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
MANIFESTS = settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
MASTER = MasterKey.generate()
SEALER = MASTER.sealer()
HASHER = ChunkHasher(MASTER.id_key)

CHUNKER_PARAMS = st.sampled_from([
    ChunkerParams(64, 256, 1024),
    ChunkerParams(256, 1024, 4096),
    ChunkerParams(1024, 4096, 16384),
    ChunkerParams(512, 2048, 2048),
])
SEEDS = st.integers(min_value=1, max_value=2**63 - 1)


def _payload(seed: int, size: int, kind: str) -> bytes:
    rng = random.Random(seed)
    if kind == "random":
        return rng.randbytes(size)
    if kind == "zeros":
        return bytes(size)
    if kind == "text":
        words = [b"INSERT", b"INTO", b"t", b"VALUES", b"(1,", b"'abc'),", b"\n", b"NULL", b"--"]
        out = bytearray()
        while len(out) < size:
            out += rng.choice(words) + b" "
        return bytes(out[:size])
    # repetitive with noise: long runs of a short random pattern
    pattern = rng.randbytes(rng.randint(1, 300))
    out = bytearray((pattern * (size // len(pattern) + 1))[:size])
    for _ in range(size // 1000):
        out[rng.randrange(size)] = rng.randrange(256)
    return bytes(out)


payloads = st.one_of(
    st.binary(max_size=2000),
    st.builds(_payload, st.integers(0, 2**32), st.integers(0, 60_000),
              st.sampled_from(["random", "zeros", "text", "pattern"])),
)


class ShortReads(io.RawIOBase):
    """A stream that hands out at most ``step`` bytes per read, like a pipe."""

    def __init__(self, data: bytes, step: int) -> None:
        self._data = memoryview(data)
        self._step = step

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), self._step, len(self._data))
        buffer[:n] = self._data[:n]
        self._data = self._data[n:]
        return n


# chunking -------------------------------------------------------------------------------------

@FAST
@given(data=payloads, params=CHUNKER_PARAMS, seed=SEEDS)
def test_chunks_concatenate_to_input_and_respect_bounds(data: bytes, params: ChunkerParams, seed: int) -> None:
    chunks = list(Chunker(params, seed).chunks_of(data))
    assert b"".join(chunks) == data
    assert all(isinstance(c, bytes) for c in chunks)
    if not data:
        assert chunks == []
        return
    for chunk in chunks[:-1]:
        assert params.min_size <= len(chunk) <= params.max_size
    assert 1 <= len(chunks[-1]) <= params.max_size


@FAST
@given(data=payloads, params=CHUNKER_PARAMS, seed=SEEDS, step=st.integers(1, 5000))
def test_chunking_is_deterministic_and_stream_equals_buffer(data: bytes, params: ChunkerParams, seed: int,
                                                           step: int) -> None:
    first = list(Chunker(params, seed).chunks_of(data))
    again = list(Chunker(params, seed).chunks_of(data))
    streamed = list(Chunker(params, seed).chunks(io.BytesIO(data)))
    short = list(Chunker(params, seed).chunks(ShortReads(data, step)))  # type: ignore[arg-type]
    assert again == first
    assert streamed == first
    assert short == first


@FAST
@given(seed=st.integers(0, 2**32), size=st.integers(100_000, 200_000), where=st.floats(0.0, 1.0),
       edit=st.sampled_from(["replace", "insert", "delete"]), length=st.integers(1, 50))
def test_local_edit_changes_only_nearby_chunks(seed: int, size: int, where: float, edit: str,
                                               length: int) -> None:
    params = ChunkerParams(64, 256, 1024)
    chunker = Chunker(params, 987654321)
    data = random.Random(seed).randbytes(size)
    pos = min(int(size * where), size - length)
    if edit == "replace":
        new = data[:pos] + bytes(b ^ 0x5A for b in data[pos : pos + length]) + data[pos + length :]
    elif edit == "insert":
        new = data[:pos] + b"\x00" * length + data[pos:]
    else:
        new = data[:pos] + data[pos + length :]
    old_chunks = list(chunker.chunks_of(data))
    new_chunks = list(chunker.chunks_of(new))
    old_set = set(old_chunks)
    # Every chunk that ends before the edit is unchanged, in place.  FastCDC decides a cut after
    # hashing the byte that follows it, so a chunk ending right at the edit may change too.
    offset = 0
    for index, chunk in enumerate(old_chunks):
        if offset + len(chunk) >= pos:
            break
        assert new_chunks[index] == chunk
        offset += len(chunk)
    # A few chunks around the edit are new (out of several hundred); far behind it the old chunks
    # come back (the cut points re-synchronise).
    fresh = [c for c in new_chunks if c not in old_set]
    assert 1 <= len(fresh) <= 24, (len(fresh), len(new_chunks))
    offset = 0
    for chunk in new_chunks:
        if offset > pos + length + 32 * params.max_size:
            assert chunk in old_set
        offset += len(chunk)


# compression ----------------------------------------------------------------------------------

@FAST
@given(data=payloads, setting=st.sampled_from([compression.Zstd(0), compression.Zstd(1), compression.Zstd(3),
                                               compression.Zstd(9), compression.DEFAULT]))
def test_compression_round_trip(data: bytes, setting: compression.Zstd) -> None:
    encoded = compression.encode(data, setting)
    assert encoded[0] in (CODEC_RAW, CODEC_ZSTD)
    assert len(encoded) <= len(data) + 1
    assert compression.decode(encoded, len(data), "test") == data
    if setting.level == 0:
        assert encoded[0] == CODEC_RAW


@FAST
@given(size=st.integers(0, 50_000), seed=st.integers(0, 2**32))
def test_incompressible_data_is_stored_raw(size: int, seed: int) -> None:
    data = random.Random(seed).randbytes(size)
    encoded = compression.encode(data, compression.Zstd(3))
    assert encoded == bytes([CODEC_RAW]) + data


def test_compressible_data_is_compressed() -> None:
    data = b"INSERT INTO t VALUES (1, 'abc');\n" * 1000
    encoded = compression.encode(data, compression.Zstd(3))
    assert encoded[0] == CODEC_ZSTD
    assert len(encoded) < len(data) // 10
    assert compression.decode(encoded, len(data), "test") == data


def test_unknown_codec_is_an_integrity_error() -> None:
    with pytest.raises(IntegrityError):
        compression.decode(b"\x07payload", 7, "test")
    with pytest.raises(IntegrityError):
        compression.decode(b"", 0, "test")
    with pytest.raises(IntegrityError):
        compression.decode(bytes([CODEC_ZSTD]) + b"not a zstd frame", 100, "test")


# packs ----------------------------------------------------------------------------------------

blob_lists = st.lists(payloads, min_size=1, max_size=8)


def _build_pack(blobs: list[bytes], kind: int, level: int = 3) -> tuple[str, bytes, list[bytes]]:
    builder = PackBuilder(SEALER, kind)
    ids = []
    for data in blobs:
        chunk_id = HASHER(data)
        builder.add(chunk_id, compression.encode(data, compression.Zstd(level)), len(data))
        ids.append(chunk_id)
    finished = builder.finish()
    assert finished.kind == kind
    return finished.pack_id, finished.data, ids


def _read_pack(sealer: Sealer, data: bytes, pack_id: str) -> tuple[int, dict[bytes, bytes]]:
    kind, entries = parse_pack(sealer, data, pack_id)
    key = pack_key(sealer, data[:HEADER_SIZE], pack_id)
    out = {}
    for e in entries:
        out[e.chunk_id] = open_blob(key, data[e.offset : e.offset + e.length], e.chunk_id, e.raw_length,
                                    pack_id, HASHER)
    return kind, out


@FAST
@given(blobs=blob_lists, kind=st.sampled_from([BLOB_DATA, BLOB_META]))
def test_pack_round_trip(blobs: list[bytes], kind: int) -> None:
    pack_id, data, ids = _build_pack(blobs, kind)
    assert pack_id == pack_id_of(data)
    read_kind, opened = _read_pack(SEALER, data, pack_id)
    assert read_kind == kind
    assert opened == dict(zip(ids, blobs, strict=True))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(blobs=st.lists(st.binary(min_size=0, max_size=300), min_size=1, max_size=4),
       where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255))
def test_any_flipped_byte_in_a_pack_is_detected(blobs: list[bytes], where: float, mask: int) -> None:
    pack_id, data, _ = _build_pack(blobs, BLOB_DATA)
    corrupt = bytearray(data)
    corrupt[int(where * len(data))] ^= mask
    assert pack_id_of(bytes(corrupt)) != pack_id
    with pytest.raises(IntegrityError):
        _read_pack(SEALER, bytes(corrupt), pack_id)


@FAST
@given(blobs=blob_lists)
def test_pack_cannot_be_read_with_another_key(blobs: list[bytes]) -> None:
    pack_id, data, _ = _build_pack(blobs, BLOB_DATA)
    with pytest.raises(IntegrityError):
        _read_pack(MasterKey.generate().sealer(), data, pack_id)


def test_truncated_pack_is_an_integrity_error() -> None:
    pack_id, data, _ = _build_pack([os.urandom(5000), os.urandom(5000)], BLOB_DATA)
    for cut in (len(data) - 1, len(data) // 2, HEADER_SIZE + 3, 5):
        with pytest.raises(IntegrityError):
            _read_pack(SEALER, data[:cut], pack_id)


def test_blob_swapped_between_ids_is_rejected() -> None:
    """A blob moved under another chunk's ID (AEAD associated data) does not open."""
    a, b = os.urandom(500), os.urandom(500)
    pack_id, data, _ = _build_pack([a, b], BLOB_DATA)
    _, entries = parse_pack(SEALER, data, pack_id)
    key = pack_key(SEALER, data[:HEADER_SIZE], pack_id)
    first, second = entries
    with pytest.raises(IntegrityError):
        open_blob(key, data[first.offset : first.offset + first.length], second.chunk_id, first.raw_length,
                  pack_id, HASHER)


# manifests ------------------------------------------------------------------------------------

small_text = st.text(max_size=30)
int64 = st.integers(-(2**63), 2**63 - 1)
uint32 = st.integers(0, 2**32 - 1)
chunk_ids = st.lists(st.binary(min_size=32, max_size=32), max_size=5)
json_like = st.recursive(
    st.none() | st.booleans() | int64 | small_text | st.binary(max_size=20)
    | st.floats(allow_nan=False),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(small_text, inner, max_size=3),
    max_leaves=6,
)
extras = st.dictionaries(small_text, json_like, max_size=3)


@st.composite
def items(draw: st.DrawFn) -> Item:
    kind = draw(st.sampled_from(["file", "dir", "symlink"]))
    path = draw(st.binary(min_size=1, max_size=60) | st.text(min_size=1, max_size=30).map(os.fsencode))
    item = Item(path=path, type=kind, mode=draw(st.integers(0, 0o7777)), uid=draw(uint32), gid=draw(uint32),
                mtime_ns=draw(int64), extra=draw(extras))
    if kind == "file":
        item.size = draw(st.integers(0, 2**63 - 1))
        item.chunks = draw(chunk_ids)
    elif kind == "symlink":
        item.target = draw(st.binary(min_size=1, max_size=60))
    return item


@MANIFESTS
@given(its=st.lists(items(), max_size=6))
def test_items_round_trip(its: list[Item]) -> None:
    stream = io.BytesIO(b"".join(encode_item(i) for i in its))
    assert list(decode_items(stream)) == its


def test_item_with_non_utf8_path_round_trips() -> None:
    item = Item(path=b"dir/\xff\xfe-latin1-\xe9.txt", type="file", size=3, chunks=[b"x" * 32])
    (back,) = decode_items(io.BytesIO(encode_item(item)))
    assert back == item
    assert back.path == b"dir/\xff\xfe-latin1-\xe9.txt"
    assert os.fsencode(back.name) == back.path


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    when = draw(st.datetimes(min_value=dt.datetime(1970, 1, 2), max_value=dt.datetime(2200, 1, 1),
                             timezones=st.just(dt.UTC)))
    return Snapshot(
        id="", time=when, host=draw(small_text), tags=draw(st.lists(small_text, max_size=4)),
        source_kind=draw(small_text), source_id=draw(small_text), paths=draw(st.lists(small_text, max_size=4)),
        source_metadata=draw(extras), summary=draw(extras),
        parent=draw(st.none() | st.text("0123456789abcdef", min_size=64, max_size=64)),
        program_version=draw(small_text), items_chunks=draw(chunk_ids), items_count=draw(st.integers(0, 2**40)),
        username=draw(small_text),
    )


@MANIFESTS
@given(snap=snapshots(), snap_id=st.text("0123456789abcdef", min_size=64, max_size=64))
def test_snapshot_manifest_round_trip(snap: Snapshot, snap_id: str) -> None:
    snap.id = snap_id
    back = decode_manifest(snap_id, encode_manifest(snap))
    assert back == snap
    assert back.time.utcoffset() == dt.timedelta(0)
    # and through the plain document too
    assert Snapshot.from_doc(snap_id, snap.to_doc()) == snap
    assert snap.to_doc()["time"].endswith("Z")


def test_snapshot_manifest_with_non_utf8_source_path_round_trips() -> None:
    """A source path that is not UTF-8 shows up (surrogate-escaped) in paths, source_id and warnings."""
    name = os.fsdecode(b"/srv/\xff-data")
    snap = Snapshot(id="ab" * 32, time=dt.datetime(2024, 5, 1, tzinfo=dt.UTC), host="h", tags=[],
                    source_kind="files", source_id="files:" + name, paths=[name], source_metadata={},
                    summary={"warnings": [{"path": name + "/x", "message": "cannot read"}]}, parent=None,
                    program_version="dtstore test", items_chunks=[], items_count=0)
    back = decode_manifest(snap.id, encode_manifest(snap))
    # display text keeps undecodable bytes visible as \xNN (item paths themselves stay exact bytes)
    assert back.source_id == "files:/srv/\\xff-data"
    assert back.paths == ["/srv/\\xff-data"]
    assert back.summary["warnings"][0]["path"] == "/srv/\\xff-data/x"
    assert (back.host, back.time, back.source_kind) == (snap.host, snap.time, snap.source_kind)


# sealing and key slots ------------------------------------------------------------------------

aads = st.binary(max_size=40)


@FAST
@given(plain=st.binary(max_size=5000), aad=aads, other=aads)
def test_sealed_object_round_trip_and_wrong_aad_rejected(plain: bytes, aad: bytes, other: bytes) -> None:
    sealed = SEALER.seal(plain, aad)
    assert plain not in sealed or len(plain) < 8
    assert SEALER.open(sealed, aad, "obj") == plain
    assume(other != aad)
    with pytest.raises(IntegrityError):
        SEALER.open(sealed, other, "obj")


@FAST
@given(plain=st.binary(max_size=500), where=st.floats(0, 1, exclude_max=True), mask=st.integers(1, 255))
def test_sealed_object_with_a_flipped_byte_is_rejected(plain: bytes, where: float, mask: int) -> None:
    sealed = bytearray(SEALER.seal(plain, b"aad"))
    sealed[int(where * len(sealed))] ^= mask
    with pytest.raises(IntegrityError):
        SEALER.open(bytes(sealed), b"aad", "obj")


def test_sealed_object_needs_the_right_key_and_full_length() -> None:
    sealed = SEALER.seal(b"secret", b"aad")
    with pytest.raises(IntegrityError):
        MasterKey.generate().sealer().open(sealed, b"aad", "obj")
    for cut in (0, 10, len(sealed) - 1):
        with pytest.raises(IntegrityError):
            SEALER.open(sealed[:cut], b"aad", "obj")


@settings(max_examples=15, deadline=None)
@given(password=st.binary(min_size=1, max_size=40), wrong=st.binary(min_size=1, max_size=40),
       repo_id=st.text("0123456789abcdef", min_size=32, max_size=32), label=small_text)
def test_key_slot_wrap_unwrap_and_wrong_password(password: bytes, wrong: bytes, repo_id: str, label: str) -> None:
    master = MasterKey.generate()
    slot = wrap_key(master, password, repository_id=repo_id, params=CHEAP_KDF, label=label)
    assert master.secret not in slot
    assert password not in slot or len(password) < 4
    opened, info = unwrap_key(slot, password, "slot1")
    assert opened == master
    assert opened.id_key == master.id_key
    assert info.repository_id == repo_id
    assert info.label == label
    assert info.slot_id == "slot1"
    assume(wrong != password)
    with pytest.raises(WrongPassword):
        unwrap_key(slot, wrong, "slot1")


def test_two_masters_derive_different_chunk_ids_and_seeds() -> None:
    a, b = MasterKey.generate(), MasterKey.generate()
    data = b"the same plaintext"
    assert ChunkHasher(a.id_key)(data) != ChunkHasher(b.id_key)(data)
    assert ChunkHasher(a.id_key)(data) == ChunkHasher(a.id_key)(data)
    assert a.chunker_seed != b.chunker_seed
    assert len({a.id_key, a.name_key, a.secret[:32]}) == 3


@pytest.mark.parametrize("kind", ["random", "zeros", "text"])
def test_blocks_cut_in_parallel_match_the_stream_on_large_inputs(kind: str) -> None:
    """Many blocks: random data (the block chains meet within a chunk or two), zeros (every cut is
    forced at max_size, so they never meet and each block is cut again from its tail) and text."""
    rng = random.Random(11)
    data = {"random": rng.randbytes(3_000_000), "zeros": bytes(3_000_000),
            "text": b"".join(b"INSERT INTO t VALUES (%d,'%s');\n" % (i, rng.choice([b"ab", b"cd", b"efg"]) * 9)
                             for i in range(70_000))}[kind]
    chunker = Chunker(ChunkerParams(1024, 4096, 16384), 12345)
    expected = list(chunker.chunks(io.BytesIO(data)))
    ring = chunker.ring(4, block_size=40_000)
    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(2) as cutter:
        got = [bytes(v) for batch in chunker.batches(io.BytesIO(data), ring, reader, cutter) for v in batch]
    assert got == expected
    assert len(expected) > 100


@FAST
@given(data=st.binary(max_size=200_000), block=st.integers(min_value=1, max_value=70_000),
       seed=st.integers(min_value=1, max_value=2**62), step=st.integers(min_value=1, max_value=100_000),
       buffers=st.integers(min_value=3, max_value=6), read_ahead=st.booleans(), parallel_cut=st.booleans(),
       ahead=st.integers(min_value=1, max_value=4))
def test_block_batches_cut_exactly_like_the_stream(data: bytes, block: int, seed: int, step: int, buffers: int,
                                                   read_ahead: bool, parallel_cut: bool, ahead: int) -> None:
    """Also checks the ring contract: the last ``len(ring) - 1 - ahead`` batches stay intact while
    the next one is asked for, with or without a read-ahead thread and blocks cut in parallel."""
    chunker = Chunker(ChunkerParams(1024, 4096, 16384), seed)
    expected = list(chunker.chunks(io.BytesIO(data)))
    ring = chunker.ring(buffers, block_size=block)
    ahead = min(ahead, buffers - 2)
    held: collections.deque[tuple[list[memoryview], list[bytes]]] = collections.deque()
    batched: list[bytes] = []
    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(2) as cutter:
        for batch in chunker.batches(ShortReads(data, step), ring, reader if read_ahead else None,
                                     cutter if parallel_cut else None, ahead):
            for views, copies in held:
                assert [bytes(v) for v in views] == copies, "a held batch was overwritten"
            copies = [bytes(v) for v in batch]
            batched.extend(copies)
            held.append((batch, copies))
            if len(held) > buffers - 1 - ahead:
                held.popleft()
    assert batched == expected


@FAST
@given(data=st.binary(max_size=200_000), block=st.integers(min_value=1, max_value=70_000),
       seed=st.integers(min_value=1, max_value=2**62), step=st.integers(min_value=1, max_value=100_000))
def test_digested_batches_carry_the_digest_of_exactly_their_chunk(data: bytes, block: int, seed: int,
                                                                   step: int) -> None:
    """A digest taken by the cutter is kept only for a chunk whose bytes it was taken of."""
    chunker = Chunker(ChunkerParams(1024, 4096, 16384), seed)
    hasher = ChunkHasher(bytes(range(32)))
    expected = list(chunker.chunks(io.BytesIO(data)))
    ring = chunker.ring(4, block_size=block)
    got: list[bytes] = []
    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(2) as cutter:
        for batch in chunker.digested_batches(ShortReads(data, step), ring, reader, cutter, hasher):
            for view, digest in batch:
                assert digest is None or digest == hasher(view)
                got.append(bytes(view))
    assert got == expected


@pytest.mark.parametrize("kind", ["random", "text"])
def test_the_cutter_hashes_most_chunks(kind: str) -> None:
    """Only the chunks cut from a block's tail (a chunk or two per block) are left to hash later."""
    rng = random.Random(5)
    data = {"random": rng.randbytes(3_000_000),
            "text": b"".join(b"INSERT INTO t VALUES (%d,'%s');\n" % (i, rng.choice([b"ab", b"cd", b"efg"]) * 9)
                             for i in range(70_000))}[kind]
    chunker = Chunker(ChunkerParams(1024, 4096, 16384), 99)
    hasher = ChunkHasher(bytes(32))
    ring = chunker.ring(4, block_size=200_000)
    with ThreadPoolExecutor(1) as reader, ThreadPoolExecutor(2) as cutter:
        digests = [d for batch in chunker.digested_batches(io.BytesIO(data), ring, reader, cutter, hasher)
                   for _, d in batch]
    blocks = len(data) // 200_000 + 1
    assert len(digests) > 300
    assert sum(d is None for d in digests) <= 3 * blocks
