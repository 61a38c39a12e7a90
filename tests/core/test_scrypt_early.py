"""scrypt through hashlib, and derivations started before they are asked for (``crypto.scrypt``,
``dtstore.early``): the same key-encryption keys as before, each derivation run once."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from dtstore import early
from dtstore.crypto import scrypt
from dtstore.crypto.keys import CHEAP_KDF, MasterKey, ScryptParams, unwrap_any, wrap_key

SALT = bytes(range(16))
Ran = list[tuple[bytes, bytes, int, int, int]]


@pytest.fixture(autouse=True)
def nothing_left_started() -> Iterator[None]:
    scrypt.settle()
    yield
    scrypt.settle()


@pytest.fixture
def derivations(monkeypatch: pytest.MonkeyPatch) -> Ran:
    """Every scrypt actually run, by its inputs."""
    ran: Ran = []
    real = scrypt._scrypt

    def counted(password: bytes, salt: bytes, n: int, r: int, p: int) -> bytes:
        ran.append((password, salt, n, r, p))
        return real(password, salt, n, r, p)

    monkeypatch.setattr(scrypt, "_scrypt", counted)
    return ran


@pytest.mark.parametrize(("n", "r", "p"), [(1 << 10, 8, 1), (1 << 14, 8, 1), (1 << 12, 4, 3)])
def test_the_same_keys_as_cryptography_s_scrypt(n: int, r: int, p: int) -> None:
    """Every existing key slot was wrapped with cryptography's Scrypt: hashlib's must agree."""
    expected = Scrypt(salt=SALT, length=32, n=n, r=r, p=p).derive(b"pw")
    assert scrypt.derive(b"pw", SALT, n, r, p) == expected


def test_costs_beyond_hashlib_s_limit_go_to_cryptography(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(scrypt, "_HASHLIB_MAXMEM", 0)
    assert scrypt.derive(b"pw", SALT, 1 << 10, 8, 1) == Scrypt(salt=SALT, length=32, n=1 << 10, r=8, p=1).derive(b"pw")


def test_a_started_derivation_is_taken_not_run_again(derivations: Ran) -> None:
    scrypt.start(b"pw", SALT, 1 << 12, 8, 1)
    scrypt.start(b"pw", SALT, 1 << 12, 8, 1)  # the same inputs again: still one
    kek = scrypt.derive(b"pw", SALT, 1 << 12, 8, 1)
    assert kek == Scrypt(salt=SALT, length=32, n=1 << 12, r=8, p=1).derive(b"pw")
    assert len(derivations) == 1
    assert scrypt.derive(b"pw", SALT, 1 << 12, 8, 1) == kek  # taken once: the next one runs anew
    assert len(derivations) == 2


def test_a_started_derivation_of_other_inputs_is_not_taken(derivations: Ran) -> None:
    scrypt.start(b"another password", SALT, 1 << 10, 8, 1)
    assert scrypt.derive(b"pw", SALT, 1 << 10, 8, 1) == Scrypt(salt=SALT, length=32, n=1 << 10, r=8, p=1).derive(b"pw")
    scrypt.settle()
    assert sorted(d[0] for d in derivations) == [b"another password", b"pw"]
    assert not scrypt._started
    assert not {t.name for t in threading.enumerate()} & {"dtstore-kdf"}


def test_a_failed_derivation_is_raised_by_its_taker(monkeypatch: pytest.MonkeyPatch) -> None:
    def failing(*_: object) -> bytes:
        raise MemoryError("no memory for scrypt")

    monkeypatch.setattr(scrypt, "_scrypt", failing)
    scrypt.start(b"pw", SALT, 1 << 10, 8, 1)
    with pytest.raises(MemoryError, match="no memory"):
        scrypt.derive(b"pw", SALT, 1 << 10, 8, 1)


def test_a_key_slot_started_early_opens_with_one_derivation(
        derivations: Ran) -> None:
    master = MasterKey.generate()
    slot = wrap_key(master, b"pw", repository_id="r", params=CHEAP_KDF)
    derivations.clear()  # wrapping's own
    assert scrypt.start_for_slot(b"pw", slot)
    key, _ = unwrap_any(slot, b"pw", "slot")
    assert isinstance(key, MasterKey) and key.secret == master.secret
    assert len(derivations) == 1


@pytest.mark.parametrize("slot", [b"", b"not json", b'{"kdf": {"name": "argon2"}}', b'{"kdf": {"name": "scrypt"}}',
                                  b'{"kdf": {"name": "scrypt", "n": 1000, "r": 8, "p": 1, "salt": "AAAA"}}',
                                  b'{"kdf": {"name": "scrypt", "n": 1024, "r": 8, "p": 1, "salt": "not base64!"}}'])
def test_a_slot_it_cannot_read_starts_nothing(slot: bytes) -> None:
    assert not scrypt.start_for_slot(b"pw", slot)
    assert not scrypt._started


def _slots(repo: Path, *names: str) -> dict[str, bytes]:
    (repo / "keys").mkdir(parents=True)
    made = {}
    for name in names:
        params = ScryptParams(n=1 << (10 + len(made)))
        made[name] = wrap_key(MasterKey.generate(), b"pw", repository_id="r", params=params)
        (repo / "keys" / name).write_bytes(made[name])
    return made


def test_a_local_repository_s_first_slot_in_name_order_is_started(
        tmp_path: Path, derivations: Ran) -> None:
    """The one ``unlock`` tries first (it lists slots in name order)."""
    slots = _slots(tmp_path / "repo", "b" * 32, "a" * 32)
    (tmp_path / "repo" / "keys" / (".tmp-" + "0" * 32)).write_bytes(b"a slot being written")
    derivations.clear()  # wrapping's own
    assert early.start_kdf(str(tmp_path / "repo"), b"pw")
    early.settle()
    assert [d[2] for d in derivations] == [1 << 11]  # "a…", the second written (n = 2^11)
    assert scrypt.start_for_slot(b"pw", slots["a" * 32]) and len(scrypt._started) == 1


@pytest.mark.parametrize("url", ["s3://bucket/repo", "sftp://host/repo", "{tmp}/nothing-here", "{tmp}/empty"])
def test_nothing_is_started_where_no_local_slot_can_be_read(url: str, tmp_path: Path) -> None:
    (tmp_path / "empty" / "keys").mkdir(parents=True)
    assert not early.start_kdf(url.format(tmp=tmp_path), b"pw")
    assert not scrypt._started
