"""`recq ope` on a file of logged slates, and `recq snapshots list` showing the gate."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from typer.testing import CliRunner

from recq import cli
from recq.cli import app
from schemas.codec import encode
from tests.toy_shop import BAD, GOOD, log_slates, write_ranking


def test_ope_scores_every_snapshot_against_the_one_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "models"
    write_ranking(store, GOOD)  # promoted: the one members serve
    write_ranking(store, BAD, decision="rejected")
    log = tmp_path / "slates.jsonl"
    log.write_bytes(b"\n".join(encode(t) for t in log_slates(3_000, seed=1)) + b"\nnot json\n")
    monkeypatch.setenv("RECQ_MODEL_STORE", str(store))
    result = CliRunner().invoke(app, ["ope", str(log), "--json"])
    assert result.exit_code == 0, result.output
    rows = {r["policy"]: r for r in map(orjson.loads, result.output.splitlines())}
    assert set(rows) == {"logging policies", "snapshot 1 (serving)", "snapshot 2"}
    assert rows["snapshot 1 (serving)"]["exploration"] == "epsilon-0.1, clip 50"
    # The good ranking beats the logging policies, the bad one is clearly below the
    # serving one: its whole interval of the difference is negative.
    good, logging = rows["snapshot 1 (serving)"], rows["logging policies"]
    assert good["cascade_snips"]["low"] > logging["cascade_snips"]["high"]
    assert rows["snapshot 2"]["cascade_snips_vs_serving"]["high"] < 0
    monkeypatch.setattr(cli.console, "width", 300)
    table = CliRunner().invoke(app, ["ope", str(log)])
    assert table.exit_code == 0 and "1 records were not valid transitions" in table.output

    monkeypatch.setattr(cli.console, "width", 300)  # no cell cut short
    listed = CliRunner().invoke(app, ["snapshots", "list"])
    assert listed.exit_code == 0, listed.output
    assert "rejected" in listed.output and "promoted" in listed.output


def test_ope_names_a_missing_source(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RECQ_MODEL_STORE", str(tmp_path))
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    result = CliRunner().invoke(app, ["ope", str(empty)])
    assert result.exit_code != 0
    assert "no slate transitions" in str(result.exception)
