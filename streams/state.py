"""Shoppers' sessions between commits: the sessions Table written once per commit.

Writing the Table on every event re-serialised the shopper's whole session and produced
it to the changelog per event, beside the transition itself (issue 24: the worker's
largest avoidable cost). ``SessionCache`` keeps each session touched since the last
commit as a live object (Kafka Streams' record cache, Quix Streams' state transaction):
the agent reads and updates it without decoding, and the commit (streams/eos.py,
``before_commit``) writes one changelog record per touched shopper, its last value,
inside the transaction that commits the offsets of the events that touched it. A crash
before the commit loses the cache and the open transaction together: the events are read
again from the committed offsets against the committed changelog, exactly as before. A
revocation rolls back the same way (``forget``).

``WriteThrough`` is the per-event behaviour over a plain mapping of bytes (tests, and
``RECQ_STREAMS_STATE_WRITES=event``)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, MutableMapping
from typing import Any, Protocol

from schemas.codec import Source
from streams import metrics
from streams.eos import SendOutput
from streams.session import UserSession


class Sessions(Protocol):
    """Where the assembler loads a shopper's session from and saves it to."""

    def load(self, user: bytes) -> UserSession: ...

    def save(self, user: bytes, session: UserSession, source: Source) -> None: ...

    def items(self) -> Iterator[tuple[bytes, UserSession]]: ...


class WriteThrough:
    """Each save encodes and stores the session at once (one changelog write per event
    when the mapping is a Faust Table)."""

    def __init__(self, table: MutableMapping[bytes, bytes]) -> None:
        self.table = table

    def load(self, user: bytes) -> UserSession:
        return UserSession.from_bytes(self.table.get(user))

    def save(self, user: bytes, session: UserSession, source: Source) -> None:
        self.table[user] = session.to_bytes()
        metrics.STATE_WRITES.inc()

    def items(self) -> Iterator[tuple[bytes, UserSession]]:
        for user, raw in list(self.table.items()):
            yield user, UserSession.from_bytes(raw)


#: Committed sessions kept decoded (most recently written first out last): a shopper's
#: next event, and the idle timer's look at every session, need not decode them again.
#: (Decoding was 7% of a worker's samples once commits came every batch.)
CLEAN_SESSIONS = 50_000


class SessionCache:
    """Sessions touched since the last commit, over the sessions Table; and the last
    ``CLEAN_SESSIONS`` committed ones, kept decoded."""

    def __init__(self, table: Any, changelog_topic: str) -> None:
        #: The Faust Table (its ``data`` is the local store the changelog restores).
        self.table = table
        self.changelog_topic = changelog_topic
        #: user -> (session, source topic, source partition) since the last commit.
        self.dirty: dict[bytes, tuple[UserSession, str, int]] = {}
        #: user -> session as last committed (equal to the Table's value), oldest first.
        self.clean: dict[bytes, UserSession] = {}

    def load(self, user: bytes) -> UserSession:
        hit = self.dirty.get(user)
        if hit is not None:
            return hit[0]
        # Taken out: the caller changes it and saves it (dirty); the commit puts it back.
        session = self.clean.pop(user, None)
        if session is not None:
            return session
        return UserSession.from_bytes(self.table.get(user))

    def save(self, user: bytes, session: UserSession, source: Source) -> None:
        # The source partition is the shopper's (inputs are co-partitioned by user_id):
        # the changelog partition, and the transaction the record belongs in.
        self.dirty[user] = (session, source.topic or "", source.partition or 0)

    def items(self) -> Iterator[tuple[bytes, UserSession]]:
        """Every session: the touched ones as they are now, then the Table's others.
        (A snapshot of the keys: callers may yield to the event loop between items.)"""
        dirty = list(self.dirty.items())
        clean = list(self.clean.items())
        yield from ((user, session) for user, (session, _, _) in dirty)
        yield from clean
        seen = {user for user, _ in dirty} | {user for user, _ in clean}
        for user, raw in list(self.table.items()):
            if user not in seen:
                yield user, UserSession.from_bytes(raw)

    async def flush(self, send: SendOutput) -> int:
        """Write each touched session once: into the local store, and to the changelog
        through ``send`` (the source partition's transaction). Returns how many; waits
        until the broker has them, so the offsets committed next never run ahead."""
        written = [(user, session.to_bytes(), topic, partition)
                   for user, (session, topic, partition) in self.dirty.items()]  # fmt: skip
        for user, (session, _, _) in self.dirty.items():
            self.clean[user] = session
        self.dirty.clear()
        while len(self.clean) > CLEAN_SESSIONS:
            del self.clean[next(iter(self.clean))]
        data = self.table.data  # the store alone: the changelog writes are below
        for user, raw, _, _ in written:
            data[user] = raw
        deliveries = [await send(self.changelog_topic, user, raw, topic, partition, partition)
                      for user, raw, topic, partition in written]  # fmt: skip
        await asyncio.gather(*deliveries)
        metrics.STATE_WRITES.inc(len(written))
        return len(written)

    def forget(self) -> None:
        """Drop what was not committed (a revocation aborted its transactions), and the
        decoded sessions too: the Table is emptied and restored from the changelog."""
        self.dirty.clear()
        self.clean.clear()
