"""The transitions topic's batch form (schemas/transition_batch.py): what a reader gets
from a batch is what it would get from the same transitions sent one message each."""

from __future__ import annotations

from typing import Any

import jsonschema
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import transition_batch
from schemas.codec import decode_transitions
from schemas.jsonschema import json_schema
from schemas.records import DeadLetter, SlateTransition, Transition, TransitionBatch

NOW = 1_790_000_000_000


def organic(user: str, seq: int, history: int = 3, done: bool = False) -> dict[str, Any]:
    items = list(range(seq, seq + history))
    return {
        "kind": "organic", "user_id": user, "seq": seq,
        "state": {"items": items, "events": [1] * history, "ages": [2] * history},
        "action": 40 + seq, "reward": 0.25 * seq,
        "next_state": {"items": [*items, 40 + seq], "events": [1] * history + [2],
                       "ages": [2] * history + [1]},
        "done": done, "ts_ms": NOW - 1000 + seq,
    }  # fmt: skip


def slate(user: str, seq: int, answered: bool) -> dict[str, Any]:
    return {
        "kind": "slate", "user_id": user, "seq": seq, "rec_id": f"r{seq}",
        "policy": "epsilon", "model_version": "7",
        "state": {"items": [4], "events": [1], "ages": [3]},
        "items": [7, 8, 9], "propensities": [0.8, 0.15, 0.05], "shown": [True, True, False],
        "responses": [0, 2 if answered else 0, 0],
        "rewards": [0.0, 0.7 if answered else 0.0, 0.0],
        "next_state": {"items": [4, 8], "events": [1, 2], "ages": [3, 1]} if answered else None,
        "done": not answered, "closed_by": "session_end" if answered else "reward_wait",
        "ts_ms": NOW - 500 + seq,
    }  # fmt: skip


def single(rows: list[dict[str, Any]]) -> list[Transition | SlateTransition]:
    """What a reader gets from the rows sent one message each (the record form)."""
    out: list[Transition | SlateTransition] = []
    for row in rows:
        decoded = decode_transitions(orjson.dumps({**row, "schema_version": 1}), now_ms=NOW)
        assert not isinstance(decoded, DeadLetter), decoded
        out += decoded
    return out


def from_batches(messages: list[bytes]) -> list[Transition | SlateTransition]:
    out: list[Transition | SlateTransition] = []
    for raw in messages:
        decoded = decode_transitions(raw, now_ms=NOW)
        assert not isinstance(decoded, DeadLetter), decoded
        out += decoded
    return out


def test_a_batch_reads_as_its_transitions_sent_one_by_one() -> None:
    rows = [organic("u1", 0), slate("u1", 0, answered=True), organic("u2", 0, history=0),
            organic("u1", 1, done=True), slate("u2", 0, answered=False)]  # fmt: skip
    messages = transition_batch.pack(rows, max_bytes=1 << 20)
    assert len(messages) == 1
    got = from_batches(messages)
    # Organic rows first, then slates; each kind in the order written.
    want = single([rows[0], rows[2], rows[3], rows[1], rows[4]])
    assert got == want
    assert transition_batch.count(messages[0]) == 5
    assert transition_batch.count(orjson.dumps(rows[0])) == 1
    assert transition_batch.count(b"not json") == 0


def test_the_size_bound_splits_a_batch_and_keeps_each_shoppers_order() -> None:
    rows = [organic(f"u{n % 7}", n // 7) for n in range(300)]
    messages = transition_batch.pack(rows, max_bytes=4_000)
    assert len(messages) >= 8  # ~110 bytes a row here: 300 rows in 4,000-byte messages
    assert all(len(raw) <= 4_000 for raw in messages)
    assert from_batches(messages) == single(rows)


def test_rows_per_message_are_bounded_even_without_a_size_bound() -> None:
    rows = [organic("u1", n, history=0) for n in range(transition_batch.ROWS_PER_MESSAGE + 1)]
    messages = transition_batch.pack(rows, max_bytes=1 << 30)
    assert [transition_batch.count(raw) for raw in messages] == [
        transition_batch.ROWS_PER_MESSAGE,
        1,
    ]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["organic", "slate", "unanswered"]),
                          st.integers(0, 4), st.integers(0, 12)), max_size=40),
       st.integers(300, 20_000))  # fmt: skip
def test_any_mix_of_rows_survives_packing(spec: list[tuple[str, int, int]], bound: int) -> None:
    rows = [organic(f"u{user}", n, history=h) if kind == "organic"
            else slate(f"u{user}", n, answered=kind == "slate")
            for n, (kind, user, h) in enumerate(spec)]  # fmt: skip
    got = from_batches(transition_batch.pack(rows, max_bytes=bound))
    want = single([r for r in rows if r["kind"] == "organic"])
    want_slates = single([r for r in rows if r["kind"] == "slate"])
    assert [t for t in got if t.kind == "organic"] == want
    assert [t for t in got if t.kind == "slate"] == want_slates


def test_a_batch_with_one_invalid_row_is_dead_lettered_whole() -> None:
    rows = [organic("u1", 0), organic("u1", 1)]
    rows[1]["action"] = -1  # a valid column of ints; the row rule (ge=0) rejects it
    (raw,) = transition_batch.pack(rows, max_bytes=1 << 20)
    letter = decode_transitions(raw, now_ms=NOW)
    assert isinstance(letter, DeadLetter)
    assert letter.code == "out_of_range" and "batch row 1 (organic)" in letter.reason
    assert letter.original == raw  # every row is kept in the dead letter


@pytest.mark.parametrize(
    ("change", "code"),
    [
        (lambda b: b["organic"]["seq"].pop(), "invalid_value"),  # a short column
        (lambda b: b["organic"]["state"]["items"].pop(), "invalid_value"),  # flat list short
        (lambda b: b.update(schema_version=2), "unsupported_version"),
        (lambda b: b.update(extra=1), "unknown_field"),
    ],
)
def test_a_malformed_batch_is_dead_lettered(change: Any, code: str) -> None:
    (raw,) = transition_batch.pack([organic("u1", 0), organic("u2", 0)], max_bytes=1 << 20)
    data = orjson.loads(raw)
    change(data)
    letter = decode_transitions(orjson.dumps(data), now_ms=NOW)
    assert isinstance(letter, DeadLetter) and letter.code == code, letter


def test_the_json_schema_accepts_what_the_worker_writes() -> None:
    schema = json_schema(TransitionBatch)
    rows = [organic("u1", 0), slate("u1", 0, True), slate("u1", 1, False)]
    for raw in transition_batch.pack(rows, max_bytes=1 << 20):
        jsonschema.validate(orjson.loads(raw), schema)
