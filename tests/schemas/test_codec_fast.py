"""Serving builds recommendation bytes without pydantic objects: they must be the
record's own wire form, and decode as a valid Recommendation."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from schemas.codec import decode, encode, encode_recommendation
from schemas.records import Recommendation, RecommendedItem

# Ids as the records allow them (printable: no control characters), unicode included.
ids = st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), min_size=1,
              max_size=40)  # fmt: skip
ts = st.integers(min_value=1_000_000_000_000, max_value=1_700_000_000_000)
items = st.lists(st.tuples(ids, st.floats(-1e6, 1e6, allow_nan=False),
                           st.floats(1e-12, 1.0)), max_size=20)  # fmt: skip


@given(rec_id=ids, request_id=ids, user_id=ids, shown=items, version=ids, when=ts)
def test_fast_bytes_are_the_records_wire_form(
    rec_id: str, request_id: str, user_id: str, shown: list[tuple[str, float, float]],
    version: str, when: int,
) -> None:  # fmt: skip
    fields = {"rec_id": rec_id, "request_id": request_id, "user_id": user_id,
              "model_version": version[:64], "policy": "epsilon-0.1", "requested_ts_ms": when,
              "received_ts_ms": when + 1, "served_ts_ms": when + 2}  # fmt: skip
    record = Recommendation(
        items=[RecommendedItem(item_id=i, score=s, propensity=p) for i, s, p in shown], **fields
    )
    fast = encode_recommendation(items=shown, **fields)  # type: ignore[arg-type]
    assert fast == encode(record)
    assert decode(fast, Recommendation) == record
