"""Key roles on a local repository (spec/repository-format.md §4.4, §13.5, §15.11): a backup key writes
and deduplicates, reads nothing stored, never deletes or overwrites; the admin restores and prunes."""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import dtstore
from dtstore import clock
from dtstore.content.damage import DamageSet
from dtstore.crypto.keys import CHEAP_KDF
from dtstore.errors import AdminKeyRequired, StorageAuthError, UsageError
from dtstore.storage.base import BlobInfo
from dtstore.storage.local import LocalStore
from tests.helpers import random_bytes
from tests.maintenance.common import CHUNKER, PACK_SIZE, ROOT, init_repo, open_repo, run_cli, tree_digest

BACKUP_PASSWORD = "backup host password"


class AppendOnlyStore:
    """A local store that refuses what append-only storage refuses: deletes, and puts over a name."""

    def __init__(self, inner: LocalStore) -> None:
        self.inner = inner
        self.capabilities = inner.capabilities
        self.refused: list[str] = []

    def describe(self) -> str:
        return self.inner.describe()

    def get(self, name: str) -> bytes:
        return self.inner.get(name)

    def get_range(self, name: str, offset: int, length: int) -> bytes:
        return self.inner.get_range(name, offset, length)

    def put(self, name: str, data: bytes) -> None:
        if self.inner.exists(name):
            self.refused.append(f"overwrite {name}")
            raise StorageAuthError(f"overwriting {name} is not allowed")
        self.inner.put(name, data)

    def exists(self, name: str) -> bool:
        return self.inner.exists(name)

    def size(self, name: str) -> int:
        return self.inner.size(name)

    def list(self, prefix: str) -> Iterator[BlobInfo]:
        return self.inner.list(prefix)

    def delete(self, name: str) -> None:
        self.refused.append(f"delete {name}")
        raise StorageAuthError(f"deleting {name} is not allowed")

    def close(self) -> None:
        self.inner.close()


@pytest.fixture
def admin(tmp_path: Path) -> Iterator[dtstore.Repository]:
    repo = init_repo(str(tmp_path / "repo"), tmp_path / "admin-cache", chunker=CHUNKER, pack_size=PACK_SIZE,
                     key_roles=True)
    repo.add_key(BACKUP_PASSWORD, kdf=CHEAP_KDF, role="backup")
    yield repo
    repo.close()


def backup_repo(tmp_path: Path, cache: str = "backup-cache") -> tuple[dtstore.Repository, AppendOnlyStore]:
    store = AppendOnlyStore(LocalStore(tmp_path / "repo"))
    return dtstore.Repository.open(store, BACKUP_PASSWORD, cache_dir=tmp_path / cache), store


def test_backup_key_writes_dedups_and_reads_nothing(admin: dtstore.Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "shared.bin").write_bytes(random_bytes(300_000, seed=1))
    admin_snap = admin.snapshot([dtstore.FilesSource([str(src)])])
    (src / "new.bin").write_bytes(random_bytes(100_000, seed=2))

    repo, store = backup_repo(tmp_path)
    with repo:
        assert repo.role == "backup" and repo.master is None
        first = repo.snapshot([dtstore.FilesSource([str(src)])])
        # only the new file's bytes went in: the admin's chunks deduplicated
        assert 100_000 <= first.summary["bytes_new"] < 150_000
        second = repo.snapshot([dtstore.FilesSource([str(src)])])
        assert second.summary["bytes_new"] < 20_000 and second.parent == first.id
        # it sees its own runs only, and reads no stored data, not even its own
        assert [s.id for s in repo.snapshots()] == [first.id, second.id]
        for attempt in (lambda: repo.load_snapshot(admin_snap.id),
                        lambda: repo.get_snapshot(admin_snap.id[:10]),
                        lambda: list(repo.list_items(second)),
                        lambda: repo.open_item(second, str(src / "new.bin")),
                        lambda: repo.restore(second, tmp_path / "r"),
                        lambda: repo.forget([first.id]),
                        lambda: repo.prune(),
                        lambda: repo.check(),
                        lambda: repo.check(read_data=True),
                        lambda: repo.add_key("x", kdf=CHEAP_KDF),
                        lambda: repo.retag([first], add=["x"])):
            with pytest.raises(AdminKeyRequired) as refused:
                attempt()
            assert refused.value.exit_code == 18
        assert store.refused == []  # never tried to delete or overwrite anything
        sessions = sorted(p.name for p in (tmp_path / "repo" / "sessions").iterdir())
        assert sessions and all("." in name for name in sessions)
    assert not (tmp_path / "r").exists()

    # the admin reads everything, and check --read-data passes
    admin.refresh_index()  # this long-lived object last looked before the backup host wrote
    assert {s.id for s in admin.snapshots()} == {admin_snap.id, first.id, second.id}
    admin.restore(admin.load_snapshot(second.id), tmp_path / "restored")
    assert tree_digest(tmp_path / "restored" / str(src).lstrip("/")) == tree_digest(src)
    assert admin.check(read_data=True).ok
    # its prune removes the ended sessions' heartbeats
    admin.prune()
    assert list((tmp_path / "repo" / "sessions").iterdir()) == []


def test_a_lost_cache_means_a_full_and_still_deduplicates(admin: dtstore.Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(random_bytes(200_000, seed=3))
    repo, _ = backup_repo(tmp_path)
    with repo:
        first = repo.snapshot([dtstore.FilesSource([str(src)])])
    repo, _ = backup_repo(tmp_path, cache="a-new-cache")
    with repo:
        assert repo.snapshots() == []  # no parent, no chain base: connectors take a full
        again = repo.snapshot([dtstore.FilesSource([str(src)])])
        assert again.parent is None and again.summary["bytes_new"] < 20_000
    assert {s.id for s in admin.snapshots()} >= {first.id, again.id}


def test_backup_key_needs_key_roles_and_cannot_open_older_repositories(tmp_path: Path) -> None:
    plain = init_repo(str(tmp_path / "plain"), tmp_path / "c", chunker=CHUNKER, pack_size=PACK_SIZE)
    with plain, pytest.raises(UsageError, match="key convert"):
        plain.add_key("x", kdf=CHEAP_KDF, role="backup")


def test_convert_an_existing_repository(tmp_path: Path) -> None:
    url = str(tmp_path / "repo")
    src = tmp_path / "src"
    src.mkdir()
    (src / "old.bin").write_bytes(random_bytes(250_000, seed=4))
    admin = init_repo(url, tmp_path / "admin-cache", chunker=CHUNKER, pack_size=PACK_SIZE)
    with admin:
        old = admin.snapshot([dtstore.FilesSource([str(src)])])
        assert admin.record_damage(DamageSet(packs={"0" * 64}), found_by="check")
        assert admin.convert_to_key_roles() is True
        assert admin.convert_to_key_roles() is False  # again: nothing left to do
        assert admin.config.key_roles
        admin.add_key(BACKUP_PASSWORD, kdf=CHEAP_KDF, role="backup")
    (src / "new.bin").write_bytes(random_bytes(50_000, seed=5))
    repo, store = backup_repo(tmp_path)
    with repo:
        new = repo.snapshot([dtstore.FilesSource([str(src)])])
        assert new.summary["bytes_new"] < 100_000  # the converted index deduplicates old.bin
        with pytest.raises(AdminKeyRequired):
            repo.load_snapshot(old.id)
        assert store.refused == []
    with open_repo(url, tmp_path / "admin-cache") as admin:
        for snap in (old, new):
            target = tmp_path / f"r-{snap.short_id}"
            admin.restore(admin.load_snapshot(snap.id), target)
        assert tree_digest(target / str(src).lstrip("/")) == tree_digest(src)
        assert admin.check(read_data=True).ok


def test_cli_refusals_have_their_exit_code(admin: dtstore.Repository, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "f").write_bytes(b"x" * 5000)
    snap = admin.snapshot([dtstore.FilesSource([str(src)])])
    url = str(tmp_path / "repo")
    cache = tmp_path / "cli-cache"
    code, lines, err = run_cli(url, cache, "key", "list")
    assert code == 0, err
    assert sorted(line["role"] for line in lines if line["type"] == "key") == ["admin", "backup"]
    code, lines, err = run_cli(url, cache, "snapshot", str(src), password=BACKUP_PASSWORD)
    assert code == 0, err
    for args in (("restore", snap.id, "--target", str(tmp_path / "r")), ("dump", snap.id, str(src / "f")),
                 ("ls", snap.id), ("forget", snap.id), ("prune",), ("check", "--read-data"),
                 ("key", "add", "--role", "backup", "--new-password-file", os.devnull)):
        code, _, err = run_cli(url, cache, *args, password=BACKUP_PASSWORD)
        assert code == 18, (args, err)
        assert "admin key" in err
    assert not (tmp_path / "r").exists()
    code, _, err = run_cli(url, tmp_path / "admin-cli", "check", "--read-data")
    assert code == 0, err


def test_kill_9_of_a_backup_run_leaves_what_prune_cleans(admin: dtstore.Repository, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A backup-role run killed mid-upload leaves packs, maybe segments, a live-looking session and a
    source lock; the admin's prune, once they expired, removes all of it."""
    script = tmp_path / "slow_backup.py"
    script.write_text(f"""
import sys, time
sys.path.insert(0, {str(ROOT)!r})
import dtstore
from dtstore.sources.stream import StdinSource

class Slow:
    def __init__(self):
        self.sent = 0
    def read(self, n=-1):
        if self.sent > 8_000_000:
            print("uploading", flush=True)
            time.sleep(60)
        self.sent += 65536
        import random
        return random.Random(self.sent).randbytes(65536)

repo = dtstore.Repository.open({str(tmp_path / "repo")!r}, {BACKUP_PASSWORD!r}, cache_dir={str(tmp_path / "bc")!r})
with repo.source_lock("slow:1"):
    repo.snapshot([StdinSource("slow.bin", Slow())])
""")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert b"uploading" in line, proc.stderr.read() if proc.stderr else b""
        deadline = time.monotonic() + 30
        while not list((tmp_path / "repo" / "data").rglob("*")) and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    repo_dir = tmp_path / "repo"
    assert list((repo_dir / "sessions").iterdir()) and list((repo_dir / "locks").iterdir())
    assert list((repo_dir / "data").rglob("*"))
    # two hours later (sessions expire after 15 min, orphan packs may go after 1 h)
    later = clock.now() + dt.timedelta(hours=2)
    monkeypatch.setattr(clock, "now", lambda: later)
    admin.prune(exclusive=True, grace=dt.timedelta(0))
    assert list((repo_dir / "sessions").iterdir()) == []
    assert list((repo_dir / "locks").iterdir()) == []
    packs = [p for p in (repo_dir / "data").rglob("*") if p.is_file() and not p.name.startswith(".tmp-")]
    assert packs == []
    assert admin.check().ok

