"""One shopper's session state and the rules that turn their interactions into
transitions. Pure: no Kafka, no clock (callers pass times in), so the rules are tested
directly and every worker computes the same transitions from the same input.

Rules (the README's "Transitions" section says the same):

* Reorder window W: interactions wait in a per-user buffer, sorted by event time (ties:
  event_id, then line), and leave it from the front once the front one has waited W of
  wall-clock time since it arrived (checked on the user's next message or a tick). W is
  wall-clock, not event-time, because the three event topics are consumed independently:
  a backlog is read topic by topic, so event time alone would release a cart before the
  click that preceded it on another topic.
* Synchronised inputs: while a backlog is read, one topic's partition can run far ahead
  of its siblings. An interaction is also held until every input partition of its group
  has been read past the Kafka timestamp at which it was produced (or to its end), the
  rule Kafka Streams applies across co-partitioned inputs; ``synced_ms`` carries it in.
* Late: an interaction older than one already released cannot wait in order any more.
  It is counted and applied at once: its transition is dated the last released time,
  and it takes its event-time place in the history (as every state builder does).
* Duplicates: an event_id seen among the user's last 64 events is counted and skipped.
* Organic transition per released interaction: state = the last L interactions as
  ``schemas.features`` encodes them, action = its item, reward by ``schemas.reward``,
  next_state = the history with it added. It is held back until the next one arrives, which
  decides `done`: False inside a session; True when the session ends by inactivity
  (event-time gap > timeout; or no message for the timeout: wall-clock idle when the
  inputs are read to their end, else inputs read that far past the user's last event)
  or by a purchase (checkout).
* Feedback transition: an interaction carrying rec_id whose item was shown in that
  recommendation, within the attribution window, also yields state = the user's state
  when it was shown, action = the item, its reward and the logged propensity.
"""

from __future__ import annotations

from bisect import insort
from dataclasses import dataclass, field, replace
from typing import Any

import orjson

from schemas import features
from schemas.features import EVENT_CODES, HistoryEntry, encode_state, is_repeat
from schemas.reward import Reward
from schemas.settings import StreamsSettings

#: ``synced_ms`` when every input partition has been read to its end.
CAUGHT_UP = 2**62
MAX_SHOWN = 8


def _order(x: Interaction) -> tuple[int, str, int]:
    return x.order_key


@dataclass(frozen=True, slots=True)
class Interaction:
    """One item touched by one event (a purchase yields one per line item)."""

    ts_ms: int
    event_id: str
    line: int
    item: int
    code: int
    rec_id: str | None = None
    last_line: bool = True
    arrival_ms: int = 0  # wall clock when it reached the worker; not part of the order
    produced_ms: int = 0  # Kafka timestamp of its message

    @property
    def order_key(self) -> tuple[int, str, int]:
        return (self.ts_ms, self.event_id, self.line)

    def entry(self) -> HistoryEntry:
        """Its place in a history (``schemas.features``)."""
        return [self.item, self.code, self.ts_ms, self.event_id, self.line]

    def as_list(self) -> list[Any]:
        return [self.ts_ms, self.event_id, self.line, self.item, self.code, self.rec_id,
                self.last_line, self.arrival_ms, self.produced_ms]  # fmt: skip

    @classmethod
    def from_list(cls, raw: list[Any]) -> Interaction:
        return cls(*raw)


def _default_ms(name: str) -> int:
    """A ``StreamsSettings`` default in seconds, as ms: the settings own every default."""
    return int(StreamsSettings.model_fields[name].default * 1000)


@dataclass(frozen=True, slots=True)
class Rules:
    """The configurable part of the rules, in the units the rules compute with (ms).
    Built from ``StreamsSettings`` (``from_settings``); the defaults are its defaults."""

    history_length: int = StreamsSettings.model_fields["history_length"].default
    reorder_window_ms: int = _default_ms("reorder_window_s")
    session_timeout_ms: int = _default_ms("session_timeout_s")
    attribution_window_ms: int = _default_ms("attribution_window_s")
    done_on_purchase: bool = StreamsSettings.model_fields["done_on_purchase"].default
    reward: Reward = field(default_factory=Reward)

    @classmethod
    def from_settings(cls, settings: StreamsSettings) -> Rules:
        return cls(
            history_length=settings.history_length,
            reorder_window_ms=int(settings.reorder_window_s * 1000),
            session_timeout_ms=int(settings.session_timeout_s * 1000),
            attribution_window_ms=int(settings.attribution_window_s * 1000),
            done_on_purchase=settings.done_on_purchase,
            reward=settings.reward(),
        )


@dataclass(slots=True)
class Outcome:
    """What one call produced: transitions (dicts in the ``Transition`` wire shape) and
    counts for the metrics."""

    transitions: list[dict[str, Any]] = field(default_factory=list)
    late: int = 0
    duplicates: int = 0
    attributed: int = 0
    unattributed: int = 0


@dataclass(slots=True)
class UserSession:
    """Everything the streams worker keeps for one user (one Table value)."""

    history: list[HistoryEntry] = field(default_factory=list)
    buffer: list[Interaction] = field(default_factory=list)
    last_key: tuple[int, str, int] | None = None
    pending: dict[str, Any] | None = None
    seq: int = 0
    open: bool = False
    last_ts: int = 0
    last_seen_wall_ms: int = 0
    last_produced_ms: int = 0
    recent_ids: list[int] = field(default_factory=list)
    shown: list[dict[str, Any]] = field(default_factory=list)

    # --- persistence (Table values are bytes) ---------------------------------------------
    def to_bytes(self) -> bytes:
        return orjson.dumps(
            [self.history, [x.as_list() for x in self.buffer],
             list(self.last_key) if self.last_key else None, self.pending, self.seq,
             self.open, self.last_ts, self.last_seen_wall_ms, self.recent_ids, self.shown,
             self.last_produced_ms]
        )  # fmt: skip

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> UserSession:
        if not raw:
            return cls()
        h, buf, last_key, pending, seq, is_open, last_ts, wall, ids, shown, produced = orjson.loads(
            raw
        )
        return cls(
            history=h,
            buffer=[Interaction.from_list(x) for x in buf],
            last_key=(last_key[0], last_key[1], last_key[2]) if last_key else None,
            pending=pending,
            seq=seq,
            open=is_open,
            last_ts=last_ts,
            last_seen_wall_ms=wall,
            last_produced_ms=produced,
            recent_ids=ids,
            shown=shown,
        )


class Sessionizer:
    """Applies ``Rules`` to a ``UserSession``; one instance serves every user."""

    def __init__(self, rules: Rules) -> None:
        self.rules = rules

    # --- inputs -------------------------------------------------------------------------
    def on_event(
        self,
        session: UserSession,
        user_id: str,
        interactions: list[Interaction],
        wall_ms: int,
        resumed_ms: int = 0,
        synced_ms: int = CAUGHT_UP,
    ) -> Outcome:
        """Admit one event's interactions (all share an event_id). ``resumed_ms``: when
        this worker resumed processing; waiting before it does not count, so a restart
        does not release buffered events ahead of the replayed ones that precede them."""
        out = Outcome()
        if not interactions:
            return out
        if is_repeat(session.recent_ids, interactions[0].event_id):
            out.duplicates += 1
            return out
        session.last_seen_wall_ms = wall_ms
        session.last_produced_ms = max(session.last_produced_ms, interactions[0].produced_ms)
        for x in interactions:
            if session.last_key is not None and x.order_key < session.last_key:
                out.late += 1
                self._apply(session, user_id, x, out)
            else:
                if x.arrival_ms != wall_ms:  # callers that stamp it save a copy per event
                    x = replace(x, arrival_ms=wall_ms)
                insort(session.buffer, x, key=_order)
        self._release(session, user_id, wall_ms, resumed_ms, synced_ms, out)
        return out

    def on_recommendation(
        self, session: UserSession, rec_id: str, served_ts_ms: int, shown: dict[int, float]
    ) -> None:
        """Remember what was shown (item index -> propensity) and the user's state then."""
        known = session.history + [x.entry() for x in session.buffer if x.ts_ms <= served_ts_ms]
        window = self.rules.attribution_window_ms
        session.shown = [s for s in session.shown if s["ts"] + window >= served_ts_ms]
        session.shown.append(
            {
                "rec_id": rec_id,
                "ts": served_ts_ms,
                "items": {str(k): v for k, v in shown.items()},
                "history": known[-self.rules.history_length :],
            }
        )
        del session.shown[:-MAX_SHOWN]

    def on_tick(
        self,
        session: UserSession,
        user_id: str,
        wall_ms: int,
        resumed_ms: int = 0,
        synced_ms: int = CAUGHT_UP,
    ) -> Outcome:
        """Release what waited a reorder window; end a session idle for the timeout."""
        out = Outcome()
        self._release(session, user_id, wall_ms, resumed_ms, synced_ms, out)
        if (
            session.open
            and not session.buffer
            and self._idle(session, wall_ms, resumed_ms, synced_ms)
        ):
            self._close(session, out)
        return out

    def ready(
        self, session: UserSession, wall_ms: int, resumed_ms: int = 0, synced_ms: int = CAUGHT_UP
    ) -> bool:
        """Whether a tick at ``wall_ms`` would release or close something."""
        if session.buffer:
            head = session.buffer[0]
            waited_from = max(head.arrival_ms, resumed_ms)
            return (
                waited_from <= wall_ms - self.rules.reorder_window_ms
                and head.produced_ms <= synced_ms
            )
        return session.open and self._idle(session, wall_ms, resumed_ms, synced_ms)

    def _idle(self, session: UserSession, wall_ms: int, resumed_ms: int, synced_ms: int) -> bool:
        timeout = self.rules.session_timeout_ms
        if synced_ms >= CAUGHT_UP:
            return wall_ms - max(session.last_seen_wall_ms, resumed_ms) >= timeout
        # Still reading a backlog: idle if the inputs were read that far past the user.
        return synced_ms - session.last_produced_ms >= timeout

    # --- rules ----------------------------------------------------------------------------
    def _release(
        self,
        session: UserSession,
        user_id: str,
        wall_ms: int,
        resumed_ms: int,
        synced_ms: int,
        out: Outcome,
    ) -> None:
        due = wall_ms - self.rules.reorder_window_ms
        if resumed_ms > due:
            return
        buffer = session.buffer
        while buffer and buffer[0].arrival_ms <= due and buffer[0].produced_ms <= synced_ms:
            self._apply(session, user_id, session.buffer.pop(0), out)

    def _apply(self, session: UserSession, user_id: str, x: Interaction, out: Outcome) -> None:
        rules = self.rules
        ts = x.ts_ms
        if session.last_key is not None and x.order_key < session.last_key:
            ts = session.last_key[0]  # late: applied as of the last released time
        else:
            session.last_key = x.order_key
        if session.open and ts - session.last_ts > rules.session_timeout_ms:
            self._close(session, out)
        session.open = True
        session.last_ts = max(session.last_ts, ts)

        reward = rules.reward.of(x.code)
        state = encode_state(session.history, ts)
        # A late interaction takes its place in event-time order (features.insert), as it
        # does in every other state builder; its transition is dated the last released time.
        features.insert(session.history, x.entry(), rules.history_length)
        next_state = encode_state(session.history, ts)
        if session.pending is not None:
            out.transitions.append({**session.pending, "done": False})
        transition = {
            "user_id": user_id,
            "seq": session.seq,
            "kind": "organic",
            "state": state,
            "action": x.item,
            "reward": reward,
            "next_state": next_state,
            "ts_ms": ts,
        }
        if x.rec_id is not None:
            self._attribute(session, user_id, x, ts, reward, next_state, out)
        session.seq += 1
        if x.code == EVENT_CODES["purchase"] and rules.done_on_purchase and x.last_line:
            out.transitions.append({**transition, "done": True})
            session.pending = None
            session.open = False
        else:
            session.pending = transition

    def _attribute(
        self,
        session: UserSession,
        user_id: str,
        x: Interaction,
        ts: int,
        reward: float,
        next_state: dict[str, list[int]],
        out: Outcome,
    ) -> None:
        shown = next((s for s in session.shown if s["rec_id"] == x.rec_id), None)
        propensity = None if shown is None else shown["items"].get(str(x.item))
        if (
            shown is None
            or propensity is None
            or ts - shown["ts"] > self.rules.attribution_window_ms
            or ts < shown["ts"]
        ):
            out.unattributed += 1
            return
        out.attributed += 1
        out.transitions.append(
            {
                "user_id": user_id,
                "seq": session.seq,
                "kind": "feedback",
                "state": encode_state(shown["history"], shown["ts"]),
                "action": x.item,
                "reward": reward,
                "next_state": next_state,
                "done": False,
                "propensity": propensity,
                "ts_ms": ts,
            }
        )

    def _close(self, session: UserSession, out: Outcome) -> None:
        if session.pending is not None:
            out.transitions.append({**session.pending, "done": True})
        session.pending = None
        session.open = False
