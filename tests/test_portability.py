"""The core must import on Windows: no module of dtstore may need a POSIX-only facility at import time.

Windows lacks ``fcntl``, ``resource``, ``termios``, ``pwd`` and ``grp`` (and ``os.fork``, glibc's
``mallopt``, ``F_SETPIPE_SZ``, which the code reaches only at run time, behind ``sys.platform`` checks).
In a subprocess every module of ``dtstore`` (the core, ``cli``, ``connectors``, ``agent``) is imported
once normally, to learn which ones import at all here (an optional extra may be missing), then again,
one by one and afresh, with those five modules blocked and ``sys.platform`` set to ``win32``, as a
Windows interpreter would run them.  Standard-library and third-party modules stay as the first pass
imported them: this checks dtstore's own imports, not Python's.
"""

from __future__ import annotations

import json
import subprocess
import sys

BLOCKED = ("fcntl", "resource", "termios", "pwd", "grp")

SCRIPT = r"""
import importlib, json, pkgutil, sys, traceback
roots = ["dtstore", "dtstore.cli", "dtstore.connectors", "dtstore.agent"]
names = []
for root in roots:
    package = importlib.import_module(root)
    names.append(root)
    names += [m.name for m in pkgutil.walk_packages(package.__path__, root + ".")]
names = sorted(n for n in set(names) if not n.endswith(".__main__"))  # those run a program
importable = []
for name in names:
    try:
        importlib.import_module(name)
        importable.append(name)
    except Exception:
        pass
for name in BLOCKED:
    sys.modules[name] = None
sys.platform = "win32"
for loaded in [m for m in sys.modules if m == "dtstore" or m.startswith("dtstore.")]:
    del sys.modules[loaded]  # each dtstore module is imported again, once, under the Windows conditions
failures = {}
for name in importable:
    try:
        importlib.import_module(name)
    except BaseException as exc:
        failures[name] = "".join(traceback.format_exception_only(type(exc), exc)).strip()
print(json.dumps({"checked": len(importable), "skipped": sorted(set(names) - set(importable)), "failures": failures}))
"""


def test_every_module_imports_without_posix_only_modules() -> None:
    code = f"BLOCKED = {BLOCKED!r}\n{SCRIPT}"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["checked"] > 100, report
    assert report["failures"] == {}, "\n".join(f"{k}: {v}" for k, v in report["failures"].items())
