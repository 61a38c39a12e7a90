"""The BlobStore contract (dtstore/storage/base.py), written once and run against every backend."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import pytest

from dtstore.errors import BlobNotFound
from dtstore.storage.base import BlobStore, open_spool, put_parts, stage_parts


def check_blobstore(store: BlobStore) -> None:
    payload = os.urandom(300_000)
    store.put("data/ab/abc", payload)
    assert store.exists("data/ab/abc")
    assert not store.exists("data/ab/missing")
    assert store.get("data/ab/abc") == payload
    assert store.size("data/ab/abc") == len(payload)
    assert store.get_range("data/ab/abc", 1000, 5000) == payload[1000:6000]
    assert store.get_range("data/ab/abc", len(payload) - 4, 4) == payload[-4:]

    # a pack's parts, written unjoined where the store can (more parts than one writev takes,
    # empty ones among them): the object is their concatenation
    parts = [os.urandom(n % 97 * 31) for n in range(1200)]
    put_parts(store, "data/cd/parts", parts)
    assert store.get("data/cd/parts") == b"".join(parts)
    store.delete("data/cd/parts")

    # a two-step put, where the store has one (the wrappers pass it on or say None): the object
    # exists only once committed; an aborted one leaves nothing, not even in a listing
    staged = stage_parts(store, "data/ef/staged", parts[:50])
    if staged is not None:
        assert not store.exists("data/ef/staged")
        assert [i.name for i in store.list("data/ef")] == []
        staged.commit()
        assert store.get("data/ef/staged") == b"".join(parts[:50])
        store.delete("data/ef/staged")
        aborted = stage_parts(store, "data/ef/aborted", parts[:5])
        assert aborted is not None
        aborted.abort()
        assert not store.exists("data/ef/aborted")

    # a spool: an object written piece by piece before its name is known (the store's own, or one
    # that holds the parts): nothing of it is an object, nor listed, before the commit; an aborted
    # one leaves nothing (the listing of "data" below proves it)
    spool = open_spool(store, "data")
    spool.write(parts[:20])
    spool.write(parts[20:60])
    assert {i.name for i in store.list("data")} == {"data/ab/abc"}
    staged = spool.stage("data/ef/spooled")
    assert not store.exists("data/ef/spooled")
    staged.commit()
    assert store.get("data/ef/spooled") == b"".join(parts[:60])
    store.delete("data/ef/spooled")
    aborted_spool = open_spool(store, "data")
    aborted_spool.write(parts[:5])
    aborted_spool.abort()

    # overwrite is atomic and complete
    store.put("data/ab/abc", b"second")
    assert store.get("data/ab/abc") == b"second"

    store.put("index/one", b"1")
    store.put("index/two", b"22")
    listed = {(i.name, i.size) for i in store.list("index")}
    assert listed == {("index/one", 1), ("index/two", 2)}
    assert [i.name for i in store.list("nothing-here")] == []
    assert {i.name for i in store.list("data")} == {"data/ab/abc"}

    with pytest.raises(BlobNotFound):
        store.get("index/absent")
    with pytest.raises(BlobNotFound):
        store.get_range("index/absent", 0, 1)

    store.delete("index/one")
    assert not store.exists("index/one")
    store.delete("index/one")  # idempotent
    assert [i.name for i in store.list("index")] == ["index/two"]

    # parallel writers and readers (many hosts write one repository)
    blobs = {f"snapshots/{n:04d}": os.urandom(1000 + n) for n in range(24)}
    with ThreadPoolExecutor(6) as pool:
        list(pool.map(lambda kv: store.put(*kv), blobs.items()))
        got = dict(zip(blobs, pool.map(store.get, blobs), strict=True))
    assert got == blobs
    assert {i.name for i in store.list("snapshots")} == set(blobs)
