"""The configuration reference is generated from the settings classes: the committed page
matches them, and lists every variable a stage reads exactly once."""

from __future__ import annotations

import re

from recq.config_reference import PAGE, render
from schemas.settings import KNOWN_VARIABLES


def test_committed_reference_matches_the_settings_classes() -> None:
    assert PAGE.read_text() == render(), "docs/configuration.md is stale: run `recq config docs`"


def test_every_variable_has_one_row() -> None:
    rows = re.findall(r"^\| `(RECQ_[A-Z0-9_]+)` \|", render(), flags=re.MULTILINE)
    assert sorted(rows) == sorted(KNOWN_VARIABLES)
    assert (
        "| `RECQ_RANKING` | `response` \\| `q` \\| `slateq` \\| `next_item` | `response` |"
        in render()
    )
