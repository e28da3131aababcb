from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

from recq.topics import CoPartitioningError, ensure_topics, existing_partitions
from schemas.topics import TopicCatalog, TopicRole
from tests.kafka_clients import kafka_options

pytestmark = pytest.mark.integration


async def test_create_is_idempotent(kafka_bootstrap: str, unique: str) -> None:
    catalog = TopicCatalog(prefix=f"i{unique}.", partitions=3)
    first = await ensure_topics(
        catalog, bootstrap_servers=kafka_bootstrap, client_options=kafka_options()
    )
    assert {o.status for o in first} == {"created"}
    assert {o.name: o.partitions for o in first} == {s.name: s.partitions for s in catalog.specs()}

    second = await ensure_topics(
        catalog, bootstrap_servers=kafka_bootstrap, client_options=kafka_options()
    )
    assert {o.status for o in second} == {"exists"}
    assert [(o.name, o.partitions) for o in second] == [(o.name, o.partitions) for o in first]


async def test_topic_configs_are_applied(kafka_bootstrap: str, unique: str) -> None:
    catalog = TopicCatalog(prefix=f"c{unique}.", partitions=2)
    await ensure_topics(catalog, bootstrap_servers=kafka_bootstrap, client_options=kafka_options())
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, **kafka_options())
    await admin.start()
    try:
        name = catalog.name(TopicRole.ITEM_VOCABULARY)
        config: dict[str, str] = {}
        for _ in range(50):  # topic configs reach the broker shortly after creation
            [response] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, name)]
            )
            entries = response.to_object()["resources"][0]["config_entries"]
            config = {e["config_names"]: e["config_value"] for e in entries}
            if config.get("retention.ms") == "-1":
                break
            await asyncio.sleep(0.1)
        assert config["cleanup.policy"] == "delete"
        assert config["retention.ms"] == "-1"
    finally:
        await admin.close()


async def test_co_partitioning_violation_is_refused(kafka_bootstrap: str, unique: str) -> None:
    catalog = TopicCatalog(prefix=f"v{unique}.", partitions=4)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, **kafka_options())
    await admin.start()
    try:
        await admin.create_topics([NewTopic(catalog.name(TopicRole.CARTS), 2, 1)])
        for _ in range(100):  # the broker serves a new topic shortly after creation
            if await existing_partitions(admin, [catalog.name(TopicRole.CARTS)], with_leaders=True):
                break
            await asyncio.sleep(0.1)
    finally:
        await admin.close()

    with pytest.raises(CoPartitioningError, match=rf"v{unique}\.events\.cart has 2"):
        await ensure_topics(
            catalog, bootstrap_servers=kafka_bootstrap, client_options=kafka_options()
        )

    # Refused before creating anything: no half-made catalog is left behind.
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap, **kafka_options())
    await admin.start()
    try:
        ours = [t for t in await admin.list_topics() if t.startswith(f"v{unique}.")]
    finally:
        await admin.close()
    assert ours == [catalog.name(TopicRole.CARTS)]
