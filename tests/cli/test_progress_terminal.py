"""The progress bar on a real terminal (tmux): a single large file shows its total and an ETA, in
IEC units like the summaries (issue 17: it showed ``171.5/? MB``)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.helpers import random_bytes

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (.ci/run installs it)")

SIZE = 24 << 20


def _screens(socket: str, session: str, script: Path, done: Path, timeout: float = 60.0) -> list[str]:
    subprocess.run(["tmux", "-L", socket, "new-session", "-d", "-s", session, "-x", "150", "-y", "12",
                    f"bash {shlex.quote(str(script))}"], check=True)
    screens = []
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline and not done.exists():
            shown = subprocess.run(["tmux", "-L", socket, "capture-pane", "-p", "-t", session],
                                   capture_output=True, text=True, check=False).stdout
            screens.append(shown)
            time.sleep(0.1)
    finally:
        subprocess.run(["tmux", "-L", socket, "kill-server"], capture_output=True, check=False)
    assert done.exists(), "the snapshot did not finish in time"
    return screens


def test_progress_line_shows_total_eta_and_iec_units(tmp_path: Path, repo_dir: Path, env: dict[str, str]) -> None:
    big = tmp_path / "big.bin"
    big.write_bytes(random_bytes(SIZE, seed=17))
    done = tmp_path / "done"
    exports = "".join(f"export {k}={shlex.quote(v)}\n" for k, v in env.items()
                      if k.startswith(("DTSTORE_", "PYTHON", "PATH", "HOME", "TZ")))
    script = tmp_path / "run.sh"
    # the upload cap keeps the bar on screen for a few seconds
    # stderr must be the terminal for the bar: only stdout is redirected
    script.write_text(f"{exports}cd {shlex.quote(os.getcwd())}\n"
                      f"{shlex.quote(sys.executable)} -m dtstore.cli snapshot --repo {shlex.quote(str(repo_dir))} "
                      f"--limit-upload 6144 {shlex.quote(str(big))} > {shlex.quote(str(tmp_path / 'out'))}; "
                      f"echo $? > {shlex.quote(str(done))}.tmp\n"
                      f"mv {shlex.quote(str(done))}.tmp {shlex.quote(str(done))}\n")
    screens = _screens(f"dtstore-test-{uuid.uuid4().hex[:8]}", "progress", script, done)
    assert done.read_text().strip() == "0", (tmp_path / "out").read_text()
    bars = [line for screen in screens for line in screen.splitlines() if line.startswith("snapshot")]
    assert bars, f"no progress line was ever shown; last screen:\n{screens[-1] if screens else ''}"
    with_total = [line for line in bars if re.search(r"\d+\.\d/24\.0 MiB", line)]
    assert with_total, f"no progress line with the total: {bars[-3:]}"
    assert any(re.search(r"\d+(\.\d)? (KiB|MiB)/s", line) for line in with_total), with_total[-3:]
    assert any(re.search(r" \d:\d\d:\d\d\s*$", line) for line in with_total), with_total[-3:]
    assert not any(re.search(r"\d ?(kB|MB|GB)\b", line) for line in bars), bars[-3:]
    later = bars[bars.index(with_total[0]):]
    assert not any("/?" in line for line in later), later  # once known, the total stays
    summary = (tmp_path / "out").read_text()
    assert "24.0 MiB" in summary
