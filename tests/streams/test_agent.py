"""The Faust agent itself, with ``test_context()`` and the memory store: messages on the
event topics go through the agent, its Table and the assembler, and out come exactly the
transitions and dead letters the rules say (no broker: the vocabulary is in memory and
outputs are captured where the agent sends them)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import faust
import orjson
import pytest
from faust.types import Message

from schemas.codec import decode_transitions, encode
from schemas.records import ClickEvent
from schemas.settings import StreamsSettings, load_settings
from schemas.topics import TopicCatalog, TopicRole
from streams import eos, worker
from streams.session import SYNCED, UserSession
from tests.streams.test_assembler import ListVocabulary

T0 = 1_790_000_000_000
PREFIX = "agent."


@pytest.fixture
def app_and_outputs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> tuple[faust.App, list[tuple[str, Any]]]:
    outputs: list[tuple[str, Any]] = []

    async def started(self: worker.StreamsRuntime) -> None:
        self._started = True

    async def capture(
        app: faust.App,
        topic: str,
        key: bytes | None,
        value: bytes,
        source: Any,
        partition: int | None = None,
    ) -> asyncio.Future[None]:
        outputs.append((topic, key, value))
        delivered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        delivered.set_result(None)
        return delivered

    monkeypatch.setattr(worker, "ItemVocabulary", lambda **_: ListVocabulary())
    monkeypatch.setattr(worker.StreamsRuntime, "ensure_started", started)
    monkeypatch.setattr(worker.eos, "send_in_transaction", capture)
    settings = load_settings(
        StreamsSettings,
        bootstrap_servers="localhost:9", topic_prefix=PREFIX, partitions=2,
        processing_guarantee="at_least_once", streams_store="memory://",
        reorder_window_s=0, metrics_port=0, streams_app_id="recq-agent-test",
        data_dir=tmp_path,
    )  # fmt: skip
    app = worker.create_app(settings, bootstrap="localhost:9")
    app.finalize()
    app.conf.store = "memory://"
    app.flow_control.resume()
    app.recq_runtime.synced = {0: SYNCED, 1: SYNCED}  # every input read to its end
    return app, outputs


async def _deliver(agent: Any, topic: str, offset: int, key: bytes, value: bytes) -> Message:
    """Put a message as the consumer would (AgentTestWrapper.put names no topic for a
    multi-topic agent), then wait until the agent has taken it into its batch."""
    channel = agent.stream().channel
    message = Message(
        topic=topic, partition=0, offset=offset, timestamp=T0 / 1000 + offset,
        timestamp_type=0, headers=None, key=key, value=value, checksum=b"",
        serialized_key_size=len(key), serialized_value_size=len(value),
        generation_id=agent.app.consumer_generation_id,  # else dropped as stale
    )  # fmt: skip
    event = await channel.decode(message)
    batch = agent.app.recq_batch
    before = len(batch.events)
    await channel.put(event)
    async with asyncio.timeout(10):
        while len(batch.events) == before and not message.acked:  # noqa: ASYNC110
            await asyncio.sleep(0.005)
    return message


async def test_agent_turns_clicks_into_transitions_and_dead_letters_bad_input(
    app_and_outputs: tuple[faust.App, list[tuple[str, Any]]],
) -> None:
    app, outputs = app_and_outputs
    catalog = TopicCatalog(prefix=PREFIX, partitions=2)
    clicks = catalog.name(TopicRole.CLICKS)
    (agent,) = app.agents.values()
    async with agent.test_context() as ctx:
        messages = []
        for n, item in enumerate(["sku-a", "sku-b", "sku-c"]):
            click = ClickEvent(event_id=f"e{n}", user_id="u1", ts_ms=T0 + n * 1000, item_id=item)
            messages.append(await _deliver(ctx, clicks, n, b"u1", encode(click)))
        messages.append(await _deliver(ctx, clicks, 3, b"u1", b'{"type": "click", "user_id": 7'))
        # Nothing is written and nothing acked before the batch closes (streams/batch.py):
        # not the session (once per commit, streams/state.py), not the outputs.
        table = app.tables["sessions"]
        changelog = table.changelog_topic.get_topic_name()
        assert b"u1" not in table and outputs == []
        assert not any(m.acked for m in messages)
        await eos.flush_kept_state(app)  # what the commit does first
        assert all(m.acked for m in messages)
        session = UserSession.from_bytes(table[b"u1"])
        assert [h[0] for h in session.history] == [0, 1, 2]  # the Table holds the state
        written = [o for o in outputs if o[0] == changelog]
        assert [(k, v) for _, k, v in written] == [(b"u1", table[b"u1"])]  # once, the last
        # The changelog record goes first, then the batch's outputs (one order per commit).
        assert outputs[0][0] == changelog
    batches = [v for t, _, v in outputs if t == catalog.name(TopicRole.TRANSITIONS)]
    assert len(batches) == 1  # both transitions in one transition_batch message
    transitions = [orjson.loads(orjson.dumps(t.model_dump())) for t in
                   decode_transitions(batches[0], now_ms=T0)]  # type: ignore[union-attr]  # fmt: skip
    letters = [orjson.loads(v) for t, _, v in outputs if t == catalog.name(TopicRole.DEAD_LETTER)]
    assert [(x["action"], x["reward"], x["done"], x["state"]["items"]) for x in transitions] == [
        (0, 0.2, False, []),
        (1, 0.2, False, [0]),
    ]
    assert len(letters) == 1 and letters[0]["code"] == "malformed_json"
