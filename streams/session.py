"""One shopper's session state and the rules that turn their interactions into
transitions. Pure: no Kafka, no clock (callers pass times in), so the rules are tested
directly and every worker computes the same transitions from the same input.

Rules (docs/streams.md says the same):

* Reorder window W: interactions wait in a per-user buffer, sorted by event time (ties:
  event_id, then line), and leave it from the front once the front one has waited W of
  wall-clock time since it arrived (checked on the user's next message or a tick). W is
  wall-clock, not event-time, because the three event topics are consumed independently:
  a backlog is read topic by topic, so event time alone would release a cart before the
  click that preceded it on another topic.
* Synchronised inputs: while a backlog is read, one topic's partition can run far ahead
  of its siblings. An interaction is also held until every input partition of its group
  has been read past the Kafka timestamp at which it was produced (or to its end), the
  rule Kafka Streams applies across co-partitioned inputs; a ``Sync`` carries it in. "To
  its end" is as the consumer last saw the end: it covers only interactions that
  arrived by then (a purchase read after that moment may follow a cart the consumer
  has not fetched yet; issue 14).
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
* Slate transition (docs/streams.md, slate transitions): each recommendation
  shown to the user opens a reward window with the state when it was shown (the last L
  interactions with event time up to its serving time). An interaction carrying its
  rec_id and position, whose item is in that slot, is attributed to the slot (its reward
  added, its code the slot's response). A window closes at the earliest of: the user's
  session ending (every window served before the end: checkout, event-time gap, idle),
  an interaction released more than the reward wait after its serving time (event
  time), or the reward wait plus the reorder window of wall-clock time since the window
  opened (inputs read past it, while reading a backlog). It does not close when the
  next slate is shown: shoppers answer a slate after the next one may have been served,
  and their click waits the reorder window before it is applied. Then one ``slate``
  transition is written. An attribution to a closed window is counted as late; it does
  not change what was written.
* Impressions: implicit, every slot of a published recommendation was shown; explicit,
  only the positions the shop reported (an impression event, which may arrive before the
  recommendation; a slot responded to was evidently shown). A window closed with no
  slot shown writes nothing and is counted.
"""

from __future__ import annotations

from bisect import insort
from collections.abc import Collection
from dataclasses import dataclass, field, fields, replace
from typing import Any

import orjson

from schemas import features
from schemas.features import EVENT_CODES, HistoryEntry, encode_state, is_repeat
from schemas.reward import Reward
from schemas.settings import StreamsSettings

#: ``Sync.produced_ms`` when every input partition has been read to its end.
CAUGHT_UP = 2**62
#: Closed rec_ids remembered per user to tell a late reward from an unknown rec_id.
CLOSED_REMEMBERED = 64
#: Impressions kept per user while their recommendation has not been read yet.
EARLY_IMPRESSIONS = 256
#: Responses recorded per slot: the strongest of click, cart, purchase.
STRONGEST_RESPONSE = EVENT_CODES["purchase"]
#: Code of the buffer entry that stands for a recommendation until its window opens.
SHOWN = 0
#: Open windows live in the shopper's Table value (~1 KB each) and its changelog message
#: (1 MiB by default): past this many, the oldest closes early (``closed_by="capacity"``).
MAX_OPEN_WINDOWS = 500


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
    position: int | None = None  # the slot of rec_id it responds to
    revenue: float = 0.0  # a purchase line's price x quantity (schemas.reward)

    @property
    def order_key(self) -> tuple[int, str, int]:
        return (self.ts_ms, self.event_id, self.line)

    def entry(self) -> HistoryEntry:
        """Its place in a history (``schemas.features``)."""
        return [self.item, self.code, self.ts_ms, self.event_id, self.line]

    def as_list(self) -> list[Any]:
        return [self.ts_ms, self.event_id, self.line, self.item, self.code, self.rec_id,
                self.last_line, self.arrival_ms, self.produced_ms, self.position,
                self.revenue]  # fmt: skip

    @classmethod
    def from_list(cls, raw: list[Any]) -> Interaction:
        return cls(*raw)


def _default_ms(name: str) -> int:
    """A ``StreamsSettings`` default in seconds, as ms: the settings own every default."""
    return int(StreamsSettings.model_fields[name].default * 1000)


@dataclass(frozen=True, slots=True)
class Sync:
    """How far every input partition of a user's partition group has been read.

    ``produced_ms``: every message produced (Kafka timestamp) up to it has been read on
    every input; CAUGHT_UP when each input was read to its end. ``observed_ms``: when
    (this worker's wall clock) the ends counted as read were observed. An input read to
    the end the consumer knew of at that moment says nothing of messages that reached
    the worker later, so the synchronisation covers only interactions that arrived by
    then (CAUGHT_UP: no input counted as read to its end, no bound)."""

    produced_ms: int = CAUGHT_UP
    observed_ms: int = CAUGHT_UP

    @property
    def caught_up(self) -> bool:
        return self.produced_ms >= CAUGHT_UP

    def covers(self, x: Interaction) -> bool:
        return x.produced_ms <= self.produced_ms and x.arrival_ms <= self.observed_ms

    def now(self, wall_ms: int) -> int:
        """The latest wall-clock time at which the inputs are known read to their end."""
        return min(wall_ms, self.observed_ms)

    @staticmethod
    def weakest(syncs: Collection[Sync]) -> Sync:
        """What holds for every one of ``syncs`` (nothing when there are none)."""
        if not syncs:
            return HELD
        return Sync(min(x.produced_ms for x in syncs), min(x.observed_ms for x in syncs))


#: Every input read to its end as of now (callers with one input, and tests).
SYNCED = Sync()
#: Nothing known yet: every release waits.
HELD = Sync(0, 0)


@dataclass(frozen=True, slots=True)
class Rules:
    """The configurable part of the rules, in the units the rules compute with (ms).
    Built from ``StreamsSettings`` (``from_settings``); the defaults are its defaults."""

    history_length: int = StreamsSettings.model_fields["history_length"].default
    reorder_window_ms: int = _default_ms("reorder_window_s")
    session_timeout_ms: int = _default_ms("session_timeout_s")
    reward_wait_ms: int = _default_ms("reward_wait_s")
    done_on_purchase: bool = StreamsSettings.model_fields["done_on_purchase"].default
    reward: Reward = field(default_factory=Reward)
    implicit_impressions: bool = StreamsSettings.model_fields["impressions"].default == "implicit"

    @classmethod
    def from_settings(cls, settings: StreamsSettings) -> Rules:
        return cls(
            history_length=settings.history_length,
            reorder_window_ms=int(settings.reorder_window_s * 1000),
            session_timeout_ms=int(settings.session_timeout_s * 1000),
            reward_wait_ms=int(settings.reward_wait_s * 1000),
            done_on_purchase=settings.done_on_purchase,
            reward=settings.reward(),
            implicit_impressions=settings.impressions == "implicit",
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
    late_rewards: int = 0  # attributions to a window that had closed
    unshown: int = 0  # windows closed with no slot shown (explicit impressions)


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
    #: Open reward windows, oldest first (dicts: see ``Sessionizer.on_recommendation``).
    slates: list[dict[str, Any]] = field(default_factory=list)
    slate_seq: int = 0
    closed_recs: list[str] = field(default_factory=list)
    #: rec_id -> [ts_ms, positions] of impressions read before their recommendation.
    early_impressions: dict[str, list[Any]] = field(default_factory=dict)
    #: Recommendations waiting in the buffer to open their window (rec_id -> window).
    waiting_recs: dict[str, dict[str, Any]] = field(default_factory=dict)

    # --- persistence (Table values are bytes) ---------------------------------------------
    def to_bytes(self) -> bytes:
        """The stored record: named fields and the format version ``v`` (SESSION_FORMAT)."""
        record: dict[str, Any] = {"v": SESSION_FORMAT}
        record.update((name, getattr(self, name)) for name in _STORED)
        record["buffer"] = [x.as_list() for x in self.buffer]
        record["last_key"] = list(self.last_key) if self.last_key else None
        return orjson.dumps(record)

    @classmethod
    def from_bytes(cls, raw: bytes | None) -> UserSession:
        """Read a stored record of this format or the one before it (upgraded: the next
        write stores it in this format). A newer format raises ``SessionFormatError``."""
        if not raw:
            return cls()
        data = orjson.loads(raw)
        if isinstance(data, list):
            data = _upgrade_format_1(data)
        version = data.pop("v", None) if isinstance(data, dict) else None
        if version != SESSION_FORMAT:
            raise SessionFormatError(version)
        if data.keys() != set(_STORED):  # corrupt, or written by a build of another shape
            odd = sorted(data.keys() ^ set(_STORED))
            raise SessionFormatError(f"{version} with fields that differ in {odd}")
        data["buffer"] = [Interaction.from_list(x) for x in data["buffer"]]
        key = data["last_key"]
        data["last_key"] = (key[0], key[1], key[2]) if key else None
        return cls(**data)


#: The stored fields: every field of the record, by name.
_STORED = tuple(f.name for f in fields(UserSession))


#: The format of a stored session (the sessions Table's values, hence its changelog).
#: 2: a named record with ``v``. 1: a positional list of 15 slots (before issue 24), read
#: and upgraded. Raise it, and teach ``from_bytes`` the one before, when the record changes.
SESSION_FORMAT = 2
#: Format 1's slots, in order.
_FORMAT_1_SLOTS = ("history", "buffer", "last_key", "pending", "seq", "open", "last_ts",
                   "last_seen_wall_ms", "recent_ids", "slates", "last_produced_ms",
                   "slate_seq", "closed_recs", "early_impressions", "waiting_recs")  # fmt: skip


def _upgrade_format_1(slots: list[Any]) -> dict[str, Any]:
    if len(slots) != len(_FORMAT_1_SLOTS):
        # Lists of other lengths predate slates (before the first release that kept its
        # changelog across upgrades): not upgraded, the worker stops and says so.
        raise SessionFormatError(f"1 with {len(slots)} slots")
    return {"v": SESSION_FORMAT, **dict(zip(_FORMAT_1_SLOTS, slots, strict=True))}


class SessionFormatError(RuntimeError):
    """A stored session this worker cannot read: written by a newer recq (or corrupt)."""

    def __init__(self, version: object) -> None:
        super().__init__(
            f"a stored session has format {version!r}; this worker reads formats up to "
            f"{SESSION_FORMAT} (and 1, upgraded). A newer recq wrote the sessions Table's "
            "changelog: run that release's worker (or newer) on this RECQ_STREAMS_APP_ID, "
            "or start a new app id to begin with empty sessions."
        )
        self.version = version


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
        synced: Sync = SYNCED,
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
        self._release(session, user_id, wall_ms, resumed_ms, synced, out)
        return out

    def on_recommendation(
        self,
        session: UserSession,
        *,
        rec_id: str,
        served_ts_ms: int,
        items: list[int],
        propensities: list[float],
        policy: str,
        model_version: str,
        wall_ms: int,
        produced_ms: int = 0,
        resumed_ms: int = 0,
        synced: Sync = SYNCED,
        user_id: str = "",
    ) -> Outcome:
        """A published recommendation: it waits in the user's buffer like an interaction
        (same reorder window and synchronisation) and opens its reward window when it
        leaves it, so its state is every interaction before its serving time whatever
        order the topics were read in (a repeat is ignored)."""
        out = Outcome()
        if (
            rec_id in session.closed_recs
            or rec_id in session.waiting_recs
            or any(w["rec_id"] == rec_id for w in session.slates)
        ):
            return out
        session.waiting_recs[rec_id] = {
            "rec_id": rec_id, "ts": served_ts_ms, "wall": wall_ms, "produced": produced_ms,
            "items": items, "propensities": propensities, "policy": policy,
            "model_version": model_version,
        }  # fmt: skip
        # Ordered before interactions of the same millisecond (event_id "" sorts first).
        marker = Interaction(served_ts_ms, "", 0, -1, SHOWN, rec_id, True, wall_ms, produced_ms)
        if session.last_key is not None and marker.order_key < session.last_key:
            self._open_window(session, user_id, marker, out)  # late: opens at once
        else:
            insort(session.buffer, marker, key=_order)
        self._release(session, user_id, wall_ms, resumed_ms, synced, out)
        return out

    def _open_window(
        self, session: UserSession, user_id: str, marker: Interaction, out: Outcome
    ) -> None:
        window = session.waiting_recs.pop(marker.rec_id or "")
        items = window["items"]
        shown = [self.rules.implicit_impressions] * len(items)
        early = session.early_impressions.pop(window["rec_id"], None)
        if early is not None:
            for position in early[1]:
                if position < len(shown):
                    shown[position] = True
        before = [h for h in session.history if h[2] < marker.ts_ms]
        window.update(
            # Encoded once, at the serving time: the open window lives in the shopper's
            # Table value, re-encoded on every message (entries carry event ids).
            state=encode_state(before[-self.rules.history_length :], marker.ts_ms),
            shown=shown,
            responses=[0] * len(items),
            rewards=[0.0] * len(items),
            next_state=None,
        )
        session.slates.append(window)
        if len(session.slates) > MAX_OPEN_WINDOWS:
            self._close_windows(session, user_id, session.slates[:1], "capacity", out)

    def on_impression(
        self, session: UserSession, rec_id: str, positions: list[int], ts_ms: int
    ) -> Outcome:
        """Mark rendered positions of a recommendation (explicit impressions)."""
        out = Outcome()
        window = next((w for w in session.slates if w["rec_id"] == rec_id), None)
        if window is not None:
            for position in positions:
                if position < len(window["shown"]):
                    window["shown"][position] = True
        elif rec_id in session.closed_recs:
            out.late_rewards += 1
        else:
            # Read before its recommendation (another topic): kept until it arrives, or
            # for the reward wait.
            early = session.early_impressions
            for stale in [
                r for r, (ts, _) in early.items() if ts + self.rules.reward_wait_ms < ts_ms
            ]:
                del early[stale]
                out.unattributed += 1
            early[rec_id] = [ts_ms, positions]
            if len(session.early_impressions) > EARLY_IMPRESSIONS:
                oldest = min(
                    session.early_impressions, key=lambda r: session.early_impressions[r][0]
                )
                del session.early_impressions[oldest]
                out.unattributed += 1
        return out

    def on_tick(
        self,
        session: UserSession,
        user_id: str,
        wall_ms: int,
        resumed_ms: int = 0,
        synced: Sync = SYNCED,
    ) -> Outcome:
        """Release what waited a reorder window; end a session idle for the timeout."""
        out = Outcome()
        self._release(session, user_id, wall_ms, resumed_ms, synced, out)
        if session.open and not session.buffer and self._idle(session, wall_ms, resumed_ms, synced):
            self._close(session, user_id, out)
        due = [w for w in session.slates if self._window_due(w, wall_ms, resumed_ms, synced)]
        if due:
            self._close_windows(session, user_id, due, "reward_wait", out)
        return out

    def ready(
        self, session: UserSession, wall_ms: int, resumed_ms: int = 0, synced: Sync = SYNCED
    ) -> bool:
        """Whether a tick at ``wall_ms`` would release or close something."""
        if session.buffer:
            head = session.buffer[0]
            waited_from = max(head.arrival_ms, resumed_ms)
            if waited_from <= wall_ms - self.rules.reorder_window_ms and synced.covers(head):
                return True
        elif session.open and self._idle(session, wall_ms, resumed_ms, synced):
            return True
        return any(self._window_due(w, wall_ms, resumed_ms, synced) for w in session.slates)

    def _window_due(
        self, window: dict[str, Any], wall_ms: int, resumed_ms: int, synced: Sync
    ) -> bool:
        """The reward wait is over in wall-clock time (plus the reorder window, so a
        response that arrived in time has been applied; as of when the inputs were last
        seen read to their end), or, while a backlog is read, the inputs were read that
        far past the recommendation."""
        wait = self.rules.reward_wait_ms
        if synced.caught_up:
            opened = max(int(window["wall"]), resumed_ms)
            return synced.now(wall_ms) - opened >= wait + self.rules.reorder_window_ms
        return synced.produced_ms - int(window["produced"]) >= wait

    def _idle(self, session: UserSession, wall_ms: int, resumed_ms: int, synced: Sync) -> bool:
        timeout = self.rules.session_timeout_ms
        if synced.caught_up:
            return synced.now(wall_ms) - max(session.last_seen_wall_ms, resumed_ms) >= timeout
        # Still reading a backlog: idle if the inputs were read that far past the user.
        return synced.produced_ms - session.last_produced_ms >= timeout

    # --- rules ----------------------------------------------------------------------------
    def _release(
        self,
        session: UserSession,
        user_id: str,
        wall_ms: int,
        resumed_ms: int,
        synced: Sync,
        out: Outcome,
    ) -> None:
        due = wall_ms - self.rules.reorder_window_ms
        if resumed_ms > due:
            return
        buffer = session.buffer
        while buffer and buffer[0].arrival_ms <= due and synced.covers(buffer[0]):
            self._apply(session, user_id, session.buffer.pop(0), out)

    def _apply(self, session: UserSession, user_id: str, x: Interaction, out: Outcome) -> None:
        if x.code == SHOWN:
            self._open_window(session, user_id, x, out)
            return
        rules = self.rules
        ts = x.ts_ms
        if session.last_key is not None and x.order_key < session.last_key:
            ts = session.last_key[0]  # late: applied as of the last released time
        else:
            session.last_key = x.order_key
        if session.open and ts - session.last_ts > rules.session_timeout_ms:
            self._close(session, user_id, out)
        session.open = True
        session.last_ts = max(session.last_ts, ts)

        reward = rules.reward.of(x.code, x.revenue)
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
            self._attribute(session, x, ts, reward, next_state, out)
        if session.slates:  # most interactions meet no open window: no list per event
            expired = [w for w in session.slates if ts - w["ts"] > rules.reward_wait_ms]
            if expired:
                self._close_windows(session, user_id, expired, "event_time", out)
        session.seq += 1
        if x.code == EVENT_CODES["purchase"] and rules.done_on_purchase and x.last_line:
            out.transitions.append({**transition, "done": True})
            session.pending = None
            session.open = False
            self._end_slates(session, user_id, ts, out)
        else:
            session.pending = transition

    def _attribute(
        self,
        session: UserSession,
        x: Interaction,
        ts: int,
        reward: float,
        next_state: dict[str, list[int]],
        out: Outcome,
    ) -> None:
        """Add an interaction's reward to the slot of the recommendation it responds to."""
        window = next((w for w in session.slates if w["rec_id"] == x.rec_id), None)
        if window is None:
            if x.rec_id in session.closed_recs:
                out.late_rewards += 1
            else:
                out.unattributed += 1
            return
        slot = x.position
        if (
            slot is None
            or slot >= len(window["items"])
            or window["items"][slot] != x.item
            or ts < window["ts"]
        ):
            out.unattributed += 1  # not that slot's item, or before it was served
            return
        if ts - window["ts"] > self.rules.reward_wait_ms:
            out.late_rewards += 1
            return
        out.attributed += 1
        window["shown"][slot] = True  # a slot responded to was evidently rendered
        window["rewards"][slot] += reward
        if x.code <= STRONGEST_RESPONSE:
            window["responses"][slot] = max(window["responses"][slot], x.code)
        if window["next_state"] is None and x.code <= STRONGEST_RESPONSE:
            window["next_state"] = next_state

    def _close(self, session: UserSession, user_id: str, out: Outcome) -> None:
        """The session ended by inactivity: its last transition is done, and the reward
        windows of slates served before its end close."""
        if session.pending is not None:
            out.transitions.append({**session.pending, "done": True})
        session.pending = None
        session.open = False
        self._end_slates(session, user_id, session.last_ts + self.rules.session_timeout_ms, out)

    def _end_slates(self, session: UserSession, user_id: str, end_ts: int, out: Outcome) -> None:
        """Close the windows of slates served up to ``end_ts``; the newest is ``done``."""
        ended = [w for w in session.slates if w["ts"] <= end_ts]
        if ended:
            self._close_windows(session, user_id, ended, "session_end", out, last_done=True)

    def _close_windows(
        self,
        session: UserSession,
        user_id: str,
        windows: list[dict[str, Any]],
        closed_by: str,
        out: Outcome,
        last_done: bool = False,
    ) -> None:
        closing = {id(w) for w in windows}
        session.slates = [w for w in session.slates if id(w) not in closing]
        session.closed_recs += [w["rec_id"] for w in windows]
        del session.closed_recs[:-CLOSED_REMEMBERED]
        shown = [w for w in windows if any(w["shown"])]
        out.unshown += len(windows) - len(shown)
        for n, w in enumerate(shown):
            out.transitions.append(
                {
                    "kind": "slate",
                    "user_id": user_id,
                    "seq": session.slate_seq,
                    "rec_id": w["rec_id"],
                    "policy": w["policy"],
                    "model_version": w["model_version"],
                    "state": w["state"],
                    "items": w["items"],
                    "propensities": w["propensities"],
                    "shown": w["shown"],
                    "responses": w["responses"],
                    "rewards": w["rewards"],
                    "next_state": w["next_state"],
                    "done": last_done and n == len(shown) - 1,
                    "closed_by": closed_by,
                    "ts_ms": w["ts"],
                }
            )
            session.slate_seq += 1
