"""100,000 bad messages through a running worker and a serving member (processes, the real
broker), interleaved with good events and requests:

- every bad message becomes exactly one dead letter with a reason, found by its topic,
  partition and offset (so none is skipped, none is letter-ed twice);
- no stage exits or restarts its agent;
- the good events produce exactly the transitions the rules give (a bad message that got
  through would add transitions of its own), and every good request is answered.

The bad messages: 4,000 JSON documents and byte strings drawn by hypothesis, and the rest
mutations of valid events and requests (truncation, a field of the wrong type, a missing
or unknown field, deep nesting, other encodings, invalid UTF-8, tombstones, a value not
an object, out-of-range values, a key that is not the event's user, oversize), from a
seeded generator. Every mutation is invalid by the contract's documented rules, so the
expectation (one letter each) does not come from the code under test."""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from recq.topics import ensure_topics
from schemas.codec import encode
from schemas.records import Recommendation, RecRequest
from schemas.topics import EVENT_ROLES, TopicCatalog, TopicRole
from tests.kafka_clients import kafka_options
from tests.reliability.load_harness import (
    Requests,
    exited,
    stage_envs,
    start_stages,
    stop_all,
    tails,
)
from tests.streams_harness import (
    LogRecord,
    actual_multiset,
    assert_same_transitions,
    expected_transitions,
    read_committed,
    scripted_log,
)

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.extended]

BAD = 100_000
DRAWN = 2_000  # of each: JSON documents and byte strings, from hypothesis
OVERSIZED = 20  # over RECQ_MAX_PAYLOAD_BYTES (256 KiB) each; a few suffice


def drawn_by_hypothesis() -> list[bytes]:
    """Arbitrary JSON documents and byte strings from hypothesis's generate phase
    (derandomised: the same every run)."""
    out: list[bytes] = []
    json_docs = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
        max_leaves=12,
    )

    @settings(max_examples=DRAWN, derandomize=True, database=None, phases=[Phase.generate],
              suppress_health_check=list(HealthCheck), deadline=None)  # fmt: skip
    @given(doc=json_docs, blob=st.binary(max_size=512))
    def collect(doc: object, blob: bytes) -> None:
        out.append(json.dumps(doc).encode())
        out.append(blob)

    collect()
    return out


def valid_click(rng: random.Random, n: int) -> dict[str, object]:
    return {"type": "click", "event_id": f"bad-{n}", "user_id": f"mallory-{n % 97}",
            "ts_ms": int(time.time() * 1000) - rng.randrange(600_000),
            "item_id": f"sku-{rng.randrange(60)}"}  # fmt: skip


def mutations() -> list[Callable[[dict[str, object], random.Random], tuple[bytes | None, bool]]]:
    """Each takes a valid event and returns (value, keyed by its user?): always invalid
    by the contract (docs/contract.md)."""

    def truncated(e: dict[str, object], rng: random.Random) -> tuple[bytes | None, bool]:
        raw = orjson.dumps(e)  # any proper prefix of a JSON object is not JSON
        return raw[: rng.randrange(1, len(raw))], True

    def wrong_type(e: dict[str, object], rng: random.Random) -> tuple[bytes | None, bool]:
        field, value = rng.choice([("ts_ms", "yesterday"), ("ts_ms", [1]), ("user_id", 7),
                                   ("item_id", {"id": 1}), ("event_id", None),
                                   ("type", 3)])  # fmt: skip
        return orjson.dumps({**e, field: value}), field != "user_id"

    def missing(e: dict[str, object], rng: random.Random) -> tuple[bytes | None, bool]:
        # Not `type`: on a topic of one event type it defaults to that type (the
        # contract: "the one of the topic it is on"), so a click without it is a click.
        field = rng.choice(["event_id", "ts_ms", "item_id"])
        return orjson.dumps({k: v for k, v in e.items() if k != field}), True

    def unknown_field(e: dict[str, object], rng: random.Random) -> tuple[bytes | None, bool]:
        return orjson.dumps({**e, f"x{rng.randrange(1000)}": 1}), True

    def deep(e: dict[str, object], rng: random.Random) -> tuple[bytes | None, bool]:
        depth = rng.randrange(200, 5000)  # past orjson's 1,024 levels, or a list item_id
        return orjson.dumps({**e, "item_id": None})[
            :-1
        ] + b', "nest": ' + b"[" * depth + b"]" * depth + b"}", True

    def other_encoding(e: dict[str, object], rng: random.Random) -> tuple[bytes | None, bool]:
        text = json.dumps(e)
        return text.encode(rng.choice(["utf-16", "utf-32"])), True

    def not_utf8(e: dict[str, object], rng: random.Random) -> tuple[bytes | None, bool]:
        raw = bytearray(orjson.dumps(e))
        raw[rng.randrange(len(raw))] = rng.choice([0xC0, 0xFF, 0xFE, 0x80])
        return bytes(raw), True

    def tombstone(e: dict[str, object], rng: random.Random) -> tuple[bytes | None, bool]:
        return None, True

    def not_object(e: dict[str, object], rng: random.Random) -> tuple[bytes | None, bool]:
        return rng.choice([b"[]", b"42", b'"click"', b"null", b"true", orjson.dumps([e])]), True

    def out_of_range(e: dict[str, object], rng: random.Random) -> tuple[bytes | None, bool]:
        far = int(time.time() * 1000) + 10 * 86_400_000  # beyond the clock-skew bound
        return orjson.dumps({**e, **rng.choice([{"ts_ms": -5}, {"ts_ms": far}, {"event_id": ""},
                                                {"item_id": "x" * 5000}])}), True  # fmt: skip

    def wrong_key(e: dict[str, object], rng: random.Random) -> tuple[bytes | None, bool]:
        return orjson.dumps(e), False  # valid, but keyed by another user

    return [truncated, wrong_type, missing, unknown_field, deep, other_encoding, not_utf8,
            tombstone, not_object, out_of_range, wrong_key]  # fmt: skip


def bad_messages(seed: int) -> list[tuple[bytes, bytes | None]]:
    """(key, value) pairs; keys are the (pretend) user ids."""
    rng = random.Random(seed)
    out: list[tuple[bytes, bytes | None]] = []
    for n, value in enumerate(drawn_by_hypothesis()):
        out.append((f"mallory-{n % 97}".encode(), value))
    oversized = orjson.dumps({**valid_click(rng, 0), "item_id": "x" * 300_000})
    out += [(b"mallory-0", oversized)] * OVERSIZED
    kinds = mutations()
    n = len(out)
    while len(out) < BAD:
        event = valid_click(rng, n)
        value, keyed = rng.choice(kinds)(event, rng)
        key = str(event["user_id"]) if keyed else f"eve-{n % 89}"
        out.append((key.encode(), value))
        n += 1
    rng.shuffle(out)
    return out


def bad_requests(seed: int, count: int) -> list[bytes | None]:
    rng = random.Random(seed)
    base = encode(RecRequest(request_id="bad", user_id="mallory", ts_ms=int(time.time() * 1000)))
    out: list[bytes | None] = []
    for n in range(count):
        body = orjson.loads(base)
        choice = n % 5
        if choice == 0:
            out.append(base[: rng.randrange(1, len(base))])
        elif choice == 1:
            out.append(orjson.dumps({**body, "k": rng.choice([0, -1, 10_000, "ten"])}))
        elif choice == 2:
            out.append(orjson.dumps({k: v for k, v in body.items() if k != "request_id"}))
        elif choice == 3:
            out.append(None)
        else:
            out.append(bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64))) + b"\xff")
    return out


@pytest.mark.timeout(1200)
async def test_100k_bad_messages_through_running_stages(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"x{unique}."
    catalog = TopicCatalog(prefix=prefix, partitions=4)
    options = kafka_options()
    await ensure_topics(catalog, bootstrap_servers=kafka_bootstrap, client_options=options)
    good = scripted_log(users=200, events_per_user=20, seed=61)
    expected = expected_transitions(good)
    bad = bad_messages(seed=62)
    requests_bad = bad_requests(seed=63, count=2_000)
    event_topics = [catalog.name(role) for role in EVENT_ROLES.values()]
    requests_topic = catalog.name(TopicRole.REC_REQUESTS)

    envs = stage_envs(kafka_bootstrap, prefix, tmp_path)
    stages = start_stages(envs, tmp_path, names=("worker", "serve"))  # the learner: no part
    requests = await Requests(kafka_bootstrap, catalog, rate=20).start()
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True,
                                linger_ms=20, **options)  # fmt: skip
    await producer.start()
    sent: Counter[tuple[str, int, int]] = Counter()  # where each bad message landed
    started = time.monotonic()
    try:
        good_iter = iter(good)
        pending = []
        for n, (key, value) in enumerate(bad):
            topic = event_topics[n % len(event_topics)]
            pending.append(await producer.send(topic, value, key=key))
            if n % 25 == 0:  # a good event every 25 bad ones, in the log's order
                record = next(good_iter, None)
                if record is not None:
                    await producer.send(topic_of(catalog, record), encode(record),
                                        key=record.user_id.encode())  # fmt: skip
            if n % 50 == 0 and n // 50 < len(requests_bad):
                pending.append(await producer.send(requests_topic, requests_bad[n // 50],
                                                   key=b"mallory"))  # fmt: skip
        for record in good_iter:
            await producer.send(topic_of(catalog, record), encode(record),
                                key=record.user_id.encode())  # fmt: skip
        await producer.flush()
        for meta in await asyncio.gather(*pending):
            sent[(meta.topic, meta.partition, meta.offset)] += 1
        produced_s = time.monotonic() - started

        letters = await read_letters(kafka_bootstrap, catalog, want=len(sent), timeout_s=600)
        got = await read_committed(kafka_bootstrap, catalog, want=sum(expected.values()),
                                   timeout_s=300, settle_s=10)  # fmt: skip
        await requests.stop_sending()
        unanswered = await requests.all_answered(120)
        gone = exited(stages)
        logs = tails(stages, 30)
        restarts = {n: s.log_path.read_text(errors="replace").count("Restarting")
                    for n, s in stages.items()}  # fmt: skip
    finally:
        stop_all(stages)
        await producer.stop()
        await requests.close()

    where = Counter((str(x["source_topic"]), int(x["source_partition"]), int(x["source_offset"]))
                    for x in letters)  # fmt: skip
    lettered_twice = [k for k, c in where.items() if c > 1]
    missing = [k for k in sent if k not in where]
    codes = Counter(str(x["code"]) for x in letters)
    actual = await actual_multiset(kafka_bootstrap, catalog, got.transitions)
    print(f"{len(sent)} bad messages produced in {produced_s:.0f} s; {len(letters)} dead "
          f"letters ({len(missing)} missing, {len(lettered_twice)} twice); codes {dict(codes)}; "
          f"good requests {len(requests.acked)}, {len(unanswered)} unanswered")  # fmt: skip
    assert not gone, f"stages exited: {gone}\n{logs}"
    assert not any(restarts.values()), f"agents restarted: {restarts}\n{logs}"
    assert not missing, f"{len(missing)} bad messages without a dead letter: {missing[:5]}"
    assert not lettered_twice, f"{len(lettered_twice)} dead-lettered twice: {lettered_twice[:5]}"
    assert all(x["reason"] for x in letters)
    assert_same_transitions(expected, actual, "bad input at volume; ", logs)
    assert not unanswered, f"{len(unanswered)} good requests never answered\n{logs}"


def topic_of(catalog: TopicCatalog, record: LogRecord) -> str:
    if isinstance(record, Recommendation):
        return catalog.name(TopicRole.RECOMMENDATIONS)
    return catalog.name(EVENT_ROLES[record.type])


async def read_letters(
    bootstrap: str, catalog: TopicCatalog, *, want: int, timeout_s: float
) -> list[dict[str, object]]:
    consumer = AIOKafkaConsumer(catalog.name(TopicRole.DEAD_LETTER), bootstrap_servers=bootstrap,
                                group_id=None, auto_offset_reset="earliest",
                                isolation_level="read_committed", **kafka_options())  # fmt: skip
    await consumer.start()
    out: list[dict[str, object]] = []
    deadline = time.monotonic() + timeout_s
    quiet_since = time.monotonic()
    try:
        while time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=10_000)
            if batches:
                quiet_since = time.monotonic()
            for messages in batches.values():
                out += [orjson.loads(m.value) for m in messages]
            if len(out) >= want and time.monotonic() - quiet_since >= 5:
                break
    finally:
        await consumer.stop()
    return out
