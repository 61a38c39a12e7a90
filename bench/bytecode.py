"""dtstore as installed runs from compiled bytecode (pip compiles it at install; restic and borg are
binaries).  The benchmarks give each dtstore child a bytecode cache under their work directory,
compiled once before anything is measured, also when PYTHONDONTWRITEBYTECODE is set: without it every
command would first compile the ~50 modules it imports (0.1-0.25 s here), which no installed dtstore
pays.  The bytecode never goes into the checkout."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def installed_like(env: dict[str, str], work: Path) -> dict[str, str]:
    """``env`` with bytecode written to and read from ``work/pycache``."""
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    return env


def compile_dtstore(env: dict[str, str]) -> None:
    """Compile this interpreter's dtstore into ``env``'s bytecode cache (``installed_like``)."""
    import dtstore
    import dtstore.cli
    import dtstore.connectors

    dirs = [str(Path(m.__file__ or "").parent) for m in (dtstore, dtstore.cli, dtstore.connectors)]
    subprocess.run([sys.executable, "-m", "compileall", "-q", *dirs], env=env, check=True,
                   stdout=subprocess.DEVNULL)
