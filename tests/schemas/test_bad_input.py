"""Table-driven bad input: every case becomes a dead letter with a specific code and
reason, the original bytes kept exactly, and no exception."""

from __future__ import annotations

import hashlib
import json

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from schemas.codec import Limits, Source, decode, encode
from schemas.examples import example_journey
from schemas.records import (
    CartEvent,
    ClickEvent,
    DeadLetter,
    Event,
    ImpressionEvent,
    PurchaseEvent,
    RecRequest,
)

NOW = 1_790_000_000_000  # fixed "now" so the clock never decides a test
TEN_YEARS_MS = 3650 * 86_400_000


def click(**overrides: object) -> bytes:
    body: dict[str, object] = {
        "type": "click",
        "event_id": "e1",
        "user_id": "u1",
        "ts_ms": NOW,
        "item_id": "sku-1",
    }
    body.update(overrides)
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


def impression(**overrides: object) -> bytes:
    body: dict[str, object] = {"type": "impression", "event_id": "e3", "user_id": "u1",
                               "ts_ms": NOW, "rec_id": "r1", "positions": [0, 1]}  # fmt: skip
    body.update(overrides)
    return orjson.dumps({k: v for k, v in body.items() if v is not ...})


def purchase(**overrides: object) -> bytes:
    body: dict[str, object] = {
        "type": "purchase",
        "event_id": "e2",
        "user_id": "u1",
        "ts_ms": NOW,
        "order_id": "o1",
        "items": [{"item_id": "sku-1", "quantity": 1, "unit_price": 9.5}],
    }
    body.update(overrides)
    return orjson.dumps(body)


CASES = [
    # (id, raw bytes, expected record type, code, words the reason must contain)
    ("malformed-json", b'{"type": "click", "user_id": ', ClickEvent, "malformed_json", "JSON"),
    ("not-an-object", b"[1, 2, 3]", ClickEvent, "not_an_object", "an array"),
    ("json-string", b'"click"', ClickEvent, "not_an_object", "a string"),
    ("wrong-type-user", click(user_id=42), ClickEvent, "wrong_type", "user_id"),
    ("wrong-type-ts", click(ts_ms="yesterday"), ClickEvent, "wrong_type", "ts_ms"),
    ("bool-is-not-int", click(ts_ms=True), ClickEvent, "wrong_type", "ts_ms"),
    ("missing-item", click(item_id=...), ClickEvent, "missing_field", "item_id"),
    ("missing-user", click(user_id=...), ClickEvent, "missing_field", "user_id"),
    ("empty-user", click(user_id=""), ClickEvent, "out_of_range", "user_id"),
    ("overlong-id", click(item_id="x" * 129), ClickEvent, "out_of_range", "item_id"),
    ("control-char-id", click(item_id="a\nb"), ClickEvent, "invalid_value", "item_id"),
    ("unknown-field", click(colour="red"), ClickEvent, "unknown_field", "colour"),
    ("unknown-type-union", click(type="wishlist"), Event, "unknown_type", "'wishlist'"),
    ("missing-type-union", click(type=...), Event, "missing_field", "type"),
    ("type-on-wrong-topic", click(type="purchase"), ClickEvent, "unknown_type", "'purchase'"),
    (
        "future-version",
        click(schema_version=2),
        ClickEvent,
        "unsupported_version",
        "schema_version",
    ),
    (
        "negative-price",
        purchase(items=[{"item_id": "sku-1", "quantity": 1, "unit_price": -5.0}]),
        PurchaseEvent,
        "out_of_range",
        "items.0.unit_price",
    ),
    (
        "zero-quantity",
        purchase(items=[{"item_id": "sku-1", "quantity": 0, "unit_price": 1.0}]),
        PurchaseEvent,
        "out_of_range",
        "quantity",
    ),
    ("empty-order", purchase(items=[]), PurchaseEvent, "out_of_range", "items"),
    (
        "ten-years-ahead",
        click(ts_ms=NOW + TEN_YEARS_MS),
        ClickEvent,
        "out_of_range",
        "3650.0 days in the future",
    ),
    ("before-2000", click(ts_ms=1_000), ClickEvent, "out_of_range", "ts_ms"),
    ("rec-id-without-position", click(rec_id="r1"), ClickEvent, "invalid_value", "together"),
    (
        "cart-bad-action",
        orjson.dumps(
            {
                "type": "cart",
                "event_id": "e",
                "user_id": "u",
                "ts_ms": NOW,
                "item_id": "i",
                "action": "wishlist",
            }
        ),
        CartEvent,
        "invalid_value",
        "action",
    ),
    (
        "k-too-large",
        orjson.dumps({"request_id": "r", "user_id": "u", "ts_ms": NOW, "k": 10_000}),
        RecRequest,
        "out_of_range",
        "k",
    ),
    ("two-megabytes", b"{" + b" " * (2 * 1024 * 1024) + b"}", ClickEvent, "oversized", "2097154"),
    ("not-utf8", b'{"type": "click", "user_id": "\xff\xfe"}', ClickEvent, "not_utf8", "offset 30"),
    ("nan-price", purchase().replace(b"9.5", b"NaN"), PurchaseEvent, "malformed_json", "JSON"),
    ("impression-twice-a-position", impression(positions=[0, 0]), ImpressionEvent,
     "invalid_value", "distinct"),
    ("impression-no-positions", impression(positions=[]), ImpressionEvent, "out_of_range",
     "positions"),
    ("impression-negative-position", impression(positions=[-1]), ImpressionEvent,
     "out_of_range", "positions.0"),
    ("impression-without-rec-id", impression(rec_id=...), ImpressionEvent, "missing_field",
     "rec_id"),
    ("click-on-the-impression-topic", click(), ImpressionEvent, "unknown_type", "'click'"),
]  # fmt: skip


@pytest.mark.parametrize(
    ("raw", "expected", "code", "words"),
    [case[1:] for case in CASES],
    ids=[case[0] for case in CASES],
)
def test_bad_input_becomes_a_dead_letter(
    raw: bytes, expected: object, code: str, words: str
) -> None:
    source = Source("recq.events.click", 3, 1234)
    got = decode(raw, expected, source=source, now_ms=NOW)

    assert isinstance(got, DeadLetter), got
    assert got.code == code, got.reason
    assert words in got.reason
    # kept whole up to 256 KiB; past it the first 4 KiB, with the size and sha256
    if len(raw) <= 256 * 1024:
        assert got.original == raw and not got.original_truncated
    else:
        assert got.original == raw[:4096] and got.original_truncated
    assert got.original_bytes == len(raw)
    assert got.original_sha256 == hashlib.sha256(raw).hexdigest()
    assert len(encode(got)) < 512 * 1024  # always small enough to produce
    assert (got.source_topic, got.source_partition, got.source_offset) == (
        "recq.events.click",
        3,
        1234,
    )
    assert got.ts_ms == NOW


def test_tombstone_is_a_dead_letter() -> None:
    got = decode(None, ClickEvent, now_ms=NOW)
    assert isinstance(got, DeadLetter)
    assert got.code == "not_an_object"
    assert "tombstone" in got.reason


def test_dead_letter_round_trips_the_original_bytes_through_json() -> None:
    raw = b"\x00\xff binary \xfe"
    letter = decode(raw, ClickEvent, now_ms=NOW)
    assert isinstance(letter, DeadLetter)
    again = DeadLetter.model_validate_json(encode(letter))
    assert again == letter
    assert again.original == raw


def test_payload_limit_and_clock_skew_come_from_the_limits() -> None:
    raw = click(ts_ms=NOW + 2 * 3600 * 1000)  # two hours ahead
    tight = Limits(max_payload_bytes=len(raw) - 1, max_clock_skew_ms=3600 * 1000)
    assert isinstance(decode(raw, ClickEvent, now_ms=NOW), ClickEvent)
    assert isinstance(decode(raw, ClickEvent, limits=tight, now_ms=NOW), DeadLetter)
    roomy = Limits(max_payload_bytes=len(raw), max_clock_skew_ms=3 * 3600 * 1000)
    assert isinstance(decode(raw, ClickEvent, limits=roomy, now_ms=NOW), ClickEvent)


@given(st.binary(max_size=512))
def test_decode_never_raises_on_arbitrary_bytes(raw: bytes) -> None:
    got = decode(raw, Event, now_ms=NOW)
    assert isinstance(got, DeadLetter | ClickEvent | CartEvent | PurchaseEvent)
    if isinstance(got, DeadLetter):
        assert got.original == raw


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )
)
def test_decode_never_raises_on_arbitrary_json(value: object) -> None:
    raw = json.dumps(value).encode()  # stdlib: also writes integers beyond 64 bits
    got = decode(raw, Event, now_ms=NOW)
    assert isinstance(got, DeadLetter)
    assert got.original == raw


JSON_VALUES = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=200)


@given(field=st.sampled_from(list(orjson.loads(click()))), value=JSON_VALUES)
def test_one_mangled_field_never_raises(field: str, value: object) -> None:
    body = orjson.loads(click())
    body[field] = value
    raw = json.dumps(body).encode()
    got = decode(raw, Event, now_ms=NOW)
    assert isinstance(got, DeadLetter | ClickEvent)
    if isinstance(got, ClickEvent):  # only values the contract allows get through
        assert getattr(got, field) == value


def test_valid_journey_round_trips() -> None:
    for event in example_journey("u1", NOW - 10_000):
        assert decode(encode(event), Event, now_ms=NOW) == event
        assert decode(encode(event), type(event), now_ms=NOW) == event
