"""SFTP test server: Debian's OpenSSH sshd on 127.0.0.1 with generated keys, run as the current user.

Fixture:
  sftp_server  session  SFTPServer (host, port, user, client_key, known_hosts, root, url())
  sftp_append_only_server  session  the same, user nobody, removes, renames and setstat refused
"""

from __future__ import annotations

import getpass
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.servers.ports import LOOPBACK, die_with_parent, free_port, stop_server, wait_for_port

SSHD = "/usr/sbin/sshd"  # sshd refuses to start from a relative path
SSH_KEYGEN = "ssh-keygen"
PRIVSEP_DIR = Path("/run/sshd")


@dataclass(frozen=True)
class SFTPServer:
    host: str
    port: int
    user: str
    client_key: Path  # private key, no passphrase; its .pub is in authorized_keys
    known_hosts: Path  # "[127.0.0.1]:PORT ssh-ed25519 ..."
    root: Path  # absolute directory for repositories
    log: Path  # sshd's own log (-e), worth reading when a connection fails

    def url(self, subpath: str = "") -> str:
        path = (self.root / subpath) if subpath else self.root
        return f"sftp://{self.user}@{self.host}:{self.port}{path}"


def _keygen(path: Path) -> str:
    """Make an ed25519 key pair without passphrase; return 'ssh-ed25519 AAAA...' of the public key."""
    if shutil.which(SSH_KEYGEN) is None:
        pytest.fail("ssh-keygen not found: install the Debian package openssh-client")
    subprocess.run(
        [SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", "dtstore-test", "-f", str(path)], check=True
    )
    algo, blob = path.with_suffix(".pub").read_text().split()[:2]
    return f"{algo} {blob}"


def _config(base: Path, host_key: Path, authorized_keys: Path) -> str:
    return f"""\
ListenAddress {LOOPBACK}
HostKey {host_key}
PidFile {base / "sshd.pid"}
AuthorizedKeysFile {authorized_keys}
StrictModes no
UsePAM no
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
PermitRootLogin prohibit-password
AllowUsers {getpass.getuser()}
UseDNS no
PrintMotd no
X11Forwarding no
AllowTcpForwarding no
MaxStartups 100
MaxSessions 100
LogLevel VERBOSE
Subsystem sftp internal-sftp
"""


def _start(config: Path, log_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """Start sshd on a free port; retry a few times in case another process grabbed the port."""
    for _ in range(3):
        port = free_port()
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [SSHD, "-D", "-e", "-f", str(config), "-p", str(port)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        if wait_for_port(port, 15, proc):
            return proc, port
        proc.kill()
        proc.wait()
    pytest.fail(f"sshd did not start; its log {log_path}:\n{log_path.read_text()}")


@pytest.fixture(scope="session")
def sftp_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SFTPServer]:
    if not os.path.exists(SSHD):
        pytest.fail(f"{SSHD} not found: install the Debian package openssh-server")
    PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    base = tmp_path_factory.mktemp("sshd")
    host_pub = _keygen(base / "host_ed25519")
    client_key = base / "client_ed25519"
    authorized_keys = base / "authorized_keys"
    authorized_keys.write_text(_keygen(client_key) + "\n")
    config = base / "sshd_config"
    config.write_text(_config(base, base / "host_ed25519", authorized_keys))
    log_path = base / "sshd.log"
    check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
    if check.returncode != 0:
        pytest.fail(f"sshd rejects the generated config:\n{check.stderr}")
    proc, port = _start(config, log_path)
    known_hosts = base / "known_hosts"
    known_hosts.write_text(f"[{LOOPBACK}]:{port} {host_pub}\n")
    root = base / "root"
    root.mkdir()
    try:
        yield SFTPServer(LOOPBACK, port, getpass.getuser(), client_key, known_hosts, root.resolve(), log_path)
    finally:
        stop_server(proc)


APPEND_ONLY_USER = "nobody"
APPEND_ONLY_DENIED = "remove,rename,posix-rename,rmdir,setstat,fsetstat,lsetstat"
"""what the documented sshd_config block (spec/cli.md, key) refuses a backup host"""


@pytest.fixture(scope="session")
def sftp_append_only_server() -> Iterator[SFTPServer]:
    """A second sshd whose only user (``nobody``, not root, so file modes bind it) gets
    ``ForceCommand internal-sftp -P remove,rename,…``.  ``root`` is world-writable; tests chown what
    the admin wrote there to ``nobody`` (the documented "give that user write access")."""
    import tempfile

    if os.geteuid() != 0:
        pytest.skip("the append-only sshd needs root (it logs in as nobody)")
    PRIVSEP_DIR.mkdir(mode=0o755, parents=True, exist_ok=True)
    base = Path(tempfile.mkdtemp(prefix="dtstore-sshd-ao-"))  # readable by nobody, unlike pytest's tmp
    base.chmod(0o755)
    try:
        host_pub = _keygen(base / "host_ed25519")
        client_key = base / "client_ed25519"
        authorized_keys = base / "authorized_keys"
        authorized_keys.write_text(_keygen(client_key) + "\n")
        authorized_keys.chmod(0o644)
        config = base / "sshd_config"
        text = _config(base, base / "host_ed25519", authorized_keys).replace(
            f"AllowUsers {getpass.getuser()}", f"AllowUsers {APPEND_ONLY_USER}")
        text += f"Match User {APPEND_ONLY_USER}\n    ForceCommand internal-sftp -P {APPEND_ONLY_DENIED}\n"
        config.write_text(text)
        check = subprocess.run([SSHD, "-t", "-f", str(config)], capture_output=True, text=True)
        if check.returncode != 0:
            pytest.fail(f"sshd rejects the generated config:\n{check.stderr}")
        proc, port = _start(config, base / "sshd.log")
        known_hosts = base / "known_hosts"
        known_hosts.write_text(f"[{LOOPBACK}]:{port} {host_pub}\n")
        root = base / "root"
        root.mkdir()
        root.chmod(0o777)
        try:
            yield SFTPServer(LOOPBACK, port, APPEND_ONLY_USER, client_key, known_hosts, root.resolve(),
                             base / "sshd.log")
        finally:
            stop_server(proc)
    finally:
        shutil.rmtree(base, ignore_errors=True)
