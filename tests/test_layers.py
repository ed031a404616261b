"""The packages' layering: the value types at the bottom, the pure quota arithmetic and
the node agents beside the scheduler, never importing it back (an agent is installed on
every node and must not pull in the server)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MAY_IMPORT = {
    "values": {"values"},
    "quota": {"values", "quota"},
    "agents": {"values", "agents"},
}
OURS = {"values", "quota", "agents", "scheduler"}


def imported_packages(path: Path) -> set[str]:
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add(node.module.split(".")[0])
    return found & OURS


@pytest.mark.parametrize("package", sorted(MAY_IMPORT))
def test_a_lower_package_never_imports_a_higher_one(package: str) -> None:
    wrong = {
        str(path.relative_to(ROOT)): sorted(imported_packages(path) - MAY_IMPORT[package])
        for path in sorted((ROOT / package).rglob("*.py"))
    }
    assert {p: w for p, w in wrong.items() if w} == {}
