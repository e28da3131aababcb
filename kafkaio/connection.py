"""How every recq process reaches Kafka: the bootstrap address (an external cluster from
``RECQ_BOOTSTRAP_SERVERS``, else the embedded broker's state file) and the aiokafka client
options for the configured security protocol."""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
from pathlib import Path
from typing import Any

import orjson
from aiokafka import errors as kafka_errors
from aiokafka.conn import create_conn
from aiokafka.protocol.metadata import MetadataRequest

from schemas.settings import ConnectionSettings, StageSettings

BROKER_STATE_FILE = "broker.json"

log = logging.getLogger("recq.connection")


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


class BrokerRefused(RuntimeError):
    """The broker answered but refused this client: wrong protocol, an untrusted
    certificate, bad credentials. Retrying cannot help, so a stage fails at start with a
    message naming the setting to fix."""


#: How long the start-up check waits for a broker that does not answer at all.
PREFLIGHT_TIMEOUT_S = 10.0


async def check_broker(
    settings: ConnectionSettings, bootstrap: str, *, timeout_s: float = PREFLIGHT_TIMEOUT_S
) -> None:
    """Connect once as the stage's clients will, before any of them starts, and raise
    ``BrokerRefused`` (naming the ``RECQ_*`` setting) when the broker refuses this client.

    Without it a wrong password or an untrusted CA shows up as Kafka clients retrying
    forever ("Unable to bootstrap"), or, in a Faust worker, as a crash loop. A broker that
    does not answer at all (not started yet, restarting) is not an error here: the clients
    wait for it as they always do."""
    opts = client_options(settings)
    protocol = settings.security_protocol
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    conn = None
    try:
        conn = await asyncio.wait_for(
            create_conn(host, int(port), request_timeout_ms=int(timeout_s * 1000), **opts),
            timeout_s,
        )
        # A request that needs authentication: a SASL listener answers ApiVersions (sent
        # while connecting) before any handshake, and refuses a client that skipped it only
        # here.
        await asyncio.wait_for(conn.send(MetadataRequest([])), timeout_s)
    except ssl.SSLCertVerificationError as exc:
        raise BrokerRefused(
            f"the broker at {bootstrap} presented a certificate this client does not trust "
            f"({exc.verify_message}): set RECQ_SSL_CAFILE to the CA that signed it "
            f"(now {settings.ssl_cafile or 'unset: the system trust store'})"
        ) from None
    except ssl.SSLError as exc:
        raise BrokerRefused(
            f"TLS with the broker at {bootstrap} failed ({exc.reason or exc}): does its "
            f"listener speak TLS? RECQ_SECURITY_PROTOCOL={protocol}"
        ) from None
    except kafka_errors.SaslAuthenticationFailed:
        raise BrokerRefused(
            f"the broker at {bootstrap} refused user {settings.sasl_username!r} "
            f"({settings.sasl_mechanism}): check RECQ_SASL_USERNAME and RECQ_SASL_PASSWORD"
        ) from None
    except kafka_errors.UnsupportedSaslMechanismError:
        raise BrokerRefused(
            f"the broker at {bootstrap} does not offer SASL mechanism "
            f"RECQ_SASL_MECHANISM={settings.sasl_mechanism}"
        ) from None
    except (
        TimeoutError,
        ConnectionError,
        kafka_errors.KafkaConnectionError,
        kafka_errors.IllegalSaslStateError,
    ) as exc:
        if conn is None and not accepts_connections(bootstrap):
            log.warning("no broker answers at %s yet; the clients will keep trying", bootstrap)
            return
        raise BrokerRefused(
            f"the broker at {bootstrap} accepted a connection but dropped this client's "
            f"first request ({exc.__class__.__name__}): it expects another security "
            f"protocol than RECQ_SECURITY_PROTOCOL={protocol}"
            + (
                " (a SASL_SSL broker, e.g. `recq kafka start --secure`, needs "
                "RECQ_SECURITY_PROTOCOL=SASL_SSL and its client.env settings)"
                if protocol == "PLAINTEXT"
                else ""
            )
        ) from None
    finally:
        if conn is not None:
            conn.close()


def checked_bootstrap(settings: StageSettings) -> str:
    """The bootstrap address (``resolve_bootstrap``), after ``check_broker`` found that
    the broker accepts this client. For start-up code outside an event loop."""
    bootstrap = resolve_bootstrap(settings)
    try:
        asyncio.run(check_broker(settings, bootstrap))
    except BrokerRefused as exc:
        env_file = None if settings.bootstrap_servers else _embedded_client_env(settings)
        if env_file is None:
            raise
        raise BrokerRefused(f"{exc}. The embedded broker's client settings are in "
                            f"{env_file}: set -a; . {env_file}; set +a") from None  # fmt: skip
    return bootstrap


def _embedded_client_env(settings: StageSettings) -> str | None:
    try:
        state = orjson.loads(embedded_state_path(settings).read_bytes())
    except (OSError, ValueError):
        return None
    env_file = state.get("client_env_file")
    return str(env_file) if env_file else None


def accepts_connections(bootstrap: str, timeout_s: float = 2.0) -> bool:
    """Whether the first ``host:port`` of ``bootstrap`` accepts a TCP connection."""
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=timeout_s):
            return True
    except OSError:
        return False


def jaas_config(mechanism: str | None, username: str | None, password: str) -> str:
    """A Java client's (or the broker's) ``sasl.jaas.config`` line for these credentials."""
    module = "plain.PlainLoginModule" if mechanism == "PLAIN" else "scram.ScramLoginModule"
    return (
        f"org.apache.kafka.common.security.{module} required "
        f'username="{username}" password="{password}";'
    )


def java_client_properties(settings: ConnectionSettings) -> str:
    """The same connection for Kafka's own Java tools (console producer and consumer,
    kafka-topics): a ``--command-config`` / ``--producer.config`` file. It holds the
    password in clear: write it private (mode 0600)."""
    lines = [f"security.protocol={settings.security_protocol}"]
    if settings.security_protocol.startswith("SASL_"):
        password = settings.sasl_password.get_secret_value() if settings.sasl_password else ""
        jaas = jaas_config(settings.sasl_mechanism, settings.sasl_username, password)
        lines += [f"sasl.mechanism={settings.sasl_mechanism}", f"sasl.jaas.config={jaas}"]
    if settings.security_protocol in ("SSL", "SASL_SSL") and settings.ssl_cafile:
        lines += ["ssl.truststore.type=PEM", f"ssl.truststore.location={settings.ssl_cafile}"]
    return "".join(line + "\n" for line in lines)


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
