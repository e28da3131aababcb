"""What a wheel of recq contains: every package and subpackage of the seven top-level
packages (the container's learner once failed on a missing learner.replay: the wheel
was built from a list of top-level packages only)."""

from __future__ import annotations

import tomllib
from pathlib import Path

from setuptools import find_packages

ROOT = Path(__file__).resolve().parents[1]
TOP = ("schemas", "kafkaio", "streams", "learner", "inference", "simulator", "recq")


def test_the_wheel_includes_every_subpackage() -> None:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    included = set(find_packages(str(ROOT), include=config["packages"]["find"]["include"]))
    on_disk = {
        ".".join(p.parent.relative_to(ROOT).parts)
        for top in TOP
        for p in (ROOT / top).rglob("__init__.py")
    }
    assert "learner.replay" in on_disk and "recq.evaluation" in on_disk
    assert included == on_disk
