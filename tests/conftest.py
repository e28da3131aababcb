"""Shared fixtures: one real Kafka broker for the whole session (the embedded one on a
free port in a temp dir, or the cluster named by RECQ_BOOTSTRAP_SERVERS)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from recq.embedded_kafka import EmbeddedKafka
from recq.errors import RecqError
from schemas.settings import StageSettings


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("RECQ_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    broker = EmbeddedKafka(tmp_path_factory.mktemp("kafka"), cache_dir=StageSettings().cache_dir)
    try:
        state = broker.start()
    except RecqError as exc:  # the message carries the broker log's tail
        pytest.fail(f"embedded Kafka did not start:\n{exc}", pytrace=False)
    try:
        yield state.bootstrap_servers
    finally:
        broker.stop()


@pytest.fixture
def unique() -> str:
    """A fresh token for topic prefixes and group ids, so tests never share state."""
    return uuid.uuid4().hex[:10]


# Snapshots written through the learner's export code, for the serving tests.
from tests.snapshot_fixture import snapshot_writer  # noqa: E402, F401
