"""Bytes <-> records. ``decode`` is the one entry point every consumer uses: it returns the
record, or a ``DeadLetter`` carrying the original bytes and a specific reason. It never
raises on bad input, so an agent that calls it keeps running whatever arrives."""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass
from functools import cache
from typing import Any, TypeVar, cast

import orjson
from pydantic import TypeAdapter, ValidationError
from pydantic_core import ErrorDetails

from schemas import transition_batch
from schemas.records import (
    DEFAULT_MAX_CLOCK_SKEW_MS,
    AnyTransition,
    AnyTransitionMessage,
    DeadLetter,
    DeadLetterCode,
    Event,
    Record,
    SlateTransition,
    Transition,
    TransitionBatch,
)

R = TypeVar("R", bound=Record)

DEFAULT_MAX_PAYLOAD_BYTES = 256 * 1024
_REASON_LIMIT = 2048
#: A dead letter keeps the original bytes whole up to this size. Base64 makes them a
#: third larger, so a dead letter stays far below Kafka's 1 MiB default request and
#: message sizes; a larger original (an oversized event, up to what the broker accepts)
#: is kept as its first ORIGINAL_PREFIX_BYTES, with its size and sha256. Otherwise the
#: dead letter itself would be too large to produce, and the message would be lost.
ORIGINAL_KEPT_BYTES = 256 * 1024
ORIGINAL_PREFIX_BYTES = 4 * 1024


@dataclass(frozen=True, slots=True)
class Limits:
    """Decoder limits; build them from ``Settings`` with ``Limits.from_settings``."""

    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_clock_skew_ms: int = DEFAULT_MAX_CLOCK_SKEW_MS

    @classmethod
    def from_settings(cls, settings: Any) -> Limits:
        return cls(
            max_payload_bytes=settings.max_payload_bytes,
            max_clock_skew_ms=settings.max_clock_skew_s * 1000,
        )


@dataclass(frozen=True, slots=True)
class Source:
    """Where a message came from; copied into its dead letter."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None


def encode(record: Record) -> bytes:
    """The wire form of a record: compact JSON (orjson), keys in field order."""
    return orjson.dumps(record.model_dump(mode=record.dump_mode))


def encode_recommendation(
    *,
    rec_id: str,
    request_id: str,
    user_id: str,
    items: list[tuple[str, float, float]],
    model_version: str,
    policy: str,
    requested_ts_ms: int,
    received_ts_ms: int,
    served_ts_ms: int,
) -> bytes:
    """``encode(Recommendation(...))`` without building the pydantic objects: serving's
    hot path, one per answered request. ``items`` are (item_id, score, propensity), with
    finite scores and propensities in (0, 1] (the caller's invariants; the record would
    check them). Byte for byte the record's wire form (tests/schemas/test_codec_fast.py)."""
    return orjson.dumps({
        "schema_version": 1, "rec_id": rec_id, "request_id": request_id, "user_id": user_id,
        "items": [{"schema_version": 1, "item_id": item, "score": score, "propensity": p}
                  for item, score, p in items],
        "model_version": model_version, "policy": policy, "requested_ts_ms": requested_ts_ms,
        "received_ts_ms": received_ts_ms, "served_ts_ms": served_ts_ms,
    })  # fmt: skip


@cache
def _adapter(expected: object) -> TypeAdapter[Any]:
    return TypeAdapter(expected)  # type: ignore[arg-type]  # a record class or the Event union


def _expected_name(expected: object) -> str:
    if expected is Event:
        return "event"
    if expected is AnyTransition or expected is AnyTransitionMessage:
        return "transition"
    return cast(type[Record], expected).record_name


def dead_letter(
    raw: bytes | None,
    expected: object,
    code: DeadLetterCode,
    reason: str,
    *,
    source: Source,
    now_ms: int,
) -> DeadLetter:
    """A dead letter for ``raw``, which was expected to be ``expected``: for ``decode``
    and for consumers whose own checks reject a record. The original is kept byte for
    byte up to ORIGINAL_KEPT_BYTES, past that as a prefix (``original_truncated``); its
    size and sha256 are always recorded."""
    data = raw or b""
    kept = data if len(data) <= ORIGINAL_KEPT_BYTES else data[:ORIGINAL_PREFIX_BYTES]
    return DeadLetter(
        code=code,
        reason=reason[:_REASON_LIMIT],
        expected=_expected_name(expected),
        source_topic=source.topic,
        source_partition=source.partition,
        source_offset=source.offset,
        original=kept,
        original_bytes=len(data),
        original_sha256=hashlib.sha256(data).hexdigest(),
        original_truncated=len(kept) < len(data),
        ts_ms=now_ms,
    )


def decode(
    raw: bytes | None,
    expected: type[R] | object,
    *,
    limits: Limits = Limits(),
    source: Source = Source(),
    now_ms: int | None = None,
) -> R | DeadLetter:
    """Decode ``raw`` as ``expected`` (a record class, or ``schemas.records.Event`` for any
    event type). Returns the record, or a ``DeadLetter`` with the original bytes."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)

    if raw is None:
        code: DeadLetterCode = "not_an_object"
        reason = "message has no value (a tombstone); expected a JSON object"
    elif len(raw) > limits.max_payload_bytes:
        code = "oversized"
        reason = (
            f"payload is {len(raw)} bytes; the limit is {limits.max_payload_bytes} "
            "(RECQ_MAX_PAYLOAD_BYTES)"
        )
    else:
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            try:
                raw.decode("utf-8")
            except UnicodeDecodeError as uexc:
                code, reason = (
                    "not_utf8",
                    f"payload is not UTF-8: invalid byte at offset {uexc.start}",
                )
            else:
                code, reason = "malformed_json", f"malformed JSON: {exc}"
        else:
            if isinstance(data, dict):
                return _validate(raw, data, expected, limits, source, now)
            code, reason = "not_an_object", f"expected a JSON object, got {_json_kind(data)}"
    return dead_letter(raw, expected, code, reason, source=source, now_ms=now)


def decode_transitions(
    raw: bytes | None,
    *,
    limits: Limits = Limits(),
    source: Source = Source(),
    now_ms: int | None = None,
) -> list[Transition | SlateTransition] | DeadLetter:
    """One message of the transitions topic, in either form (a single transition, or a
    ``TransitionBatch``: schemas.transition_batch), as its transitions. Every row of a
    batch is validated as the single record would be; a batch with an invalid row is
    dead-lettered whole (the original bytes keep every row)."""
    now = now_ms if now_ms is not None else int(time.time() * 1000)
    record = decode(raw, AnyTransitionMessage, limits=limits, source=source, now_ms=now)
    if isinstance(record, DeadLetter):
        return record
    if not isinstance(record, TransitionBatch):
        return [cast(Transition | SlateTransition, record)]
    adapter = _adapter(AnyTransition)
    context = {"now_ms": now, "max_clock_skew_ms": limits.max_clock_skew_ms}
    out: list[Transition | SlateTransition] = []
    for i, row in enumerate(transition_batch.rows(record)):
        try:
            out.append(adapter.validate_python(row, context=context))
        except ValidationError as exc:
            errors = exc.errors(include_url=False)
            shown = "; ".join(_describe(err) for err in errors[:3])
            return dead_letter(raw, AnyTransitionMessage, _classify(errors[0]),
                               f"batch row {i} ({row['kind']}): {shown}", source=source,
                               now_ms=now)  # fmt: skip
    return out


def _validate(
    raw: bytes,
    data: dict[str, Any],
    expected: type[R] | object,
    limits: Limits,
    source: Source,
    now: int,
) -> R | DeadLetter:
    try:
        return cast(
            R,
            _adapter(expected).validate_python(
                data, context={"now_ms": now, "max_clock_skew_ms": limits.max_clock_skew_ms}
            ),
        )
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        code = _classify(errors[0])
        if code == "unknown_type":  # the other errors only follow from the wrong type
            errors = errors[:1]
        shown = "; ".join(_describe(err) for err in errors[:3])
        more = f" (+{len(errors) - 3} more)" if len(errors) > 3 else ""
        return dead_letter(raw, expected, code, shown + more, source=source, now_ms=now)


def _json_kind(value: object) -> str:
    return {list: "an array", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )


_WRONG_TYPE_SUFFIXES = ("_type", "_parsing", "_from_float")
_OUT_OF_RANGE = {
    "greater_than",
    "greater_than_equal",
    "less_than",
    "less_than_equal",
    "too_short",
    "too_long",
    "string_too_short",
    "string_too_long",
    "finite_number",
    "out_of_range",
}


def _field(err: ErrorDetails) -> str:
    return str(err["loc"][-1]) if err["loc"] else ""


def _classify(err: ErrorDetails) -> DeadLetterCode:
    kind = err["type"]
    field = _field(err)
    if kind == "missing" or kind == "union_tag_not_found":
        return "missing_field"
    if kind == "extra_forbidden":
        return "unknown_field"
    if kind == "union_tag_invalid" or (kind == "literal_error" and field == "type"):
        return "unknown_type"
    if kind == "literal_error" and field == "schema_version":
        return "unsupported_version"
    if kind in _OUT_OF_RANGE:
        return "out_of_range"
    if kind.endswith(_WRONG_TYPE_SUFFIXES):
        return "wrong_type"
    return "invalid_value"


def _describe(err: ErrorDetails) -> str:
    loc = err["loc"]
    # A discriminated union puts the tag first ("purchase", "items", 0, ...): drop it.
    if (
        loc
        and isinstance(loc[0], str)
        and loc[0] in ("click", "cart", "purchase", "organic", "slate")
    ):
        loc = loc[1:]
    kind = err["type"]
    if kind == "union_tag_not_found":
        return "type: missing (one of 'click', 'cart', 'purchase')"
    if kind == "union_tag_invalid":
        ctx = err.get("ctx") or {}
        return f"type: unknown event type {ctx.get('tag')!r} (expected {ctx.get('expected_tags')})"
    path = ".".join(str(part) for part in loc) or "message"
    if kind == "literal_error" and path == "type":
        expected = (err.get("ctx") or {}).get("expected")
        return f"type: event type {err.get('input')!r} is not accepted here (expected {expected})"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "missing":
        return f"{path}: required field is missing"
    value = err.get("input")
    shown = "" if isinstance(value, dict | list) else f" (got {_short(value)})"
    return f"{path}: {msg}{shown}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
