"""The typed records that travel on recq's topics.

Every record is a frozen pydantic model with a ``schema_version``; unknown fields are
rejected (a misspelt optional field would otherwise vanish silently) and evolution goes
through ``schema_version``. Times are epoch milliseconds (UTC). The rules here are the
contract written in docs/contract.md; ``schemas.jsonschema`` exports them for other languages.
"""

from __future__ import annotations

import time
from typing import Annotated, Any, ClassVar, Literal, Self

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationInfo,
    model_validator,
)
from pydantic_core import PydanticCustomError

from schemas.features import N_EVENT_CODES

SCHEMA_VERSION = 1
MIN_TS_MS = 946_684_800_000  # 2000-01-01T00:00:00Z: older times are a unit mix-up, not data
DEFAULT_MAX_CLOCK_SKEW_MS = 24 * 3600 * 1000
MAX_ID_LENGTH = 128
MAX_QUANTITY = 10_000
MAX_PRICE = 1_000_000_000.0
MAX_LINE_ITEMS = 1_000
MAX_K = 200
MAX_LIST_ITEMS = 1_000

# Printable, bounded, non-empty: ids end up in logs, topic keys and table keys.
Id = Annotated[
    str,
    StringConstraints(min_length=1, max_length=MAX_ID_LENGTH, pattern=r"^[^\x00-\x1f\x7f]+$"),
]
Quantity = Annotated[int, Field(ge=1, le=MAX_QUANTITY)]
Price = Annotated[float, Field(ge=0.0, le=MAX_PRICE, allow_inf_nan=False)]
Position = Annotated[int, Field(ge=0, lt=MAX_K)]
Probability = Annotated[float, Field(ge=0.0, le=1.0, allow_inf_nan=False)]

EventType = Literal["click", "cart", "purchase"]
EVENT_TYPES: tuple[EventType, ...] = ("click", "cart", "purchase")


class Record(BaseModel):
    """Base of every record: strict types, no unknown fields, immutable."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)

    #: Name used for the exported JSON Schema file and in messages.
    record_name: ClassVar[str]
    #: model_dump mode before orjson; "json" only where a field (bytes) needs pydantic's help.
    dump_mode: ClassVar[Literal["python", "json"]] = "python"

    schema_version: Literal[1] = Field(default=1, description="Version of this record's schema.")


def _not_in_future(ts_ms: int, info: ValidationInfo) -> int:
    """Reject timestamps beyond now + allowed skew (now and skew come from the decoder)."""
    ctx: dict[str, Any] = info.context or {}
    now_ms = int(ctx.get("now_ms") or time.time() * 1000)
    skew_ms = int(ctx.get("max_clock_skew_ms", DEFAULT_MAX_CLOCK_SKEW_MS))
    if ts_ms > now_ms + skew_ms:
        raise PydanticCustomError(
            "out_of_range",
            "{ahead_days} days in the future (allowed clock skew {skew_s} s)",
            {"ahead_days": round((ts_ms - now_ms) / 86_400_000, 1), "skew_s": skew_ms // 1000},
        )
    return ts_ms


#: Epoch milliseconds (UTC), not before 2000 and not beyond now + the allowed clock skew.
TimestampMs = Annotated[
    int, Field(ge=MIN_TS_MS, description="Epoch milliseconds, UTC."), AfterValidator(_not_in_future)
]


class _Event(Record):
    event_id: Id = Field(description="Unique per event; lets consumers drop duplicates.")
    user_id: Id = Field(description="The shopper; the Kafka key of every event.")
    ts_ms: TimestampMs = Field(description="Event time (when it happened at the shop).")
    rec_id: Id | None = Field(
        default=None, description="The recommendation this event responds to, if any."
    )
    position: Position | None = Field(
        default=None, description="0-based slot of the item in that recommendation."
    )

    @model_validator(mode="after")
    def _attribution_is_paired(self) -> Self:
        if (self.rec_id is None) != (self.position is None):
            raise ValueError("rec_id and position must be given together")
        return self


class ClickEvent(_Event):
    """A shopper viewed an item."""

    record_name = "click"
    type: Literal["click"] = "click"
    item_id: Id


class CartEvent(_Event):
    """A shopper added an item to, or removed it from, the cart."""

    record_name = "cart"
    type: Literal["cart"] = "cart"
    item_id: Id
    action: Literal["add", "remove"]
    quantity: Quantity = 1
    unit_price: Price | None = None


class LineItem(Record):
    """One line of an order."""

    record_name = "line_item"
    item_id: Id
    quantity: Quantity
    unit_price: Price


class PurchaseEvent(_Event):
    """A shopper checked out an order of one or more line items."""

    record_name = "purchase"
    type: Literal["purchase"] = "purchase"
    order_id: Id
    items: list[LineItem] = Field(min_length=1, max_length=MAX_LINE_ITEMS)
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")] = "EUR"


class ImpressionEvent(Record):
    """The shop rendered these positions of a recommendation to the shopper (explicit
    impressions, ``RECQ_IMPRESSIONS=explicit``). Keyed by user_id like every event."""

    record_name = "impression"
    type: Literal["impression"] = "impression"
    event_id: Id = Field(description="Unique per event; lets consumers drop duplicates.")
    user_id: Id = Field(description="The shopper; the Kafka key of every event.")
    ts_ms: TimestampMs = Field(description="When the slots were rendered.")
    rec_id: Id = Field(description="The recommendation shown.")
    positions: list[Position] = Field(
        min_length=1, max_length=MAX_K, description="0-based slots actually rendered."
    )

    @model_validator(mode="after")
    def _distinct_positions(self) -> Self:
        if len(set(self.positions)) != len(self.positions):
            raise ValueError("positions must be distinct")
        return self


Event = Annotated[ClickEvent | CartEvent | PurchaseEvent, Field(discriminator="type")]
EVENT_CLASSES: dict[EventType, type[ClickEvent | CartEvent | PurchaseEvent]] = {
    "click": ClickEvent,
    "cart": CartEvent,
    "purchase": PurchaseEvent,
}


class RequestContext(Record):
    """What the shop knows about the page the recommendation is for."""

    record_name = "request_context"
    page: Annotated[str, StringConstraints(min_length=1, max_length=64)] | None = None
    cart_item_ids: list[Id] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)


class RecRequest(Record):
    """Asks for ``k`` items for a shopper."""

    record_name = "rec_request"
    request_id: Id
    user_id: Id
    k: int = Field(default=10, ge=1, le=MAX_K)
    ts_ms: TimestampMs = Field(description="When the shop sent the request.")
    context: RequestContext = Field(default_factory=RequestContext)
    exclude_item_ids: list[Id] = Field(default_factory=list, max_length=MAX_LIST_ITEMS)


class RecommendedItem(Record):
    """One shown item: its score and the probability the policy had of showing it here."""

    record_name = "recommended_item"
    item_id: Id
    score: float = Field(allow_inf_nan=False)
    propensity: Probability = Field(
        description="P(this item in this slot | state) under the exploration policy."
    )


class Recommendation(Record):
    """The answer to a ``RecRequest``."""

    record_name = "recommendation"
    rec_id: Id = Field(description="Events that respond to this recommendation carry it.")
    request_id: Id
    user_id: Id
    items: list[RecommendedItem] = Field(max_length=MAX_K)
    model_version: Annotated[str, StringConstraints(min_length=1, max_length=64)] = Field(
        description="Snapshot version, or 'popularity' for the fallback."
    )
    policy: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    requested_ts_ms: TimestampMs = Field(description="The request's ts_ms.")
    received_ts_ms: TimestampMs = Field(description="When the serving member consumed it.")
    served_ts_ms: TimestampMs = Field(description="When the recommendation was produced.")


class InteractionSequence(Record):
    """A user's last L interactions as parallel lists (oldest first)."""

    record_name = "interaction_sequence"
    items: list[Annotated[int, Field(ge=0)]] = Field(description="Item vocabulary indices.")
    events: list[Annotated[int, Field(ge=0, le=N_EVENT_CODES - 1)]] = Field(
        description="Event codes (schemas.features): 1 click, 2 cart, 3 purchase, "
        "4 cart removal (0 is padding)."
    )
    ages: list[Annotated[int, Field(ge=0)]] = Field(description="Age buckets at decision time.")

    @model_validator(mode="after")
    def _same_length(self) -> Self:
        if not len(self.items) == len(self.events) == len(self.ages):
            raise ValueError("items, events and ages must have the same length")
        return self


class Transition(Record):
    """One organic (s, a, r, s', done) step in compact index form, keyed by user_id:
    the shopper touched item ``a`` on their own or from a slate.

    ``seq`` numbers a user's transitions so the learner can assemble n-step returns.
    """

    record_name = "transition"
    user_id: Id
    seq: int = Field(ge=0, description="Per-user ordinal; consecutive within a session.")
    kind: Literal["organic"] = "organic"
    state: InteractionSequence
    action: int = Field(ge=0, description="Item index of the action.")
    reward: float = Field(allow_inf_nan=False)
    next_state: InteractionSequence
    done: bool
    ts_ms: TimestampMs


SlateClose = Literal["reward_wait", "session_end", "event_time", "capacity"]


class SlateTransition(Record):
    """One shown recommendation and what the shopper did with each slot, written when its
    reward window closed (docs/streams.md, slate transitions). Keyed by user_id.

    Slots are in the order shown. ``responses[j]`` is the strongest response attributed
    to slot j (by rec_id and position, item matching): 0 none, 1 click, 2 cart, 3
    purchase; ``rewards[j]`` the summed reward of every response to it (0, the default
    reward, when none). ``next_state`` is the state just after the first response (None
    when no slot earned one); ``done`` that the session ended with this as its last slate.
    """

    record_name = "slate_transition"
    kind: Literal["slate"] = "slate"
    user_id: Id
    seq: int = Field(ge=0, description="Per-user ordinal of slate transitions.")
    rec_id: Id
    policy: Annotated[str, StringConstraints(min_length=1, max_length=32)]
    model_version: Annotated[str, StringConstraints(min_length=1, max_length=64)]
    state: InteractionSequence = Field(description="The shopper's state when it was shown.")
    items: list[Annotated[int, Field(ge=0)]] = Field(
        min_length=1, max_length=MAX_K, description="Item indices in slot order."
    )
    propensities: list[Probability] = Field(description="Logged propensity of each slot.")
    shown: list[bool] = Field(
        description="Whether each slot was rendered (all True with implicit impressions)."
    )
    responses: list[Annotated[int, Field(ge=0, le=3)]]
    rewards: list[Annotated[float, Field(allow_inf_nan=False)]]
    next_state: InteractionSequence | None = None
    done: bool
    closed_by: SlateClose
    ts_ms: TimestampMs = Field(description="When the recommendation was served.")

    @model_validator(mode="after")
    def _slots_agree(self) -> Self:
        n = len(self.items)
        if (
            not len(self.propensities)
            == len(self.shown)
            == len(self.responses)
            == len(self.rewards)
            == n
        ):
            raise ValueError("items, propensities, shown, responses and rewards must align")
        if (self.next_state is None) == any(self.responses):
            raise ValueError("next_state is given exactly when some slot has a response")
        return self


#: Either kind of record on the transitions topic, told apart by ``kind``.
AnyTransition = Annotated[Transition | SlateTransition, Field(discriminator="kind")]


class _Columns(BaseModel):
    """Columns of a ``TransitionBatch``: one list per field, one entry per row. The
    element rules stay with ``Transition`` and ``SlateTransition``: a reader validates
    every row it rebuilds (schemas.transition_batch), so the batch checks shapes only."""

    model_config = ConfigDict(strict=True, extra="forbid", frozen=True)


class SequenceColumns(_Columns):
    """``InteractionSequence`` rows, flattened: row i is the next ``lengths[i]`` entries of
    ``items``, ``events`` and ``ages`` (``None``: the row has no sequence)."""

    lengths: list[Annotated[int, Field(ge=0)] | None]
    items: list[int]
    events: list[int]
    ages: list[int]

    @model_validator(mode="after")
    def _flat_lists_cover_the_rows(self) -> Self:
        total = sum(n for n in self.lengths if n is not None)
        if not len(self.items) == len(self.events) == len(self.ages) == total:
            raise ValueError("items, events and ages must each hold sum(lengths) entries")
        return self


class OrganicColumns(_Columns):
    """``Transition`` rows (``kind: "organic"``) as columns."""

    user_id: list[str]
    seq: list[int]
    action: list[int]
    reward: list[float]
    done: list[bool]
    ts_ms: list[int]
    state: SequenceColumns
    next_state: SequenceColumns

    @model_validator(mode="after")
    def _aligned(self) -> Self:
        n = len(self.user_id)
        columns = (self.seq, self.action, self.reward, self.done, self.ts_ms,
                   self.state.lengths, self.next_state.lengths)  # fmt: skip
        if any(len(c) != n for c in columns):
            raise ValueError("every organic column must hold one entry per row")
        if None in self.state.lengths or None in self.next_state.lengths:
            raise ValueError("organic transitions always carry state and next_state")
        return self


class SlateColumns(_Columns):
    """``SlateTransition`` rows (``kind: "slate"``) as columns; the per-slot lists are
    flattened, row i owning the next ``k[i]`` slots."""

    user_id: list[str]
    seq: list[int]
    rec_id: list[str]
    policy: list[str]
    model_version: list[str]
    done: list[bool]
    closed_by: list[str]
    ts_ms: list[int]
    k: list[Annotated[int, Field(ge=1, le=MAX_K)]]
    items: list[int]
    propensities: list[float]
    shown: list[bool]
    responses: list[int]
    rewards: list[float]
    state: SequenceColumns
    next_state: SequenceColumns

    @model_validator(mode="after")
    def _aligned(self) -> Self:
        n = len(self.user_id)
        columns = (self.seq, self.rec_id, self.policy, self.model_version, self.done,
                   self.closed_by, self.ts_ms, self.k, self.state.lengths,
                   self.next_state.lengths)  # fmt: skip
        if any(len(c) != n for c in columns):
            raise ValueError("every slate column must hold one entry per row")
        slots = sum(self.k)
        if any(len(c) != slots for c in (self.items, self.propensities, self.shown,
                                         self.responses, self.rewards)):  # fmt: skip
            raise ValueError("items, propensities, shown, responses and rewards must each "
                             "hold sum(k) entries")  # fmt: skip
        return self


class TransitionBatch(Record):
    """Many transitions of one worker transaction in one message (columnar), on the
    transitions topic beside single ``transition`` / ``slate_transition`` records
    (``RECQ_TRANSITIONS_FORMAT``). Written to the partition of the source partition that
    produced them, so one shopper's transitions stay in one partition, in order: organic
    rows in the order written, slate rows likewise. Readers: ``schemas.transition_batch``."""

    record_name = "transition_batch"
    kind: Literal["batch"] = "batch"
    organic: OrganicColumns | None = None
    slate: SlateColumns | None = None


#: Anything on the transitions topic: one transition or a batch of them.
AnyTransitionMessage = Annotated[
    Transition | SlateTransition | TransitionBatch, Field(discriminator="kind")
]


class SnapshotAnnouncement(Record):
    """Published on the snapshots topic when a verified model snapshot is in the store."""

    record_name = "snapshot_announcement"
    version: int = Field(ge=1)
    path: Annotated[str, StringConstraints(min_length=1, max_length=512)] = Field(
        description="Directory of the snapshot, relative to the model store."
    )
    sha256: Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]
    created_ts_ms: TimestampMs
    step: int = Field(ge=0, description="Learner update count when exported.")
    metrics: dict[str, float] = Field(default_factory=dict)


MAX_ATTRIBUTES = 64


class CatalogItem(Record):
    """An item as the shop describes it, on the compacted ``catalog`` topic (key = item_id;
    the newest record of an item is its description). The learner embeds the category and
    the price, so an item the catalog describes starts near its category and price before
    anyone has interacted with it; ``attributes`` are kept for producers and readers that
    want them and are not embedded yet."""

    record_name = "catalog_item"
    item_id: Id
    category: Id | None = Field(default=None, description="The item's category, any string.")
    price: Price | None = Field(default=None, description="Unit price in the shop's currency.")
    attributes: dict[Id, Annotated[str, StringConstraints(max_length=256)]] = Field(
        default_factory=dict, max_length=MAX_ATTRIBUTES, description="Free attributes."
    )
    ts_ms: TimestampMs = Field(description="When the shop published this description.")


class ItemClaim(Record):
    """A worker's claim of an item id on the item-vocabulary topic (key = item_id). The
    item's index is the rank of its first claim in that single partition."""

    record_name = "item_claim"
    item_id: Id
    ts_ms: int = Field(ge=0, description="When the claim was made.")


class SessionTick(Record):
    """An internal nudge (key = user_id) asking the owner of a user's session to close
    it if it has been idle for the session timeout."""

    record_name = "session_tick"
    user_id: Id
    ts_ms: int = Field(ge=0, description="When the tick was sent (wall clock).")


DeadLetterCode = Literal[
    "oversized",
    "not_utf8",
    "malformed_json",
    "not_an_object",
    "unknown_type",
    "unsupported_version",
    "missing_field",
    "wrong_type",
    "out_of_range",
    "invalid_value",
    "unknown_field",
]


class DeadLetter(Record):
    """An input that could not be decoded, with the original bytes and why."""

    model_config = ConfigDict(ser_json_bytes="base64", val_json_bytes="base64")

    record_name = "dead_letter"
    dump_mode = "json"
    code: DeadLetterCode = Field(description="Machine-readable reason class.")
    reason: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    expected: Annotated[str, StringConstraints(max_length=64)] = Field(
        description="The record type the consumer expected."
    )
    source_topic: str | None = None
    source_partition: int | None = None
    source_offset: int | None = None
    original: bytes = Field(
        description="The original message value (base64), byte for byte; only its first "
        "bytes when original_truncated (an original too large to carry)."
    )
    original_bytes: int | None = Field(
        default=None, ge=0, description="Size of the original message value."
    )
    original_sha256: str | None = Field(
        default=None, pattern=r"^[0-9a-f]{64}$", description="sha256 of the whole original."
    )
    original_truncated: bool = Field(
        default=False, description="original holds only a prefix of the message value."
    )
    ts_ms: int = Field(description="When the dead letter was produced.")


#: Every top-level record, by exported name.
RECORDS: tuple[type[Record], ...] = (
    ClickEvent,
    CartEvent,
    PurchaseEvent,
    ImpressionEvent,
    RecRequest,
    Recommendation,
    Transition,
    SlateTransition,
    TransitionBatch,
    SnapshotAnnouncement,
    ItemClaim,
    CatalogItem,
    SessionTick,
    DeadLetter,
)
