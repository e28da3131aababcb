"""The sessions written once per commit (streams/state.py's SessionCache): the same
transitions and the same stored sessions as writing every event, whatever the commits'
spacing; committed sessions are kept decoded; a revocation (forget, then a restore from
the changelog) continues from the committed state."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from schemas.topics import TopicRole
from streams import state
from streams.session import UserSession
from streams.state import SessionCache, WriteThrough
from tests.streams.test_assembler import assembler, src
from tests.streams.test_session_format import scripted_log


class Table:
    """The parts of a Faust Table SessionCache uses: ``data`` (the local store),
    ``get`` and ``items``."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}

    def get(self, key: bytes) -> bytes | None:
        return self.data.get(key)

    def items(self) -> Any:
        return self.data.items()


async def run(
    commit_every: int | None, forget_at: int | None = None
) -> tuple[list[bytes], dict[bytes, bytes], list[bytes]]:
    """Transitions, the stored sessions and the changelog writes of the scripted log,
    committing every ``commit_every`` messages (None: write every event). At
    ``forget_at`` the open work is dropped and the table restored from the changelog, as
    a revocation does; the messages since the last commit are then read again."""
    a = assembler()
    table = Table()
    changelog: list[tuple[bytes, bytes]] = []

    async def send(topic: str, key: bytes | None, value: bytes, *_: Any) -> Any:
        assert topic == "sessions-changelog" and key is not None
        changelog.append((key, value))

        async def delivered() -> None:
            return None

        return delivered()

    cache = SessionCache(table, "sessions-changelog")
    sessions = WriteThrough(table.data) if commit_every is None else cache
    log = scripted_log()
    out: list[bytes] = []
    pending: list[bytes] = []  # outputs of the open batch: written at its commit
    committed_at = 0
    n = 0
    forgotten = False
    while n < len(log):
        role, key, value, wall_ms = log[n]
        result = await a.handle(sessions, key=key, value=value, source=src(role, n),
                                wall_ms=wall_ms)  # fmt: skip
        pending += [o.value for o in result.outputs if o.topic == "t.transitions"]
        n += 1
        if commit_every is None:
            out += pending
            pending = []
        elif n % commit_every == 0 or n == len(log):
            await cache.flush(send)
            out += pending
            pending, committed_at = [], n
        if n == forget_at and not forgotten:
            forgotten = True
            cache.forget()
            pending = []
            table.data = dict(changelog)  # restored: the last committed value per key
            n = committed_at
    return out, table.data, [v for _, v in changelog]


@pytest.mark.parametrize("commit_every", [1, 4, 7, 100])
async def test_writes_per_commit_give_the_same_transitions_and_sessions(
    commit_every: int,
) -> None:
    per_event, stored, _ = await run(None)
    per_commit, cached_store, changelog = await run(commit_every)
    assert per_commit == per_event
    assert cached_store == stored
    # One changelog record per shopper per commit: never more than the events.
    assert len(changelog) <= len(scripted_log())
    if commit_every == 100:
        assert len(changelog) == 3  # the whole log in one commit: one record per shopper


async def test_a_revocation_mid_batch_continues_from_the_committed_sessions() -> None:
    per_event, stored, _ = await run(None)
    for forget_at in (5, 9, 14):
        again, restored, _ = await run(4, forget_at=forget_at)
        assert again == per_event
        assert restored == stored


async def test_committed_sessions_are_not_decoded_again(monkeypatch: pytest.MonkeyPatch) -> None:
    decoded = 0
    original = UserSession.from_bytes

    def counting(raw: bytes | None) -> UserSession:
        nonlocal decoded
        decoded += 1
        return original(raw)

    monkeypatch.setattr(UserSession, "from_bytes", staticmethod(counting))
    cache = SessionCache(Table(), "c")
    users = [f"u{n}".encode() for n in range(5)]

    async def send(*_: Any) -> Any:
        async def delivered() -> None:
            return None

        return delivered()

    for user in users:
        cache.save(user, cache.load(user), src(TopicRole.CLICKS, 0))
    await cache.flush(send)
    decoded = 0
    for user in users:
        cache.save(user, cache.load(user), src(TopicRole.CLICKS, 0))
    assert [u for u, _ in cache.items()] == users and decoded == 0
    await cache.flush(send)
    cache.forget()  # a revocation: the Table is restored from the changelog
    assert [u for u, _ in cache.items()] == users and decoded == len(users)
    assert all(orjson.loads(cache.table.data[u])["v"] == 2 for u in users)
    # Bounded: the most recently committed are kept.
    monkeypatch.setattr(state, "CLEAN_SESSIONS", 2)
    for user in users:
        cache.save(user, cache.load(user), src(TopicRole.CLICKS, 0))
    await cache.flush(send)
    assert list(cache.clean) == users[-2:]
