"""Create the catalog's topics on a cluster: idempotent, and refusing to go on when an
existing co-partitioned topic has a different partition count (keys would land on
different partitions and a worker would miss part of a shopper's events)."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from typing import Any, Literal

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from recq.errors import RecqError
from schemas.topics import TopicCatalog, TopicSpec

READY_TIMEOUT_S = 30.0


class CoPartitioningError(RecqError):
    """An existing topic would break co-partitioning by user_id."""


@dataclass(frozen=True, slots=True)
class TopicOutcome:
    name: str
    partitions: int
    status: Literal["created", "exists"]


async def existing_partitions(
    admin: AIOKafkaAdminClient, names: list[str], *, with_leaders: bool = False
) -> dict[str, int]:
    """Partition counts of those ``names`` that exist (and, if asked, have a leader on
    every partition)."""
    present = set(await admin.list_topics()) & set(names)
    if not present:
        return {}
    described: list[dict[str, Any]] = await admin.describe_topics(sorted(present))
    return {
        d["topic"]: len(d["partitions"])
        for d in described
        if d["error_code"] == 0
        and (not with_leaders or all(p["leader"] >= 0 for p in d["partitions"]))
    }


async def _wait_until_served(admin: AIOKafkaAdminClient, names: set[str]) -> None:
    """CreateTopics returns once the controller committed; wait until the brokers serve
    every partition, so the first produce does not meet NotLeaderForPartition."""
    deadline = time.monotonic() + READY_TIMEOUT_S
    while time.monotonic() < deadline:
        if set(await existing_partitions(admin, sorted(names), with_leaders=True)) >= names:
            return
        await asyncio.sleep(0.1)
    raise RecqError(
        f"topics {sorted(names)} were created but have no leader after "
        f"{READY_TIMEOUT_S:.0f} s: check the brokers' logs"
    )


def check_co_partitioning(catalog: TopicCatalog, existing: dict[str, int]) -> None:
    """Raise ``CoPartitioningError`` if an existing co-partitioned topic disagrees."""
    wrong = [
        (spec.name, existing[spec.name])
        for spec in catalog.co_partitioned()
        if spec.name in existing and existing[spec.name] != catalog.partitions
    ]
    if wrong:
        found = ", ".join(f"{name} has {count}" for name, count in wrong)
        raise CoPartitioningError(
            f"co-partitioning by user_id would break: {found} partition(s), but the event "
            f"and request topics must all have RECQ_PARTITIONS={catalog.partitions}. "
            "Set RECQ_PARTITIONS to the existing count, or use a new RECQ_TOPIC_PREFIX; "
            "Kafka cannot shrink a topic, and growing one remaps keys to other partitions."
        )


async def ensure_topics(
    catalog: TopicCatalog,
    *,
    bootstrap_servers: str,
    replication_factor: int = 1,
    client_options: dict[str, Any] | None = None,
) -> list[TopicOutcome]:
    """Create the missing topics of ``catalog``; report each as created or found."""
    specs = catalog.specs()
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, **(client_options or {}))
    await admin.start()
    try:
        existing = await existing_partitions(admin, [spec.name for spec in specs])
        check_co_partitioning(catalog, existing)
        missing = [spec for spec in specs if spec.name not in existing]
        created: set[str] = set()
        if missing:
            response = await admin.create_topics(
                [_new_topic(spec, replication_factor) for spec in missing]
            )
            for entry in response.to_object()["topic_errors"]:
                if entry["error_code"] == 0:
                    created.add(entry["topic"])
                elif entry["error_code"] != TopicAlreadyExistsError.errno:
                    # Racing creators are fine (re-checked below); anything else is not.
                    raise RecqError(
                        f"creating topic {entry['topic']} failed: {entry['error_message']} "
                        f"(Kafka error {entry['error_code']})"
                    )
            await _wait_until_served(admin, created)
            existing = await existing_partitions(admin, [spec.name for spec in specs])
            check_co_partitioning(catalog, existing)
    finally:
        await admin.close()
    return [
        TopicOutcome(
            spec.name,
            existing.get(spec.name, spec.partitions),
            "created" if spec.name in created else "exists",
        )
        for spec in specs
    ]


def _new_topic(spec: TopicSpec, replication_factor: int) -> NewTopic:
    return NewTopic(
        name=spec.name,
        num_partitions=spec.partitions,
        replication_factor=replication_factor,
        topic_configs=spec.config(),
    )
