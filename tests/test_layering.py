"""Packages depend one way (docs/DESIGN.md, Packages): ``schemas`` on nothing of recq's,
``kafkaio`` on ``schemas``, each stage (``streams``, ``learner``, ``inference``,
``simulator``) on those two and itself, never on another stage or on ``recq``. Read from
the source (every import, function-level ones included), so a stray import fails here
rather than in a deployment that lacks the other stage's dependencies."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
OURS = {"schemas", "kafkaio", "streams", "learner", "inference", "simulator", "recq", "bench"}
ALLOWED = {
    "schemas": {"schemas"},
    "kafkaio": {"schemas", "kafkaio"},
    **{stage: {"schemas", "kafkaio", stage}
       for stage in ("streams", "learner", "inference", "simulator")},
}  # fmt: skip


def imported_packages(package: str) -> dict[str, set[str]]:
    """Top-level packages of recq's that each module of ``package`` imports."""
    out: dict[str, set[str]] = {}
    for path in (ROOT / package).rglob("*.py"):
        tree = ast.parse(path.read_text(), str(path))
        names: set[str] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                names.add(node.module.split(".")[0])
        out[str(path.relative_to(ROOT))] = names & OURS
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_packages_depend_one_way(package: str) -> None:
    strays = {module: sorted(found - ALLOWED[package])
              for module, found in imported_packages(package).items()
              if found - ALLOWED[package]}  # fmt: skip
    assert not strays, f"{package} imports outside {sorted(ALLOWED[package])}: {strays}"
