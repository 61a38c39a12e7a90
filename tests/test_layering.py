"""The layer rules of the style guide, checked on the import statements of every module."""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# (package directory, import prefix it is known by)
PACKAGES = [
    (ROOT / "dtstore", "dtstore"),
    (ROOT / "connectors", "dtstore.connectors"),
    (ROOT / "agent", "dtstore.agent"),
    (ROOT / "cli", "dtstore.cli"),
]

# module prefix → prefixes it must never import
FORBIDDEN = {
    "dtstore.storage": ["dtstore.content", "dtstore.objects", "dtstore.snapshots", "dtstore.backup",
                        "dtstore.restore", "dtstore.repository", "dtstore.maintenance", "dtstore.cli",
                        "dtstore.connectors"],
    "dtstore.crypto": ["dtstore.storage", "dtstore.content", "dtstore.snapshots", "dtstore.repository"],
    "dtstore.content": ["dtstore.objects", "dtstore.snapshots", "dtstore.backup", "dtstore.restore",
                        "dtstore.repository", "dtstore.maintenance", "dtstore.cli", "dtstore.connectors"],
    "dtstore.objects": ["dtstore.content", "dtstore.storage", "dtstore.snapshots", "dtstore.repository"],
    "dtstore.snapshots": ["dtstore.backup", "dtstore.restore", "dtstore.repository", "dtstore.maintenance"],
    "dtstore.connectors": ["dtstore.storage", "dtstore.content", "dtstore.objects", "dtstore.cli", "dtstore.agent"],
    "dtstore.cli": ["dtstore.storage", "dtstore.content", "dtstore.objects"],
    "dtstore.backup": ["dtstore.restore", "dtstore.repository", "dtstore.maintenance", "dtstore.cli",
                       "dtstore.connectors"],
    "dtstore.restore": ["dtstore.backup", "dtstore.repository", "dtstore.maintenance", "dtstore.cli",
                        "dtstore.connectors"],
    "dtstore.sources": ["dtstore.storage", "dtstore.content", "dtstore.objects", "dtstore.backup", "dtstore.restore",
                        "dtstore.repository", "dtstore.maintenance", "dtstore.cli", "dtstore.connectors"],
    "dtstore.maintenance": ["dtstore.backup", "dtstore.repository", "dtstore.cli", "dtstore.connectors"],
    "dtstore.agent": ["dtstore.storage", "dtstore.content", "dtstore.objects", "dtstore.cli"],
    "dtstore": ["dtstore.cli", "dtstore.connectors", "dtstore.agent"],
}

# Connectors use the public API and a few neutral core modules, nothing of the layers below the repository.
CONNECTOR_MAY_IMPORT = {
    "dtstore", "dtstore.errors", "dtstore.clock", "dtstore.progress", "dtstore.processes", "dtstore.ssh",
    "dtstore.sources", "dtstore.sources.base", "dtstore.snapshots.manifest", "dtstore.snapshots.retention",
}


def _modules() -> list[tuple[str, Path]]:
    found = []
    for directory, prefix in PACKAGES:
        for path in sorted(directory.rglob("*.py")):
            rel = path.relative_to(directory).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            found.append((".".join([prefix, *parts]), path))
    return found


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def _owner(module: str) -> str:
    for prefix in sorted(FORBIDDEN, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix
    return ""


@pytest.mark.parametrize(("module", "path"), _modules(), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_module_respects_layers(module: str, path: Path) -> None:
    banned = FORBIDDEN.get(_owner(module), [])
    bad = sorted(name for name in _imports(path)
                 if any(name == b or name.startswith(b + ".") for b in banned)
                 and not module.startswith(name))
    assert not bad, f"{module} imports {bad}, which its layer must not use"


@pytest.mark.parametrize(("module", "path"), [m for m in _modules() if m[0].startswith("dtstore.connectors")],
                         ids=lambda v: str(v) if isinstance(v, str) else "")
def test_connectors_use_only_the_public_api(module: str, path: Path) -> None:
    core = {name for name in _imports(path) if name.startswith("dtstore") and not name.startswith("dtstore.connectors")}
    bad = sorted(core - CONNECTOR_MAY_IMPORT)
    assert not bad, f"{module} imports {bad}: connectors may use only {sorted(CONNECTOR_MAY_IMPORT)}"


WALL_CLOCK = re.compile(r"\b(?:datetime|dt)\.datetime\.now\(|\bdatetime\.now\(|\btime\.time\(\)|\.utcnow\(")


@pytest.mark.parametrize(("module", "path"), _modules(), ids=lambda v: str(v) if isinstance(v, str) else "")
def test_the_wall_clock_is_read_in_one_place(module: str, path: Path) -> None:
    """dtstore.clock is the only reader of wall time, so retention, expiry and PITR tests can move it."""
    if module == "dtstore.clock":
        return
    hits = [n for n, line in enumerate(path.read_text().splitlines(), 1) if WALL_CLOCK.search(line)]
    assert not hits, f"{module} reads the wall clock directly at line(s) {hits}; use dtstore.clock.now()"


def test_connectors_never_use_assert_for_runtime_checks() -> None:
    found = [f"{path.relative_to(ROOT)}:{node.lineno}" for _, path in _modules() if "connectors" in path.parts
             for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Assert)]
    assert not found, f"assert is stripped by python -O; raise a DtstoreError instead: {found}"


def test_ruff_is_clean() -> None:
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--quiet", str(ROOT)], capture_output=True,
                          text=True, check=False)
    assert done.returncode == 0, done.stdout[-3000:]


def test_mypy_is_clean() -> None:
    done = subprocess.run(["bash", str(ROOT / "scripts" / "typecheck.sh")], capture_output=True, text=True,
                          check=False)
    assert done.returncode == 0, done.stdout[-3000:]
