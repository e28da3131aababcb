"""The batch form of the transitions topic: many transitions in one columnar message.

A worker commits its transitions per batch of events; written one message each, every
transition was a produce of its own, and the produce path was the largest cost of the
worker (issue 24: a Faust pipeline that forwards each event spent 209 us of CPU per
event against 72 us for one that reads and drops it). ``pack`` turns the transitions of
one source partition's batch into as few ``TransitionBatch`` messages as the size bound
allows; ``rows`` turns a batch back into the dicts the single-record form carries, so
every reader validates each row against the same ``Transition`` / ``SlateTransition``
rules (``schemas.codec.decode_transitions``).

Readers accept both forms at once: a topic written by an older worker, or by one with
``RECQ_TRANSITIONS_FORMAT=record``, reads the same."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import orjson

from schemas.records import SequenceColumns, TransitionBatch

#: Format version of ``TransitionBatch`` (its ``schema_version``).
BATCH_VERSION = 1
#: Rows per message before the size bound is even looked at: a batch of 2,000 events
#: becomes a handful of messages per partition, each far below the decoders' limit.
ROWS_PER_MESSAGE = 512

Row = dict[str, Any]

_ORGANIC_SCALARS = ("user_id", "seq", "action", "reward", "done", "ts_ms")
_SLATE_SCALARS = ("user_id", "seq", "rec_id", "policy", "model_version", "done", "closed_by",
                  "ts_ms")  # fmt: skip
_SLATE_SLOTS = ("items", "propensities", "shown", "responses", "rewards")


def pack(transitions: Sequence[Row], max_bytes: int) -> list[bytes]:
    """Encode ``transitions`` (the single-record dicts, in the order written) as
    ``TransitionBatch`` messages of at most ``ROWS_PER_MESSAGE`` rows and, where rows
    allow, ``max_bytes`` each (a single row larger than that goes alone). Order within
    each kind is kept across the messages, which the caller sends in order."""
    out: list[bytes] = []

    def emit(rows: Sequence[Row]) -> None:
        raw = orjson.dumps(_columns(rows))
        if len(raw) > max_bytes and len(rows) > 1:
            half = len(rows) // 2
            emit(rows[:half])
            emit(rows[half:])
        else:
            out.append(raw)

    for start in range(0, len(transitions), ROWS_PER_MESSAGE):
        emit(transitions[start : start + ROWS_PER_MESSAGE])
    return out


def _columns(rows: Sequence[Row]) -> dict[str, Any]:
    organic = [t for t in rows if t["kind"] == "organic"]
    slates = [t for t in rows if t["kind"] == "slate"]
    batch: dict[str, Any] = {"schema_version": BATCH_VERSION, "kind": "batch"}
    if organic:
        columns: dict[str, Any] = {name: [t[name] for t in organic] for name in _ORGANIC_SCALARS}
        columns["state"] = _sequences([t["state"] for t in organic])
        columns["next_state"] = _sequences([t["next_state"] for t in organic])
        batch["organic"] = columns
    if slates:
        columns = {name: [t[name] for t in slates] for name in _SLATE_SCALARS}
        columns["k"] = [len(t["items"]) for t in slates]
        for name in _SLATE_SLOTS:
            columns[name] = [v for t in slates for v in t[name]]
        columns["state"] = _sequences([t["state"] for t in slates])
        columns["next_state"] = _sequences([t["next_state"] for t in slates])
        batch["slate"] = columns
    return batch


def _sequences(sequences: Sequence[dict[str, list[int]] | None]) -> dict[str, list[Any]]:
    lengths: list[int | None] = []
    items: list[int] = []
    events: list[int] = []
    ages: list[int] = []
    for s in sequences:
        if s is None:
            lengths.append(None)
            continue
        lengths.append(len(s["items"]))
        items += s["items"]
        events += s["events"]
        ages += s["ages"]
    return {"lengths": lengths, "items": items, "events": events, "ages": ages}


def rows(batch: TransitionBatch) -> list[Row]:
    """The batch's transitions as single-record dicts (organic rows, then slate rows),
    not validated yet: each goes through ``Transition`` / ``SlateTransition``."""
    out: list[Row] = []
    if batch.organic is not None:
        o = batch.organic
        states, next_states = _unflatten(o.state), _unflatten(o.next_state)
        for i in range(len(o.user_id)):
            out.append({"kind": "organic", "user_id": o.user_id[i], "seq": o.seq[i],
                        "state": states[i], "action": o.action[i], "reward": o.reward[i],
                        "next_state": next_states[i], "done": o.done[i],
                        "ts_ms": o.ts_ms[i]})  # fmt: skip
    if batch.slate is not None:
        s = batch.slate
        states, next_states = _unflatten(s.state), _unflatten(s.next_state)
        start = 0
        for i, k in enumerate(s.k):
            end = start + k
            row: Row = {"kind": "slate", "state": states[i], "next_state": next_states[i]}
            row.update({name: getattr(s, name)[i] for name in _SLATE_SCALARS})
            row.update({name: getattr(s, name)[start:end] for name in _SLATE_SLOTS})
            out.append(row)
            start = end
    return out


def _unflatten(columns: SequenceColumns) -> list[dict[str, list[int]] | None]:
    out: list[dict[str, list[int]] | None] = []
    start = 0
    for n in columns.lengths:
        if n is None:
            out.append(None)
            continue
        end = start + n
        out.append({"items": columns.items[start:end], "events": columns.events[start:end],
                    "ages": columns.ages[start:end]})  # fmt: skip
        start = end
    return out


def unpack(raw: bytes) -> list[Row]:
    """One message of the transitions topic, either form, as single-record dicts; a batch's
    shape is checked, its rows are not (tools and tests; the learner validates every row
    through ``schemas.codec.decode_transitions``). Raises ValueError on what is neither."""
    data = orjson.loads(raw)
    if not isinstance(data, dict):
        raise ValueError("a transitions message is a JSON object")
    if data.get("kind") != "batch":
        return [data]
    return rows(TransitionBatch.model_validate(data))


def count(raw: bytes) -> int:
    """Transitions in one message of the transitions topic, either form (for tools and
    benches that count without validating: an unreadable message counts 0)."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return 0
    if not isinstance(data, dict):
        return 0
    if data.get("kind") != "batch":
        return 1
    return sum(len((data.get(kind) or {}).get("user_id", ())) for kind in ("organic", "slate"))
