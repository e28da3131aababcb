"""Event logs on disk, for offline evaluation and for replaying into Kafka.

Two formats, told apart by the file's first line:

- RetailRocket ``events.csv``: ``timestamp,visitorid,event,itemid,transactionid`` with
  ``view`` = click, ``addtocart`` = cart, ``transaction`` = purchase (one line item per
  row; rows of one transaction share ``transactionid``);
- DIGINETICA ``train-item-views.csv`` (CIKM Cup 2016; e.g. the sample SR-GNN ships as
  ``datasets/sample_train-item-views.csv``): ``session_id;user_id;item_id;timeframe;
  eventdate``, one item view per row; the session is the visitor (user ids are mostly
  missing) and the time is the day plus ``timeframe`` (ms into the session);
- session-rec's prepared files (Ludewig et al.'s framework, e.g. its RecSys Challenge
  2015 sample ``data/rsc15/prepared/yoochoose-clicks-100k_*.txt``): tab-separated
  ``SessionId ItemId Time``, one item view per row, ``Time`` in seconds;
- recq's own JSONL: one event per line, exactly as produced to the event topics (the
  contract in schemas/records.py), so a log captured from Kafka can be read back.

A row that cannot be read is counted by reason with its line number, never dropped
silently: readers return what they skipped alongside what they read.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from schemas.codec import Limits, decode
from schemas.features import EVENT_NAMES, interactions_of
from schemas.records import CartEvent, ClickEvent, DeadLetter, Event, LineItem, PurchaseEvent

RETAILROCKET_HEADER = ["timestamp", "visitorid", "event", "itemid", "transactionid"]
DIGINETICA_HEADER = ["session_id", "user_id", "item_id", "timeframe", "eventdate"]
SESSIONREC_HEADER = ["SessionId", "ItemId", "Time"]
RETAILROCKET_EVENTS = {"view": "click", "addtocart": "cart", "transaction": "purchase"}
#: Historic logs: their timestamps are years old, which is fine offline.
OFFLINE_LIMITS = Limits(max_clock_skew_ms=10**15)

ShopEvent = ClickEvent | CartEvent | PurchaseEvent


@dataclass(frozen=True, slots=True)
class LoggedInteraction:
    """One item touched by one event (a purchase yields one per line item)."""

    user: str
    ts_ms: int
    item: str
    event: str  # a name of schemas.features.EVENT_CODES
    line: int  # 1-based line in the file
    event_id: str = ""
    item_line: int = 0  # line item of a purchase

    @property
    def order_key(self) -> tuple[int, str, int]:
        """schemas.features' order: (event time, event_id, line item)."""
        return (self.ts_ms, self.event_id, self.item_line)


@dataclass
class Skipped:
    """Rows not read, by reason, with the first few line numbers of each."""

    reasons: Counter[str] = field(default_factory=Counter)
    examples: dict[str, list[int]] = field(default_factory=dict)

    def add(self, reason: str, line: int) -> None:
        self.reasons[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(line)

    @property
    def total(self) -> int:
        return sum(self.reasons.values())

    def describe(self) -> str:
        return "; ".join(
            f"{n} {reason} (lines {', '.join(map(str, self.examples[reason]))}"
            f"{', ...' if n > len(self.examples[reason]) else ''})"
            for reason, n in self.reasons.most_common()
        )


def log_format(path: Path) -> str:
    """``retailrocket`` or ``jsonl``, from the first line; a clear error otherwise."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such log file")
    with path.open("rb") as f:
        first = f.readline().strip()
    if first.replace(b" ", b"").split(b",") == [h.encode() for h in RETAILROCKET_HEADER]:
        return "retailrocket"
    if first.replace(b" ", b"").split(b";") == [h.encode() for h in DIGINETICA_HEADER]:
        return "diginetica"
    if first.split(b"\t") == [h.encode() for h in SESSIONREC_HEADER]:
        return "sessionrec"
    if first.startswith(b"{"):
        return "jsonl"
    raise ValueError(
        f"{path}: not a RetailRocket events.csv (header {','.join(RETAILROCKET_HEADER)}), "
        f"a DIGINETICA train-item-views.csv (header {';'.join(DIGINETICA_HEADER)}), "
        f"a session-rec file (header {' '.join(SESSIONREC_HEADER)}, tab-separated) "
        "nor recq JSONL (one event object per line)"
    )


def read_events(path: Path, skipped: Skipped) -> Iterator[tuple[int, ShopEvent]]:
    """(line, event) in file order, as recq events (RetailRocket rows converted)."""
    readers = {"jsonl": _jsonl_events, "retailrocket": _retailrocket_events,
               "diginetica": _diginetica_events, "sessionrec": _sessionrec_events}  # fmt: skip
    yield from readers[log_format(path)](path, skipped)


def read_interactions(path: Path, skipped: Skipped) -> list[LoggedInteraction]:
    """Every interaction, as ``schemas.features.interactions_of`` defines them (cart
    removals included, with their own code)."""
    return [
        LoggedInteraction(
            event.user_id, event.ts_ms, x.item_id, EVENT_NAMES[x.code], line, event.event_id, x.line
        )
        for line, event in read_events(path, skipped)
        for x in interactions_of(event)
    ]


def _jsonl_events(path: Path, skipped: Skipped) -> Iterator[tuple[int, ShopEvent]]:
    with path.open("rb") as f:
        for n, raw in enumerate(f, 1):
            raw = raw.strip()
            if not raw:
                continue
            event = decode(raw, Event, limits=OFFLINE_LIMITS)
            if isinstance(event, DeadLetter):
                skipped.add(event.code, n)
            else:
                yield n, event


def _rows(
    path: Path, header: list[str], skipped: Skipped, delimiter: str = ","
) -> Iterator[tuple[int, list[str]]]:
    """(line, stripped cells) of each row after the header (checked by ``log_format``)
    that has the header's column count; the others are counted as skipped."""
    with path.open(newline="", encoding="utf-8", errors="replace") as f:
        rows = csv.reader(f, delimiter=delimiter)
        next(rows)
        for n, row in enumerate(rows, 2):
            if len(row) != len(header):
                skipped.add("wrong_column_count", n)
                continue
            yield n, [c.strip() for c in row]


def _retailrocket_events(path: Path, skipped: Skipped) -> Iterator[tuple[int, ShopEvent]]:
    for n, (ts, visitor, kind, item, transaction) in _rows(path, RETAILROCKET_HEADER, skipped):
        event_type = RETAILROCKET_EVENTS.get(kind)
        if event_type is None:
            skipped.add("unknown_event", n)
            continue
        if not ts.isdigit() or not visitor or not item:
            skipped.add("missing_field", n)
            continue
        eid, at = f"rr-{n}", int(ts)
        try:
            if event_type == "click":
                event: ShopEvent = ClickEvent(event_id=eid, user_id=visitor, ts_ms=at, item_id=item)
            elif event_type == "cart":
                event = CartEvent(
                    event_id=eid, user_id=visitor, ts_ms=at, item_id=item, action="add"
                )
            else:
                # RetailRocket has no prices; 0 keeps the line valid and says "unknown".
                line = LineItem(item_id=item, quantity=1, unit_price=0.0)
                event = PurchaseEvent(
                    event_id=eid, user_id=visitor, ts_ms=at,
                    order_id=transaction or eid, items=[line],
                )  # fmt: skip
        except ValueError:
            skipped.add("invalid_field", n)
            continue
        yield n, event


def _diginetica_events(path: Path, skipped: Skipped) -> Iterator[tuple[int, ShopEvent]]:
    for n, (session, _, item, timeframe, day) in _rows(path, DIGINETICA_HEADER, skipped, ";"):
        if not session or not item or not timeframe.isdigit():
            skipped.add("missing_field", n)
            continue
        try:
            midnight = dt.datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=dt.UTC)
        except ValueError:
            skipped.add("invalid_field", n)
            continue
        at = int(midnight.timestamp() * 1000) + int(timeframe)
        yield n, ClickEvent(event_id=f"dg-{n}", user_id=session, ts_ms=at, item_id=item)


def _sessionrec_events(path: Path, skipped: Skipped) -> Iterator[tuple[int, ShopEvent]]:
    for n, (session, item, seconds) in _rows(path, SESSIONREC_HEADER, skipped, "\t"):
        try:
            at = round(float(seconds) * 1000)
        except ValueError:
            skipped.add("invalid_field", n)
            continue
        if not session or not item:
            skipped.add("missing_field", n)
            continue
        yield n, ClickEvent(event_id=f"sr-{n}", user_id=session, ts_ms=at, item_id=item)
