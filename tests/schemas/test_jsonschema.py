"""The exported JSON Schemas are the contract other languages validate against: they
must accept what recq accepts and reject what it rejects (clock rules aside)."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import orjson
import pytest

from schemas.codec import encode
from schemas.examples import example_journey, example_request
from schemas.jsonschema import export_json_schemas
from schemas.records import (
    RECORDS,
    CatalogItem,
    ImpressionEvent,
    InteractionSequence,
    SlateTransition,
)

NOW = 1_790_000_000_000


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, object]]:
    directory = tmp_path_factory.mktemp("schemas")
    paths = export_json_schemas(directory)
    return {p.name.removesuffix(".schema.json"): orjson.loads(p.read_bytes()) for p in paths}


def test_one_schema_per_record(exported: dict[str, dict[str, object]]) -> None:
    assert set(exported) == {record.record_name for record in RECORDS}
    for schema in exported.values():
        jsonschema.Draft202012Validator.check_schema(schema)


IMPRESSION = ImpressionEvent(event_id="i1", user_id="u1", ts_ms=NOW, rec_id="r1",
                             positions=[0, 1, 2])  # fmt: skip
SLATE = SlateTransition(
    user_id="u1", seq=0, rec_id="r1", policy="greedy", model_version="3",
    state=InteractionSequence(items=[4], events=[1], ages=[2]), items=[7, 8],
    propensities=[0.9, 0.1], shown=[True, True], responses=[0, 2], rewards=[0.0, 0.7],
    next_state=InteractionSequence(items=[4, 8], events=[1, 1], ages=[2, 1]), done=False,
    closed_by="session_end", ts_ms=NOW,
)  # fmt: skip


CATALOG_ITEM = CatalogItem(item_id="sku-1", category="shoes", price=49.9,
                           attributes={"brand": "acme"}, ts_ms=NOW)  # fmt: skip


def test_schemas_accept_what_recq_writes(exported: dict[str, dict[str, object]]) -> None:
    records = [*example_journey("u1", NOW), example_request("u1", NOW), IMPRESSION, SLATE,
               CATALOG_ITEM]  # fmt: skip
    for record in records:
        jsonschema.validate(orjson.loads(encode(record)), exported[record.record_name])


@pytest.mark.parametrize(
    ("name", "patch"),
    [
        ("click", {"user_id": 42}),
        ("catalog_item", {"price": -1.0}),
        ("catalog_item", {"item_id": ""}),
        ("catalog_item", {"attributes": {"k": 7}}),
        ("click", {"item_id": ""}),
        ("click", {"colour": "red"}),
        ("click", {"schema_version": 2}),
        ("purchase", {"items": [{"item_id": "a", "quantity": 1, "unit_price": -1.0}]}),
        ("purchase", {"items": []}),
        ("cart", {"action": "wishlist"}),
        ("click", {"ts_ms": 1000}),
        ("impression", {"positions": []}),
        ("impression", {"positions": [-1]}),
        ("impression", {"rec_id": None}),
        ("slate_transition", {"responses": [0, 4]}),
        ("slate_transition", {"closed_by": "never"}),
        ("slate_transition", {"propensities": [0.9, 1.5]}),
    ],
)
def test_schemas_reject_what_recq_rejects(
    exported: dict[str, dict[str, object]], name: str, patch: dict[str, object]
) -> None:
    records = [*example_journey("u1", NOW), IMPRESSION, SLATE, CATALOG_ITEM]
    record = next(e for e in records if e.record_name == name)
    body = {**orjson.loads(encode(record)), **patch}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(body, exported[name])


def test_cli_export_writes_files(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from recq.cli import app

    result = CliRunner().invoke(app, ["schemas", "export", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "purchase.schema.json").is_file()
    assert len(list(tmp_path.glob("*.schema.json"))) == len(RECORDS)


def test_schemas_follow_the_dead_letter_bound_and_the_event_codes(
    exported: dict[str, dict[str, object]],
) -> None:
    from schemas.codec import Limits, decode
    from schemas.records import ClickEvent, DeadLetter

    oversized = decode(b'{"pad": "' + b"x" * 300_000 + b'"}', ClickEvent, limits=Limits())
    assert isinstance(oversized, DeadLetter) and oversized.original_truncated
    letter = orjson.loads(encode(oversized))
    jsonschema.validate(letter, exported["dead_letter"])
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**letter, "original_sha256": "not-a-digest"}, exported["dead_letter"])
    # A cart removal (code 4) is a state's event; 5 is no event code.
    state = {"items": [3, 3], "events": [2, 4], "ages": [1, 1]}
    transition = {"user_id": "u1", "seq": 1, "kind": "organic", "state": state, "action": 3,
                  "reward": -0.5, "next_state": state, "done": False, "ts_ms": NOW}  # fmt: skip
    jsonschema.validate(transition, exported["transition"])
    bad = {**state, "events": [2, 5]}
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({**transition, "state": bad}, exported["transition"])
