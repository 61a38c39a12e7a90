"""The connector framework's command runner: LocalRunner, and SshRunner against a real sshd on 127.0.0.1."""

from __future__ import annotations

import ast
import getpass
import hashlib
import io
import os
import random
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from dtstore.connectors import runner as runner_module
from dtstore.connectors.runner import (
    LocalRunner,
    Result,
    SshRunner,
    cmd_command_line,
    posix_command_line,
    powershell_command_line,
    windows_command_line,
)
from dtstore.errors import ConnectorError, HostKeyError, IntegrityError
from tests.servers.ports import free_port, stop_server
from tests.servers.sftp import SFTPServer, _config, _keygen, _start

PY = sys.executable
PY_NAME = Path(PY).name
SECRET = "pw-Zq8#s3cr3t"
MIB = 1 << 20


def _noise(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _runner_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith(("dtstore-ssh", "dtstore-feed"))]


# --------------------------------------------------------------------------------------------
# LocalRunner


def test_local_run_returns_status_stdout_and_stderr_tail() -> None:
    result = LocalRunner().run([PY, "-c", "import sys; print('hi'); print('x' * 5000 + 'end', file=sys.stderr)"])
    assert result == Result(0, b"hi\n", result.stderr)
    assert result.stderr.endswith("end") and len(result.stderr) <= runner_module.STDERR_TAIL


def test_local_failure_names_tool_status_host_and_redacts_secrets() -> None:
    script = "import os, sys; print('login failed for', os.environ['DT_PW'], file=sys.stderr); sys.exit(3)"
    with pytest.raises(ConnectorError) as info:
        LocalRunner().run([PY, "-c", script], env={"DT_PW": SECRET}, secrets=[SECRET])
    message = str(info.value)
    assert message == f"{PY_NAME} exited with status 3 on localhost: login failed for ***"
    assert SECRET not in message


def test_local_check_false_returns_the_failure() -> None:
    result = LocalRunner().run([PY, "-c", "import sys; sys.stdout.write('out'); sys.exit(4)"], check=False)
    assert (result.exit_status, result.stdout) == (4, b"out")


def test_secret_in_argv_is_refused_before_anything_runs(tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    with pytest.raises(ConnectorError, match="a secret would appear in argv"):
        LocalRunner().run([PY, "-c", f"open({str(marker)!r}, 'w')", f"--password={SECRET}"], secrets=[SECRET])
    assert not marker.exists()


def test_local_stdin_bytes_and_streams_are_fed_while_stdout_is_read() -> None:
    data = _noise(3 * MIB)  # more than both pipes hold: feeding and reading must overlap
    copy = [PY, "-c", "import shutil, sys; shutil.copyfileobj(sys.stdin.buffer, sys.stdout.buffer)"]
    assert LocalRunner().run(copy, stdin=data).stdout == data
    assert LocalRunner().run(copy, stdin=io.BytesIO(data)).stdout == data


def test_local_stream_checks_the_exit_status_on_leaving() -> None:
    script = "import sys; sys.stdout.buffer.write(b'a' * 3_000_000); sys.stdout.flush(); sys.exit(5)"
    tool = LocalRunner().stream([PY, "-c", script], label="dumper")
    with pytest.raises(ConnectorError, match="dumper exited with status 5 on localhost"), tool as out:
        assert len(out.read()) == 3_000_000
    assert tool.exit_status == 5


def test_local_stream_of_a_large_output() -> None:
    script = "import random, sys; sys.stdout.buffer.write(random.Random(7).randbytes(12 * 1024 * 1024))"
    digest = hashlib.sha256()
    with LocalRunner().stream([PY, "-c", script]) as out:
        while block := out.read(256 * 1024):
            digest.update(block)
    assert digest.hexdigest() == _sha(_noise(12 * MIB))


def test_local_exception_inside_the_block_kills_the_tool() -> None:
    tool = LocalRunner().stream([PY, "-c", "import time; print('ready', flush=True); time.sleep(60)"])
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="consumer failed"), tool as out:
        assert out.readline() == b"ready\n"
        raise RuntimeError("consumer failed")
    assert time.monotonic() - start < 20
    assert tool.exit_status is not None and tool.exit_status != 0


def test_output_not_read_to_the_end_is_an_error() -> None:
    tool = LocalRunner().stream([PY, "-c", "import sys; sys.stdout.buffer.write(b'x' * 10_000_000)"])
    with pytest.raises(ConnectorError, match="not read to the end"), tool as out:
        out.read(10)


def test_local_timeout_kills() -> None:
    start = time.monotonic()
    with pytest.raises(ConnectorError, match=r"did not finish within 0.5 s on localhost"):
        LocalRunner().run([PY, "-c", "import time; time.sleep(60)"], timeout=0.5)
    assert time.monotonic() - start < 20


class _Exploding(io.RawIOBase):
    """A stdin source that fails part-way, as a damaged stored item would."""

    def __init__(self, error: Exception | None = None) -> None:
        self.sent = 0
        self.error = error or IntegrityError("chunk 1234 failed authentication")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.sent > 2 * MIB:
            raise self.error
        n = len(buffer)
        buffer[:n] = b"y" * n
        self.sent += n
        return n


@pytest.mark.parametrize("error", [IntegrityError("chunk 1234 failed"), ConnectionResetError("chunk 1234 lost")])
def test_an_error_reading_stdin_kills_the_tool_and_is_raised(error: Exception) -> None:
    """Never a quiet EOF: the tool would take a truncated input for a complete one."""
    sink = [PY, "-c", "import sys, time; sys.stdin.buffer.read(); print('complete'); time.sleep(60)"]
    start = time.monotonic()
    with pytest.raises(type(error), match="chunk 1234"):
        LocalRunner().run(sink, stdin=_Exploding(error))  # type: ignore[arg-type]
    assert time.monotonic() - start < 20


def test_local_files(tmp_path: Path) -> None:
    host = LocalRunner()
    target = tmp_path / "arch" / "1_42.arc"
    target.parent.mkdir()
    data = _noise(3 * MIB)
    assert host.write_file(str(target), [data[:MIB], data[MIB:]]) == len(data)
    assert sorted(os.listdir(target.parent)) == ["1_42.arc"]  # no .partial left behind
    with host.read_file(str(target)) as f:
        assert f.read() == data
    info = host.stat(str(target))
    assert (info.size, info.is_dir, info.mode) == (len(data), False, 0o600)
    assert host.stat(str(tmp_path)).is_dir
    assert host.exists(str(target)) and not host.exists(str(tmp_path / "nope"))
    assert host.listdir(str(target.parent)) == ["1_42.arc"]
    with pytest.raises(ConnectorError, match="already exists on localhost; refusing to overwrite"):
        host.write_file(str(target), [b"other"])
    host.write_file(str(target), [b"other"], overwrite=True)
    assert target.read_bytes() == b"other"
    src = tmp_path / "local.bin"
    src.write_bytes(data)
    host.put(src, str(tmp_path / "copy.bin"))
    assert (tmp_path / "copy.bin").read_bytes() == data
    host.remove(str(target))
    with pytest.raises(ConnectorError, match=r"unable to read .* on localhost"):
        host.read_file(str(target))


# --------------------------------------------------------------------------------------------
# Command lines


def _parse_windows_command_line(line: str) -> list[str]:
    """CommandLineToArgvW / the MS C runtime (2008+), from Microsoft's "Parsing C++ command-line
    arguments": an independent check of the quoting."""
    args: list[str] = []
    i, n = 0, len(line)
    while True:
        while i < n and line[i] in " \t":
            i += 1
        if i >= n:
            return args
        arg: list[str] = []
        quoted = False
        while i < n and (quoted or line[i] not in " \t"):
            if line[i] == "\\":
                j = i
                while j < n and line[j] == "\\":
                    j += 1
                count = j - i
                if j < n and line[j] == '"':
                    arg.append("\\" * (count // 2))
                    if count % 2:
                        arg.append('"')
                        i = j + 1
                    else:
                        i = j
                else:
                    arg.append("\\" * count)
                    i = j
            elif line[i] == '"':
                if quoted and i + 1 < n and line[i + 1] == '"':
                    arg.append('"')
                    i += 2
                else:
                    quoted = not quoted
                    i += 1
            else:
                arg.append(line[i])
                i += 1
        args.append("".join(arg))


WINDOWS_GOLDEN = [
    (["C:\\Program Files\\x.exe", "a b", 'c"d', "back\\slash", "trail\\ \\", "", 'q\\"'],
     '"C:\\Program Files\\x.exe" "a b" c\\"d back\\slash "trail\\ \\\\" "" q\\\\\\"'),
    ([PureWindowsPath("C:/app/bin/eseutil.exe"), "/mh", PureWindowsPath("D:/Exchange DB/db1.edb")],
     'C:\\app\\bin\\eseutil.exe /mh "D:\\Exchange DB\\db1.edb"'),
]


@pytest.mark.parametrize(("argv", "line"), WINDOWS_GOLDEN)
def test_windows_command_line_golden(argv: list[Any], line: str) -> None:
    assert windows_command_line(argv) == line
    assert _parse_windows_command_line(line) == [str(a) for a in argv]


def test_cmd_command_line_golden() -> None:
    argv = ["C:\\Program Files\\tool.exe", "a&b|c", "%PATH%", "(x)", "say \"hi\"", "^!<>"]
    assert cmd_command_line(argv) == (
        '^"C:\\Program Files\\tool.exe^" a^&b^|c ^%PATH^% ^(x^) ^"say \\^"hi\\^"^" ^^^!^<^>'
    )


def _cmd_phase2(line: str) -> str:
    """What cmd.exe passes to CreateProcess for a line in which every quote is ^-escaped: each ^X is X."""
    out, i = [], 0
    while i < len(line):
        if line[i] == "^":
            assert i + 1 < len(line), "a trailing caret"
            i += 1
        elif line[i] in '()%!"<>&|':
            raise AssertionError(f"unescaped {line[i]!r} in {line!r}")
        out.append(line[i])
        i += 1
    return "".join(out)


ARG = st.text(st.characters(blacklist_categories=("Cs",), blacklist_characters="\0\r\n"), max_size=12)


@given(st.lists(ARG, min_size=1, max_size=6))
def test_windows_quoting_round_trips(argv: list[str]) -> None:
    line = windows_command_line(argv)
    assert _parse_windows_command_line(line)[1:] == argv[1:]
    assert _cmd_phase2(cmd_command_line(argv)) == line


def test_windows_lines_refuse_line_breaks() -> None:
    with pytest.raises(ConnectorError, match="line break"):
        windows_command_line(["x.exe", "a\nb"])


def test_powershell_command_line_golden_and_refusals() -> None:
    assert powershell_command_line([PureWindowsPath("C:/Program Files/x.exe"), "it's", "\u2018q", "$env:X"]) == (
        "& 'C:\\Program Files\\x.exe' 'it''s' '\u2018\u2018q' '$env:X'; exit $LASTEXITCODE"
    )
    for bad in ["", 'a"b', "C:\\dir with space\\"]:
        with pytest.raises(ConnectorError, match="shell='cmd'"):
            powershell_command_line(["x.exe", bad])


def test_ssh_runner_command_lines_and_paths_without_connecting() -> None:
    win = SshRunner("Administrator", "exch1.example.com", windows=True)
    assert win.command_line([PureWindowsPath("C:/Program Files/E/eseutil.exe"), "/mh", "a&b"]) == (
        '^"C:\\Program Files\\E\\eseutil.exe^" /mh a^&b'
    )
    assert win._remote_path(PureWindowsPath("D:/Logs/E00.log")) == "/D:/Logs/E00.log"
    assert win._remote_path("D:\\Logs\\E00.log") == "/D:/Logs/E00.log"
    assert win.env_via == "setenv"
    ps = SshRunner("Administrator", "exch1.example.com", windows=True, shell="powershell")
    assert ps.command_line(["C:\\x.exe", "a b"]) == "& 'C:\\x.exe' 'a b'; exit $LASTEXITCODE"
    posix = SshRunner("oracle", "db1.example.com")
    assert posix.command_line([PurePosixPath("/u01/bin/rman"), "target", "/", "it's $HOME"]) == (
        "/u01/bin/rman target / 'it'\"'\"'s $HOME'"
    )
    assert posix_command_line(["a b", "c"]) == "'a b' c"
    with pytest.raises(ValueError, match="POSIX shell"):
        SshRunner("u", "h", windows=True, env_via="stdin")
    assert not _runner_threads()  # nothing starts before first use


def test_imports_without_posix_only_modules() -> None:
    """What Windows lacks (fcntl, resource, termios, pwd, grp) must not be needed at import time."""
    code = (  # everything else first, then the two modules as Windows would import them
        "import sys, asyncio, subprocess, tempfile, shutil, dtstore.connectors, dtstore.ssh\n"
        "for name in ('dtstore.connectors._proc', 'dtstore.connectors.runner'):\n"
        "    sys.modules.pop(name, None)\n"
        "for name in ('fcntl', 'resource', 'termios', 'pwd', 'grp'):\n"
        "    sys.modules[name] = None\n"
        "sys.platform = 'win32'\n"
        "import dtstore.connectors.runner, dtstore.connectors._proc\n"
        "print('ok')\n"
    )
    done = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=False)
    assert done.stdout.strip() == "ok", done.stderr[-2000:]
    tree = ast.parse(Path(runner_module.__file__).read_text())
    names = {f"{n.value.id}.{n.attr}" for n in ast.walk(tree)
             if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)}
    assert not names & {"os.fork", "os.setsid", "os.killpg", "signal.SIGKILL", "os.getuid", "signal.SIGTERM"}


# --------------------------------------------------------------------------------------------
# SshRunner against the test sshd


@pytest.fixture
def ssh(sftp_server: SFTPServer) -> Iterator[SshRunner]:
    with SshRunner(sftp_server.user, sftp_server.host, sftp_server.port, known_hosts=sftp_server.known_hosts,
                   client_keys=[sftp_server.client_key]) as runner:
        yield runner
    assert not _runner_threads()


def test_ssh_echo_and_quoting(ssh: SshRunner, sftp_server: SFTPServer) -> None:
    assert ssh.host == f"127.0.0.1:{sftp_server.port}"
    assert ssh.run(["echo", "hello world"]) == Result(0, b"hello world\n", "")
    weird = ["a b", "it's", '"q"', "$HOME", "`id`", "; rm -rf /nope", "*", "", "\\n", "tab\there"]
    result = ssh.run(["printf", "%s\\n", *weird])
    assert result.stdout.decode().split("\n")[:-1] == weird


def test_ssh_failing_command_message_is_redacted(ssh: SshRunner, sftp_server: SFTPServer) -> None:
    script = 'echo "ORA-01017: invalid username/password $DT_PW" >&2; exit 7'
    with pytest.raises(ConnectorError) as info:
        ssh.run(["sh", "-c", script], env={"DT_PW": SECRET}, secrets=[SECRET], label="sqlplus")
    assert str(info.value) == (
        f"sqlplus exited with status 7 on 127.0.0.1:{sftp_server.port}: ORA-01017: invalid username/password ***"
    )
    result = ssh.run(["sh", "-c", "exit 3"], check=False)
    assert result.exit_status == 3


def test_ssh_env_secret_via_stdin_reaches_the_tool_and_leaves_its_stdin_intact(ssh: SshRunner) -> None:
    got = ssh.run(["sh", "-c", 'printf "%s|" "$DT_PW" "$DT_USER"; cat'],
                  env={"DT_PW": " spaces \\ and 'quotes' ", "DT_USER": "scott"}, stdin=b"payload\nmore")
    assert got.stdout == b" spaces \\ and 'quotes' |scott|payload\nmore"
    with pytest.raises(ConnectorError, match="line break"):
        ssh.run(["true"], env={"DT_PW": "a\nb"})


def test_ssh_setenv_needs_accept_env(ssh: SshRunner, sftp_server: SFTPServer, accept_env_sshd: SFTPServer) -> None:
    probe = ["sh", "-c", 'printf %s "${DTSTORE_RUNNER_TEST_PW-unset}"']
    env = {"DTSTORE_RUNNER_TEST_PW": SECRET}
    with SshRunner(accept_env_sshd.user, accept_env_sshd.host, accept_env_sshd.port, env_via="setenv",
                   known_hosts=accept_env_sshd.known_hosts, client_keys=[accept_env_sshd.client_key]) as accepting:
        assert accepting.run(probe, env=env, secrets=[SECRET]).stdout == SECRET.encode()
    # the documented pitfall: an sshd without AcceptEnv drops the variable without a word
    with SshRunner(sftp_server.user, sftp_server.host, sftp_server.port, env_via="setenv",
                   known_hosts=sftp_server.known_hosts, client_keys=[sftp_server.client_key]) as plain:
        assert plain.run(probe, env=env, secrets=[SECRET]).stdout == b"unset"


def test_ssh_streamed_cat_of_a_large_file(ssh: SshRunner, sftp_server: SFTPServer) -> None:
    data = _noise(9 * MIB, seed=11)
    path = sftp_server.root / "big.bin"
    path.write_bytes(data)
    digest, total = hashlib.sha256(), 0
    tool = ssh.stream(["cat", str(path)])
    with tool as out:
        while block := out.read(300_000):
            digest.update(block)
            total += len(block)
    assert (total, digest.hexdigest(), tool.exit_status) == (len(data), _sha(data), 0)
    # stdin streamed through a remote tool and back
    assert ssh.run(["cat"], stdin=io.BytesIO(data)).stdout == data


def test_ssh_an_error_reading_stdin_kills_the_remote_tool(ssh: SshRunner) -> None:
    start = time.monotonic()
    with pytest.raises(IntegrityError, match="chunk 1234"):
        ssh.run(["sh", "-c", "cat >/dev/null; sleep 62.25"], stdin=_Exploding())  # type: ignore[arg-type]
    assert time.monotonic() - start < 20
    assert _gone(_processes_running(b"sleep\x0062.25\x00"))


def test_ssh_stream_failure_is_raised_on_leaving(ssh: SshRunner, sftp_server: SFTPServer) -> None:
    with pytest.raises(ConnectorError, match=r"cat exited with status 1 on .*No such file"), \
            ssh.stream(["cat", str(sftp_server.root / "missing")]) as out:
        assert out.read() == b""


def _processes_running(cmdline: bytes) -> list[int]:
    """PIDs on this machine (the test sshd's too) whose command line is ``cmdline``."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes() == cmdline:
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


def _gone(pids: list[int], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.05)
    return not any(Path(f"/proc/{pid}").exists() for pid in pids)


def test_ssh_exception_inside_the_block_kills_the_remote_tool_and_its_children(ssh: SshRunner) -> None:
    tool = ssh.stream(["sh", "-c", "echo $$; sleep 61.25; echo never"])
    start = time.monotonic()
    with pytest.raises(RuntimeError, match="consumer failed"), tool as out:
        pid = int(out.readline())
        deadline = time.monotonic() + 10
        while not (children := _processes_running(b"sleep\x0061.25\x00")) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert children
        raise RuntimeError("consumer failed")
    assert _gone([pid, *children]), "the remote tool survived"
    assert time.monotonic() - start < 15


def test_ssh_timeout(ssh: SshRunner) -> None:
    with pytest.raises(ConnectorError, match=r"did not finish within 0\.5 s"):
        ssh.run(["sleep", "30"], timeout=0.5)
    assert ssh.run(["echo", "still usable"]).stdout == b"still usable\n"


def test_ssh_files_round_trip(ssh: SshRunner, sftp_server: SFTPServer) -> None:
    folder = sftp_server.root / "files"
    folder.mkdir(exist_ok=True)
    target = str(folder / "1_42.arc")
    data = _noise(5 * MIB, seed=3)
    assert ssh.write_file(target, (data[i:i + 700_000] for i in range(0, len(data), 700_000))) == len(data)
    assert ssh.listdir(str(folder)) == ["1_42.arc"]  # no .partial left behind
    with ssh.read_file(target) as f:
        assert _sha(f.read()) == _sha(data)
    info = ssh.stat(target)
    assert (info.size, info.is_dir, info.mode) == (len(data), False, 0o600)
    assert ssh.stat(str(folder)).is_dir
    assert ssh.exists(target) and not ssh.exists(str(folder / "nope"))
    with pytest.raises(ConnectorError, match="already exists"):
        ssh.write_file(target, [b"other"])
    assert ssh.write_file(target, [b"other"], overwrite=True) == 5
    assert Path(target).read_bytes() == b"other"
    local = sftp_server.root / "local.bin"
    local.write_bytes(data[:100_000])
    ssh.put(local, PurePosixPath(folder / "put.bin"))
    assert (folder / "put.bin").read_bytes() == data[:100_000]
    ssh.remove(target)
    with pytest.raises(ConnectorError, match="no such file"):
        ssh.read_file(target)
    with pytest.raises(ConnectorError, match="no such file"):
        ssh.listdir(str(folder / "nope"))


def test_ssh_unknown_host_key(sftp_server: SFTPServer, tmp_path: Path) -> None:
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    with SshRunner(sftp_server.user, sftp_server.host, sftp_server.port, known_hosts=empty,
                   client_keys=[sftp_server.client_key]) as runner, pytest.raises(HostKeyError) as info:
        runner.run(["echo", "never"])
    assert info.value.exit_code == 14
    message = str(info.value)
    assert f"ssh-keyscan -p {sftp_server.port} 127.0.0.1" in message and "DTSTORE_SSH_KNOWN_HOSTS" in message
    assert str(empty) in message
    assert not _runner_threads()


def test_ssh_changed_host_key(sftp_server: SFTPServer, tmp_path: Path) -> None:
    other = _keygen(tmp_path / "other_host_key")
    known = tmp_path / "known_hosts"
    known.write_text(f"[127.0.0.1]:{sftp_server.port} {other}\n")
    with SshRunner(sftp_server.user, sftp_server.host, sftp_server.port, known_hosts=known,
                   client_keys=[sftp_server.client_key]) as runner, pytest.raises(HostKeyError):
        runner.exists("/")


def test_ssh_host_keys_default_to_the_users_known_hosts(sftp_server: SFTPServer, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """No file given and no variable set: ~/.ssh/known_hosts decides (never "trust anything")."""
    home = tmp_path / "home"
    (home / ".ssh").mkdir(parents=True)
    monkeypatch.setenv("HOME", str(home))
    for name in ("DTSTORE_SSH_KNOWN_HOSTS", "DTSTORE_SFTP_KNOWN_HOSTS", "SSH_AUTH_SOCK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DTSTORE_SSH_KEY", str(sftp_server.client_key))

    def attempt() -> bytes:
        with SshRunner(sftp_server.user, sftp_server.host, sftp_server.port) as runner:
            return runner.run(["echo", "ok"]).stdout

    with pytest.raises(HostKeyError, match=r"~/\.ssh/known_hosts"):
        attempt()
    (home / ".ssh" / "known_hosts").write_text(sftp_server.known_hosts.read_text())
    assert attempt() == b"ok\n"
    (home / ".ssh" / "known_hosts").write_text("")
    monkeypatch.setenv("DTSTORE_SSH_KNOWN_HOSTS", str(sftp_server.known_hosts))
    assert attempt() == b"ok\n"


def test_ssh_rejected_key_and_closed_port(sftp_server: SFTPServer, tmp_path: Path) -> None:
    _keygen(tmp_path / "stranger")
    with SshRunner(sftp_server.user, sftp_server.host, sftp_server.port, known_hosts=sftp_server.known_hosts,
                   client_keys=[tmp_path / "stranger"]) as runner, \
            pytest.raises(ConnectorError, match=r"SSH authentication as .* failed"):
        runner.run(["true"])
    with SshRunner(sftp_server.user, "127.0.0.1", free_port(), known_hosts=sftp_server.known_hosts,
                   client_keys=[sftp_server.client_key]) as runner, \
            pytest.raises(ConnectorError, match="the SSH connection failed"):
        runner.run(["true"])
    assert not _runner_threads()


def test_ssh_runner_refuses_use_after_close(sftp_server: SFTPServer) -> None:
    runner = SshRunner(sftp_server.user, sftp_server.host, sftp_server.port, known_hosts=sftp_server.known_hosts,
                       client_keys=[sftp_server.client_key])
    assert runner.run(["true"]).exit_status == 0
    runner.close()
    runner.close()
    assert not _runner_threads()
    with pytest.raises(ConnectorError, match="is closed"):
        runner.run(["true"])


@pytest.fixture(scope="module")
def accept_env_sshd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SFTPServer]:
    """A second sshd, like the session one but with ``AcceptEnv DTSTORE_RUNNER_TEST_*``."""
    base = tmp_path_factory.mktemp("sshd-acceptenv")
    host_pub = _keygen(base / "host_ed25519")
    client_key = base / "client_ed25519"
    authorized_keys = base / "authorized_keys"
    authorized_keys.write_text(_keygen(client_key) + "\n")
    config = base / "sshd_config"
    config.write_text(_config(base, base / "host_ed25519", authorized_keys) + "AcceptEnv DTSTORE_RUNNER_TEST_*\n")
    proc, port = _start(config, base / "sshd.log")
    known_hosts = base / "known_hosts"
    known_hosts.write_text(f"[127.0.0.1]:{port} {host_pub}\n")
    try:
        yield SFTPServer("127.0.0.1", port, getpass.getuser(), client_key, known_hosts, base, base / "sshd.log")
    finally:
        stop_server(proc)
