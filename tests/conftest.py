"""Shared fixtures: one real Kafka broker for the whole session (the embedded one on a
free port in a temp dir, or the cluster named by RECQ_BOOTSTRAP_SERVERS).

``RECQ_TEST_SECURE=1`` starts that broker SASL_SSL-only (SCRAM-SHA-512, a CA made for the
run) and puts its client settings (``RECQ_SECURITY_PROTOCOL``, ``RECQ_SASL_*``,
``RECQ_SSL_CAFILE``) into the environment, where every stage and every subprocess a
test starts reads them (``stage_env`` keeps them)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from recq.embedded_kafka import EmbeddedKafka
from recq.errors import RecqError
from schemas.settings import StageSettings

SECURE_SWITCH = "RECQ_TEST_SECURE"


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("RECQ_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    secure = os.environ.get(SECURE_SWITCH) == "1"
    broker = EmbeddedKafka(
        tmp_path_factory.mktemp("kafka"), cache_dir=StageSettings().cache_dir, secure=secure
    )
    try:
        state = broker.start()
    except RecqError as exc:  # the message carries the broker log's tail
        pytest.fail(f"embedded Kafka did not start:\n{exc}", pytrace=False)
    client_env = broker.client_env(state.bootstrap_servers) if secure else {}
    client_env.pop("RECQ_BOOTSTRAP_SERVERS", None)  # tests pass the address themselves
    saved = {name: os.environ.get(name) for name in client_env}
    os.environ.update(client_env)
    try:
        yield state.bootstrap_servers
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        broker.stop()


@pytest.fixture
def unique() -> str:
    """A fresh token for topic prefixes and group ids, so tests never share state."""
    return uuid.uuid4().hex[:10]


# Snapshots written through the learner's export code, for the serving tests.
from tests.snapshot_fixture import snapshot_writer  # noqa: E402, F401
