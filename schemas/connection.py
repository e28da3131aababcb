"""How every recq process reaches Kafka: the bootstrap address (an external cluster from
``RECQ_BOOTSTRAP_SERVERS``, else the embedded broker's state file) and the aiokafka client
options for the configured security protocol."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import Any

import orjson

from schemas.settings import ConnectionSettings, StageSettings

BROKER_STATE_FILE = "broker.json"


class BrokerNotConfigured(RuntimeError):
    """No external cluster is configured and no embedded broker is running."""


def embedded_state_path(settings: StageSettings) -> Path:
    return settings.embedded_kafka_dir / BROKER_STATE_FILE


def resolve_bootstrap(settings: StageSettings) -> str:
    """``RECQ_BOOTSTRAP_SERVERS`` if set, else the running embedded broker's address."""
    if settings.bootstrap_servers:
        return settings.bootstrap_servers
    state_path = embedded_state_path(settings)
    try:
        state = orjson.loads(state_path.read_bytes())
    except FileNotFoundError:
        raise BrokerNotConfigured(
            f"no Kafka broker: nothing at {state_path}. Start the embedded one with "
            "`recq kafka start`, or set RECQ_BOOTSTRAP_SERVERS=host:port for a cluster."
        ) from None
    return str(state["bootstrap_servers"])


def client_options(settings: ConnectionSettings) -> dict[str, Any]:
    """Keyword arguments shared by aiokafka producers, consumers and admin clients."""
    opts: dict[str, Any] = {"security_protocol": settings.security_protocol}
    if settings.security_protocol in ("SSL", "SASL_SSL"):
        context = ssl.create_default_context(
            cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
        )
        if settings.ssl_certfile and settings.ssl_keyfile:
            context.load_cert_chain(
                str(settings.ssl_certfile),
                str(settings.ssl_keyfile),
                password=settings.ssl_key_password.get_secret_value()
                if settings.ssl_key_password
                else None,
            )
        opts["ssl_context"] = context
    if settings.security_protocol.startswith("SASL_"):
        opts["sasl_mechanism"] = settings.sasl_mechanism
        opts["sasl_plain_username"] = settings.sasl_username
        opts["sasl_plain_password"] = (
            settings.sasl_password.get_secret_value() if settings.sasl_password else None
        )
    return opts


class _RetriableAsWarning(logging.Filter):
    """aiokafka logs some retriable failures as ERRORs and then retries them by itself: a
    group coordinator lookup while a fresh broker creates __consumer_offsets, an offset
    fetch from a partition whose leader is not elected yet. An operator must be able to
    trust an ERROR line, so those become warnings; a failure that is not retriable stays
    an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args if isinstance(record.args, tuple) else ()
        retriable = any(getattr(arg, "retriable", False) is True for arg in args)
        if record.levelno == logging.ERROR and retriable:
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg = f"{record.msg} (retriable: retrying)"
        return True


def quiet_retriable_client_errors() -> None:
    """Install ``_RetriableAsWarning`` on the aiokafka loggers that log retriable failures
    as errors (idempotent)."""
    for name in ("aiokafka.consumer.group_coordinator", "aiokafka.consumer.fetcher"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _RetriableAsWarning) for f in logger.filters):
            logger.addFilter(_RetriableAsWarning())
