"""The SFTP remote checks host keys even when DTSTORE_SFTP_KNOWN_HOSTS is unset: ~/.ssh/known_hosts
decides, and a missing file trusts nothing (sshfs's own default, known_hosts=None, trusted any key)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dtstore.errors import HostKeyError
from dtstore.storage.registry import open_store
from tests.servers.sftp import SFTPServer


def test_sftp_remote_uses_the_users_known_hosts_by_default(sftp_server: SFTPServer, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("DTSTORE_SFTP_KNOWN_HOSTS", raising=False)
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    monkeypatch.setenv("DTSTORE_SFTP_KEY", str(sftp_server.client_key))
    with pytest.raises(HostKeyError):
        open_store(sftp_server.url("nowhere")).exists("config")
    (home / ".ssh" / "known_hosts").write_text(sftp_server.known_hosts.read_text())
    assert open_store(sftp_server.url("nowhere")).exists("config") is False
