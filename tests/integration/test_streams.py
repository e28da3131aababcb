"""The streams worker on the real broker: a scripted log of many users in, exactly the
transitions the rules prescribe out (multiset equality), bad input dead-lettered."""

from __future__ import annotations

import base64
import hashlib
from pathlib import Path

import pytest

from recq.topics import ensure_topics
from schemas.codec import encode
from schemas.records import ClickEvent
from schemas.topics import TopicCatalog, TopicRole
from tests.kafka_clients import kafka_options
from tests.streams_harness import (
    WorkerProcess,
    actual_multiset,
    assert_same_transitions,
    expected_transitions,
    produce,
    read_committed,
    scripted_log,
    worker_env,
)

pytestmark = pytest.mark.integration


async def test_scripted_log_gives_exactly_the_expected_transitions(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    catalog = TopicCatalog(prefix=f"s{unique}.", partitions=4)
    await ensure_topics(catalog, bootstrap_servers=kafka_bootstrap, client_options=kafka_options())
    log = scripted_log(users=30, events_per_user=10, seed=7)
    expected = expected_transitions(log)
    stray = ClickEvent(event_id="stray", user_id="user-a", ts_ms=log[0].ts_ms, item_id="sku-1")
    # 900 KB: over RECQ_MAX_PAYLOAD_BYTES, under the broker's 1 MB. Its dead letter
    # once carried it whole (base64, ~1.2 MB), too large to produce: the agent crashed
    # and the message was lost without a trace.
    huge = b'{"type": "click", "pad": "' + b"x" * (900 * 1024) + b'"}'
    bad = [
        (catalog.name(TopicRole.CLICKS), b"user-h", huge),
        (catalog.name(TopicRole.CLICKS), b"user-x", b'{"type": "click", '),
        (catalog.name(TopicRole.CARTS), b"user-y", b'{"type": "cart", "event_id": "e"}'),
        (catalog.name(TopicRole.CLICKS), b"user-b", encode(stray)),  # keyed by someone else
    ]
    await produce(kafka_bootstrap, catalog, log, bad)

    # Faust's commit-liveness check after 5 s instead of 300 s: a healthy run must not
    # trip it (it did under exactly-once, for every partition: see streams/eos.py).
    env = worker_env(kafka_bootstrap, catalog.prefix, tmp_path, RECQ_STREAMS_COMMIT_LIVELOCK_S="5")
    worker = WorkerProcess(env, tmp_path / "w.log")
    worker.start()
    try:
        got = await read_committed(
            kafka_bootstrap, catalog, want=sum(expected.values()), timeout_s=150
        )
    finally:
        worker.stop()
    actual = await actual_multiset(kafka_bootstrap, catalog, got.transitions)
    assert_same_transitions(expected, actual, "", worker.log_tail())
    assert sorted(d["code"] for d in got.dead_letters) == [
        "invalid_value",
        "malformed_json",
        "missing_field",
        "oversized",
    ]
    assert all(d["original"] for d in got.dead_letters)
    (oversized,) = [d for d in got.dead_letters if d["code"] == "oversized"]
    assert oversized["original_truncated"] and oversized["original_bytes"] == len(huge)
    assert oversized["original_sha256"] == hashlib.sha256(huge).hexdigest()
    assert base64.b64decode(oversized["original"]) == huge[:4096]
    # An operator must be able to trust an ERROR line: a healthy run logs none.
    errors = [line for line in worker.log_path.read_text().splitlines() if "[ERROR]" in line]
    assert not errors, "\n".join(errors[:10])
