"""A restarted serving member rebuilds its shoppers from the lookback window of the event
topics before answering: the same requests (same decision time, greedy, same snapshot)
get the same slates from the restarted member as from the one before it; a shopper
whose events are all older than the window is answered from popularity."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from schemas.codec import encode
from schemas.records import CartEvent, ClickEvent, RecRequest
from schemas.settings import ServingSettings, load_settings
from schemas.topics import EVENT_ROLES, TopicRole
from tests.integration.test_serve import collect, serving
from tests.snapshot_fixture import ITEMS, WriteSnapshot

pytestmark = pytest.mark.integration

LOOKBACK_S = 3600
RECENT = [f"user-{u}" for u in range(12)]
STALE = ["stale-0", "stale-1"]  # every event two hours old: outside the window


async def test_a_restarted_member_answers_from_rebuilt_histories(
    kafka_bootstrap: str, unique: str, tmp_path: Path, snapshot_writer: WriteSnapshot
) -> None:
    store = tmp_path / "models"
    written = snapshot_writer(store)
    settings = load_settings(
        ServingSettings, bootstrap_servers=kafka_bootstrap, topic_prefix=f"rst{unique}.",
        partitions=3, data_dir=tmp_path, model_store=store, serve_group_id=f"serve-{unique}",
        exploration="greedy", serve_state_lookback_s=LOOKBACK_S,
    )  # fmt: skip
    now = int(time.time() * 1000)
    decided = now + 1_000  # every request's decision time: ages, hence slates, fixed

    async def ask(round_: str, producer: object, topic: str) -> dict[str, RecRequest]:
        sent = {}
        for user in RECENT + STALE:
            r = RecRequest(request_id=f"{round_}-{user}", user_id=user, k=5, ts_ms=decided)
            sent[r.request_id] = r
            await producer.send(topic, encode(r), key=user.encode())  # type: ignore[attr-defined]
        await producer.flush()  # type: ignore[attr-defined]
        return sent

    async with serving(settings, kafka_bootstrap) as (catalog, producer, recommendations):
        clicks, carts = catalog.name(EVENT_ROLES["click"]), catalog.name(EVENT_ROLES["cart"])
        for u, user in enumerate(RECENT + STALE):
            ts = now - 2 * 3600_000 if user in STALE else now - 60_000 + u
            for j in range(4):
                click = ClickEvent(event_id=f"{user}-c{j}", user_id=user, ts_ms=ts + j,
                                   item_id=ITEMS[(3 * u + j) % 30])  # fmt: skip
                await producer.send(clicks, encode(click), key=user.encode(), timestamp_ms=ts)
            cart = CartEvent(event_id=f"{user}-a", user_id=user, ts_ms=ts + 9,
                             item_id=ITEMS[(u + 30) % 40], action="add")  # fmt: skip
            await producer.send(carts, encode(cart), key=user.encode(), timestamp_ms=ts)
        requests_topic = catalog.name(TopicRole.REC_REQUESTS)
        before_ids = await ask("before", producer, requests_topic)
        before = {r.user_id: r for r in await collect(recommendations, set(before_ids), 60)}
    assert set(before) == set(RECENT + STALE)
    assert all(r.model_version == str(written.version) for r in before.values())

    # The same group, a new process: it resumes after everything above and must rebuild.
    async with serving(settings, kafka_bootstrap) as (catalog, producer, recommendations):
        after_ids = await ask("after", producer, catalog.name(TopicRole.REC_REQUESTS))
        got = await collect(recommendations, set(after_ids), 60)
        after = {r.user_id: r for r in got if r.request_id in after_ids}
    assert set(after) == set(RECENT + STALE)
    for user in RECENT:
        assert after[user].model_version == str(written.version), user
        shown_before = [i.item_id for i in before[user].items]
        assert [i.item_id for i in after[user].items] == shown_before, user
        # The rebuilt cart still filters: the carted item is never shown.
        u = RECENT.index(user)
        assert ITEMS[(u + 30) % 40] not in shown_before
    for user in STALE:
        assert after[user].model_version == "popularity", user
