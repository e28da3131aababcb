"""Client options for the tests' own Kafka clients: empty for the plaintext session
broker, TLS and SCRAM under ``RECQ_TEST_SECURE=1`` (tests/conftest.py puts the broker's
client settings into the environment)."""

from __future__ import annotations

from typing import Any

from kafkaio.connection import client_options
from schemas.settings import ConnectionSettings


def kafka_options() -> dict[str, Any]:
    return client_options(ConnectionSettings())
