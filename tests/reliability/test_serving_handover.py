"""Serving members (`recq serve` processes, one group) hand shoppers over with their
state. One member learns 200 shoppers' histories and answers a reference round; then,
under steady request load, a second member joins (scale-out: each takes half), the first
is killed with SIGKILL (the second takes everything), and the first is started again
(a restart: half moves back). Every request is answered (at least once), and every
answer, duplicates included, is the reference slate of its shopper: from the model, from
the shopper's full history (greedy exploration, one snapshot, one decision time, so
the slate is a function of the state alone)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from recq.processes import StageProcess, recq_command
from recq.topics import ensure_topics
from schemas.codec import decode, encode
from schemas.records import CartEvent, ClickEvent, Recommendation, RecRequest
from schemas.topics import EVENT_ROLES, TopicCatalog, TopicRole
from tests.integration.test_serve import collect
from tests.kafka_clients import kafka_options
from tests.reliability.test_serving_crash import member_env
from tests.snapshot_fixture import ITEMS, WriteSnapshot

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.extended]

USERS = [f"shopper-{u}" for u in range(200)]
RATE = 40  # requests per second
JOIN_AT_S, KILL_AT_S, RESTART_AT_S, LOAD_S = 5.0, 18.0, 30.0, 42.0


async def read_all(
    bootstrap: str, topic: str, want: set[str], timeout_s: float
) -> list[Recommendation]:
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", **kafka_options())  # fmt: skip
    await consumer.start()
    try:
        got = await collect(consumer, want, timeout_s)
        await asyncio.sleep(2.0)  # late duplicates too
        for messages in (await consumer.getmany(timeout_ms=1000)).values():
            got.extend(r for m in messages if isinstance(r := decode(m.value, Recommendation),
                                                          Recommendation))  # fmt: skip
    finally:
        await consumer.stop()
    return got


async def test_handover_keeps_every_shoppers_history(
    kafka_bootstrap: str, unique: str, tmp_path: Path, snapshot_writer: WriteSnapshot
) -> None:
    prefix = f"sh{unique}."
    catalog = TopicCatalog(prefix=prefix, partitions=4)
    await ensure_topics(catalog, bootstrap_servers=kafka_bootstrap, client_options=kafka_options())
    written = snapshot_writer(tmp_path / "models")
    requests_topic = catalog.name(TopicRole.REC_REQUESTS)
    out_topic = catalog.name(TopicRole.RECOMMENDATIONS)

    def member(name: str) -> StageProcess:
        env = member_env(kafka_bootstrap, prefix, tmp_path, name)
        env["RECQ_EXPLORATION"] = "greedy"
        return StageProcess(env, tmp_path / f"{name}-{time.monotonic_ns()}.log",
                            recq_command("serve")).start()  # fmt: skip

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", **kafka_options())
    await producer.start()
    now = int(time.time() * 1000)
    decided = now + 1_000
    members: dict[str, StageProcess] = {}
    sent: dict[str, str] = {}  # request id -> user

    async def ask(request_id: str, user: str) -> None:
        r = RecRequest(request_id=request_id, user_id=user, k=5, ts_ms=decided)
        await producer.send(requests_topic, encode(r), key=user.encode())
        sent[request_id] = user

    try:
        clicks, carts = catalog.name(EVENT_ROLES["click"]), catalog.name(EVENT_ROLES["cart"])
        for u, user in enumerate(USERS):
            for j in range(3):
                click = ClickEvent(event_id=f"{user}-c{j}", user_id=user, ts_ms=now - 60_000 + j,
                                   item_id=ITEMS[(7 * u + j) % 40])  # fmt: skip
                await producer.send(clicks, encode(click), key=user.encode())
            cart = CartEvent(event_id=f"{user}-a", user_id=user, ts_ms=now - 50_000,
                             item_id=ITEMS[(u + 11) % 40], action="add")  # fmt: skip
            await producer.send(carts, encode(cart), key=user.encode())
        members["a"] = member("a")
        for user in USERS:
            await ask(f"ref-{user}", user)
        await producer.flush()
        reference = {
            r.user_id: [i.item_id for i in r.items]
            for r in await read_all(kafka_bootstrap, out_topic, {f"ref-{u}" for u in USERS}, 120)
            if r.request_id.startswith("ref-") and r.model_version == str(written.version)
        }
        assert set(reference) == set(USERS), members["a"].log_tail()

        start, i = time.monotonic(), 0
        while (elapsed := time.monotonic() - start) < LOAD_S:
            if elapsed >= JOIN_AT_S and "b" not in members:
                members["b"] = member("b")
            if elapsed >= KILL_AT_S and "a-killed" not in members:
                members["a"].kill()
                members["a-killed"] = members.pop("a")
            if elapsed >= RESTART_AT_S and "a" not in members:
                members["a"] = member("a")
            while i < elapsed * RATE:
                await ask(f"load-{i}", USERS[(37 * i) % len(USERS)])
                i += 1
            await asyncio.sleep(0.02)
        await producer.flush()
        load = {rid for rid in sent if rid.startswith("load-")}
        answers = await read_all(kafka_bootstrap, out_topic, load, 120)
    finally:
        await producer.stop()
        for process in members.values():
            process.stop()
    logs = "\n".join(p.log_tail(20) for p in members.values())
    answered = [r for r in answers if r.request_id in load]
    missing = load - {r.request_id for r in answered}
    twice = len(answered) - len({r.request_id for r in answered})
    wrong = [r for r in answered if r.model_version != str(written.version)
             or [x.item_id for x in r.items] != reference[sent[r.request_id]]]  # fmt: skip
    print(f"{len(load)} requests, {len(missing)} unanswered, {twice} answered twice, "
          f"{len(wrong)} not from the shopper's history")  # fmt: skip
    assert not missing, f"{len(missing)} unanswered (first {sorted(missing)[:5]})\n{logs}"
    assert not wrong, f"{len(wrong)} answers differ from the reference: {wrong[:3]}\n{logs}"
    assert len(load) >= 0.9 * RATE * LOAD_S
    # The members moved shoppers both ways: some dropped, some rebuilt from events.
    log_text = "".join(p.log_path.read_text() for p in [*members.values()])
    dropped = [int(n) for n in re.findall(r"dropped (\d+) shoppers", log_text)]
    rebuilt = [int(n) for n in re.findall(r"from (\d+) events", log_text)]
    assert max(dropped, default=0) > 0 and max(rebuilt, default=0) > 0, logs
