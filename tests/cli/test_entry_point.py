"""The ``dtstore`` program's entry: ``main``, then an exit without Python's last full collection."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from dtstore.cli import main as cli_main

ROOT = Path(__file__).resolve().parents[2]


def test_the_installed_program_goes_through_entry() -> None:
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert scripts["dtstore"] == "dtstore.cli.main:entry"
    assert "entry()" in (ROOT / "cli" / "__main__.py").read_text()


def test_entry_returns_main_s_exit_code_and_freezes_the_heap(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", ["dtstore", "snapshots"])
    monkeypatch.delenv("DTSTORE_REPOSITORY", raising=False)
    try:
        code = cli_main.entry()
        frozen = gc.get_freeze_count()
    finally:
        gc.unfreeze()
    assert code == 2  # no repository given: a usage error, as from main
    assert frozen > 0


def test_finalize_hooks_of_objects_only_gc_would_free_still_run_at_exit(tmp_path: Path) -> None:
    """What dtstore leaves to exit (a scan's scratch directory) is a weakref.finalize hook: it runs
    at exit even when the object sits in a reference cycle and the heap was frozen."""
    scratch = tmp_path / "scratch"
    code = (
        "import gc, os, sys, weakref\n"
        "class Holder: pass\n"
        "h = Holder(); h.me = h\n"
        f"os.mkdir({str(scratch)!r}); weakref.finalize(h, os.rmdir, {str(scratch)!r})\n"
        "del h\n"
        "gc.freeze()\n"
        f"sys.exit(0 if os.path.isdir({str(scratch)!r}) else 3)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], env={**os.environ}, timeout=60, check=False)
    assert done.returncode == 0
    assert not scratch.exists()
