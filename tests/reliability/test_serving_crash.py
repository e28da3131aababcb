"""Two serving members (`recq serve`, processes, one consumer group) under steady request
load; one is killed with SIGKILL. The other takes over its partitions after the group's
session timeout and answers what the dead one had read but not committed: every request
is answered (at least once; the duplicates are counted and reported)."""

from __future__ import annotations

import asyncio
import contextlib
import time
from pathlib import Path

import pytest

from recq.processes import StageProcess, recq_command
from recq.topics import ensure_topics
from schemas.codec import encode
from schemas.records import RecRequest
from schemas.settings import stage_env
from schemas.topics import TopicCatalog, TopicRole
from simulator.client import ShopClient
from tests.kafka_clients import kafka_options

pytestmark = [pytest.mark.integration, pytest.mark.reliability]

PARTITIONS = 4
RATE = 40  # requests per second
LOAD_S = 30.0
KILL_AT_S = 10.0
SESSION_TIMEOUT_S = 6


def member_env(bootstrap: str, prefix: str, root: Path, name: str) -> dict[str, str]:
    env = stage_env(
        RECQ_BOOTSTRAP_SERVERS=bootstrap, RECQ_TOPIC_PREFIX=prefix,
        RECQ_PARTITIONS=PARTITIONS, RECQ_DATA_DIR=root / name,
        RECQ_MODEL_STORE=root / "models", RECQ_SERVE_GROUP_ID=f"{prefix}serve",
        RECQ_BROKER_SESSION_TIMEOUT_S=SESSION_TIMEOUT_S, RECQ_SERVE_THREADS=1,
    )  # fmt: skip
    env["PYTHONUNBUFFERED"] = "1"
    return env


def request(i: int) -> RecRequest:
    return RecRequest(request_id=f"req-{i}", user_id=f"user-{i % 400}",
                      ts_ms=int(time.time() * 1000), k=5)  # fmt: skip


async def test_a_killed_serving_member_leaves_no_request_unanswered(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"sk{unique}."
    catalog = TopicCatalog(prefix=prefix, partitions=PARTITIONS)
    await ensure_topics(catalog, bootstrap_servers=kafka_bootstrap, client_options=kafka_options())
    requests_topic = catalog.name(TopicRole.REC_REQUESTS)
    members = {
        name: StageProcess(member_env(kafka_bootstrap, prefix, tmp_path, name),
                           tmp_path / f"{name}.log", recq_command("serve")).start()
        for name in ("a", "b")
    }  # fmt: skip
    shop = ShopClient(kafka_bootstrap, catalog, kafka_options(), from_earliest=True,
                      count_answers=True)  # fmt: skip
    producer, answers = shop.producer, shop.answers
    sent: list[str] = []
    try:
        await shop.__aenter__()
        # Both members up and answering: probes until one is answered, then time for
        # the group to settle with both (a join is a rebalance).
        deadline = time.monotonic() + 120
        while not answers.count and time.monotonic() < deadline:
            probe = RecRequest(request_id=f"probe-{len(sent)}", user_id="probe",
                               ts_ms=int(time.time() * 1000), k=5)  # fmt: skip
            await producer.send_and_wait(requests_topic, encode(probe), key=b"probe")
            await asyncio.sleep(1.0)
        assert answers.count, "\n".join(m.log_tail() for m in members.values())
        await asyncio.sleep(2 * SESSION_TIMEOUT_S)

        start = time.monotonic()
        killed_at: float | None = None
        i = 0
        while (elapsed := time.monotonic() - start) < LOAD_S:
            if killed_at is None and elapsed >= KILL_AT_S:
                members["a"].kill()
                killed_at = elapsed
            while i < elapsed * RATE:
                r = request(i)
                await producer.send(requests_topic, encode(r), key=r.user_id.encode())
                sent.append(r.request_id)
                i += 1
            await asyncio.sleep(0.02)
        await producer.flush()

        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(answers.all_of(set(sent)), 90)
    finally:
        for member in members.values():
            member.stop()
        await shop.__aexit__(None, None, None)

    missing = [r for r in sent if r not in answers.count]
    twice = sum(1 for r in sent if answers.count[r] > 1)
    print(f"{len(sent)} requests, {len(missing)} unanswered, {twice} answered twice")
    assert not missing, (
        f"{len(missing)} of {len(sent)} requests never answered (first {missing[:10]}); "
        f"{twice} answered twice\n{members['b'].log_tail()}"
    )
    assert len(sent) >= 0.9 * RATE * LOAD_S
    assert answers.invalid == 0  # every answer decodes as a recommendation
