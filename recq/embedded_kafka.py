"""A single-node Apache Kafka broker in KRaft mode (broker + controller in one JVM), run
detached from the pinned release in the cache. Used by the demo, the tests and
``recq kafka start|stop|status``.

Everything lives in one working directory: ``server.properties``, ``data/`` (the log
dirs), ``kafka.log`` (the broker's output) and ``broker.json`` (pid, ports, bootstrap
address), which other recq processes read to find the broker.

``secure=True`` (``recq kafka start --secure``) starts it with one client listener,
SASL_SSL with SCRAM-SHA-512: a CA and a broker certificate made for the directory
(``tls/``, see ``recq.tls``), SCRAM users created when the storage is formatted, and
``client.env``, the ``RECQ_*`` settings a client needs (mode 0600: it holds a password).
The controller listener stays PLAINTEXT on 127.0.0.1: it serves the broker in the same
JVM, and no recq client uses it.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import orjson
from aiokafka import AIOKafkaClient
from pydantic import SecretStr

from kafkaio.connection import (
    BROKER_STATE_FILE,
    accepts_connections,
    client_options,
    jaas_config,
    java_client_properties,
)
from recq import tls
from recq.errors import RecqError
from recq.kafka_dist import LOG4J_CONFIG, KafkaDistribution, find_java
from schemas.settings import ConnectionSettings, StageSettings

SCRAM_MECHANISM = "SCRAM-SHA-512"

DEFAULT_HEAP: str = StageSettings.model_fields["kafka_heap"].default
START_TIMEOUT_S = 90.0
STOP_TIMEOUT_S = 30.0
LOG_TAIL_LINES = 40


@dataclass(frozen=True, slots=True)
class BrokerState:
    """What ``broker.json`` records about a started broker."""

    pid: int
    port: int
    controller_port: int
    bootstrap_servers: str
    log_file: str
    kafka_version: str
    started_at: float
    security_protocol: str = "PLAINTEXT"
    #: ``client.env`` of a secured broker: the settings its clients need.
    client_env_file: str | None = None


def free_port() -> int:
    """A port the kernel says is free now (bind to 0); the broker binds it right after."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


def answers_metadata(
    bootstrap: str, timeout_s: float = 2.0, client_options: dict[str, Any] | None = None
) -> bool:
    """True when a broker at ``bootstrap`` answers a metadata request."""
    if not accepts_connections(bootstrap, timeout_s=0.5):
        return False  # checked first: aiokafka logs every refused connection

    async def probe() -> bool:
        client = AIOKafkaClient(
            bootstrap_servers=bootstrap, request_timeout_ms=int(timeout_s * 1000),
            **(client_options or {}),
        )  # fmt: skip
        try:
            await asyncio.wait_for(client.bootstrap(), timeout_s)
            return True
        except Exception:
            return False
        finally:
            await client.close()

    return asyncio.run(probe())


def broker_process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.exists():  # guard against a recycled pid
        try:
            text = cmdline.read_bytes()
        except OSError:
            return False
        if not text:  # a zombie: exited, not yet reaped
            return False
        return b"kafka.Kafka" in text
    return True


class EmbeddedKafka:
    """Start, probe and stop the broker that lives in ``workdir``.

    >>> broker = EmbeddedKafka(Path("/tmp/recq-kafka"), cache_dir=Path("~/.cache/recq"))
    >>> with broker:  # doctest: +SKIP
    ...     print(broker.bootstrap_servers)
    """

    def __init__(
        self,
        workdir: Path,
        *,
        cache_dir: Path,
        port: int | None = None,
        heap: str | None = None,
        start_timeout_s: float = START_TIMEOUT_S,
        secure: bool = False,
    ) -> None:
        self.workdir = workdir.expanduser().resolve()
        self.dist = KafkaDistribution.in_cache(cache_dir)
        self._requested_port = port
        self._heap = heap or os.environ.get("RECQ_KAFKA_HEAP", DEFAULT_HEAP)
        self._start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self.secure = secure
        self._credentials: tls.BrokerCredentials | None = None

    # --- paths ------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.workdir / BROKER_STATE_FILE

    @property
    def log_file(self) -> Path:
        return self.workdir / "kafka.log"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def client_env_file(self) -> Path:
        return self.workdir / "client.env"

    # --- security -----------------------------------------------------------------------
    def credentials(self) -> tls.BrokerCredentials:
        """The directory's CA, keystore and passwords (made on first use, read once)."""
        if self._credentials is None:
            self._credentials = tls.load_or_create(self.workdir / "tls")
        return self._credentials

    def _client_settings(self) -> ConnectionSettings:
        """How a client of this secured broker connects (the one place that says it)."""
        creds = self.credentials()
        return ConnectionSettings(
            security_protocol="SASL_SSL", sasl_mechanism=SCRAM_MECHANISM,
            sasl_username=tls.CLIENT_USER,
            sasl_password=SecretStr(creds.client_password), ssl_cafile=creds.ca_file,
        )  # fmt: skip

    def client_env(self, bootstrap_servers: str) -> dict[str, str]:
        """The ``RECQ_*`` settings a client of this secured broker needs."""
        settings = self._client_settings()
        env = {"RECQ_BOOTSTRAP_SERVERS": bootstrap_servers}
        for name in ("security_protocol", "sasl_mechanism", "sasl_username", "ssl_cafile"):
            env[f"RECQ_{name.upper()}"] = str(getattr(settings, name))
        password = settings.sasl_password
        env["RECQ_SASL_PASSWORD"] = password.get_secret_value() if password else ""
        return env

    def client_options(self) -> dict[str, Any]:
        """aiokafka options for this broker (none for a plaintext one)."""
        return client_options(self._client_settings()) if self.secure else {}

    # --- state ------------------------------------------------------------------------
    def state(self) -> BrokerState | None:
        """The recorded state if that broker process is still alive, else None."""
        try:
            state = BrokerState(**orjson.loads(self.state_file.read_bytes()))
        except (FileNotFoundError, ValueError, TypeError):
            return None
        if self._proc is not None and self._proc.poll() is not None:
            return None
        return state if broker_process_alive(state.pid) else None

    @property
    def bootstrap_servers(self) -> str:
        state = self.state()
        if state is None:
            raise RecqError(f"the embedded broker in {self.workdir} is not running")
        return state.bootstrap_servers

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except FileNotFoundError:
            return "(no broker log yet)"
        return "\n".join(text.splitlines()[-lines:])

    # --- lifecycle ----------------------------------------------------------------------
    def start(self) -> BrokerState:
        """Start the broker (or find it running) and return once it answers metadata."""
        running = self.state()
        if running is not None:
            return running
        java = find_java()
        self.dist.fetch()
        self.workdir.mkdir(parents=True, exist_ok=True)
        port, controller_port = self._choose_ports()
        properties = self._write_properties(port, controller_port)
        self._format_storage(java, properties)
        bootstrap = f"127.0.0.1:{port}"
        if self.secure:
            env = "".join(f"{k}={v}\n" for k, v in self.client_env(bootstrap).items())
            tls.write_private(self.client_env_file, env.encode())
            tools = java_client_properties(self._client_settings())  # for Kafka's own CLIs
            tls.write_private(self.workdir / "client.properties", tools.encode())

        log = self.log_file.open("ab")
        cmd = [
            java,
            *self._heap.split(),
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            "-cp",
            self.dist.classpath,
            "kafka.Kafka",
            str(properties),
        ]
        # A session of its own: the broker outlives `recq kafka start` and ignores the
        # terminal's Ctrl-C; `stop()` signals it explicitly.
        self._proc = subprocess.Popen(
            cmd, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=self.workdir,
        )  # fmt: skip
        log.close()
        state = BrokerState(
            pid=self._proc.pid,
            port=port,
            controller_port=controller_port,
            bootstrap_servers=bootstrap,
            log_file=str(self.log_file),
            kafka_version=self.dist.version,
            started_at=time.time(),
            security_protocol="SASL_SSL" if self.secure else "PLAINTEXT",
            client_env_file=str(self.client_env_file) if self.secure else None,
        )
        self._wait_ready(state)
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_bytes(orjson.dumps(asdict(state), option=orjson.OPT_INDENT_2))
        tmp.replace(self.state_file)
        return state

    def stop(self) -> bool:
        """Stop the broker gracefully (SIGTERM, then SIGKILL). Safe to call twice.
        Returns whether a running broker was stopped."""
        state = self.state()
        pid = state.pid if state else (self._proc.pid if self._proc else None)
        stopped = False
        if pid is not None and (state is not None or self._alive(pid)):
            self._signal(pid, signal.SIGTERM)
            if not self._wait_exit(pid, STOP_TIMEOUT_S):
                self._signal(pid, signal.SIGKILL)
                self._wait_exit(pid, 5.0)
            stopped = True
        self._proc = None
        self.state_file.unlink(missing_ok=True)
        return stopped

    def kill(self) -> None:
        """SIGKILL the broker, as a crash would."""
        state = self.state()
        if state is not None:
            self._signal(state.pid, signal.SIGKILL)
            self._wait_exit(state.pid, 5.0)

    def __enter__(self) -> EmbeddedKafka:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- internals ----------------------------------------------------------------------
    def _choose_ports(self) -> tuple[int, int]:
        if self._requested_port is not None:
            if port_in_use(self._requested_port):
                raise RecqError(
                    f"port {self._requested_port} is already in use: stop what holds it, "
                    "or start without --port to get a free one"
                )
            return self._requested_port, self._free_port_besides(self._requested_port)
        # A restart after a crash (kill -9) keeps the address its clients know, so they
        # reconnect by themselves; fresh ports only if those were taken meanwhile.
        previous = self._previous_ports()
        if previous is not None and not any(port_in_use(p) for p in previous):
            return previous
        port = free_port()
        return port, self._free_port_besides(port)

    def _previous_ports(self) -> tuple[int, int] | None:
        try:
            recorded = orjson.loads(self.state_file.read_bytes())
            return int(recorded["port"]), int(recorded["controller_port"])
        except (FileNotFoundError, ValueError, TypeError, KeyError):
            return None

    @staticmethod
    def _free_port_besides(port: int) -> int:
        controller = free_port()
        while controller == port:
            controller = free_port()
        return controller

    def _write_properties(self, port: int, controller_port: int) -> Path:
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}",
            "controller.listener.names": "CONTROLLER",
            "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.data_dir),
            # One node: every internal topic has a single replica.
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "10",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Topics come from the catalog with their partition counts, never by accident.
            "auto.create.topics.enable": "false",
            "num.partitions": "1",
        }
        if self.secure:
            props.update(self._secure_properties(port, controller_port))
        path = self.workdir / "server.properties"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)  # a JAAS password
        with os.fdopen(fd, "w") as fh:
            fh.write("".join(f"{key}={value}\n" for key, value in props.items()))
        return path

    def _secure_properties(self, port: int, controller_port: int) -> dict[str, str]:
        creds = self.credentials()
        jaas = jaas_config(SCRAM_MECHANISM, tls.BROKER_USER, creds.broker_password)
        return {
            "listeners": f"SASL_SSL://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
            "advertised.listeners": f"SASL_SSL://127.0.0.1:{port}",
            "listener.security.protocol.map": "SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name": "SASL_SSL",
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            "sasl.mechanism.inter.broker.protocol": SCRAM_MECHANISM,
            f"listener.name.sasl_ssl.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": jaas,
            "ssl.keystore.type": "PKCS12",
            "ssl.keystore.location": str(creds.keystore_file),
            "ssl.keystore.password": creds.keystore_password,
            "ssl.key.password": creds.keystore_password,
            "ssl.truststore.type": "PEM",
            "ssl.truststore.location": str(creds.ca_file),
        }

    def _format_storage(self, java: str, properties: Path) -> None:
        if (self.data_dir / "meta.properties").exists():
            return
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        cmd = [
            java,
            f"-Dlog4j2.configurationFile={LOG4J_CONFIG}",
            "-cp",
            self.dist.classpath,
            "kafka.tools.StorageTool",
            "format",
            # "=" form: a base64url id may start with "-", which argparse would take
            # for an option (1 start in 64 failed that way).
            f"--cluster-id={cluster_id}",
            "--config",
            str(properties),
        ]
        if self.secure:  # SCRAM users live in the cluster metadata: create them with it
            creds = self.credentials()
            for user, password in (
                (tls.BROKER_USER, creds.broker_password),
                (tls.CLIENT_USER, creds.client_password),
            ):
                cmd += ["--add-scram", f"{SCRAM_MECHANISM}=[name={user},password={password}]"]
        proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            output = proc.stdout + proc.stderr
            if self.secure:  # the tool may echo its --add-scram arguments
                creds = self.credentials()
                for secret in (creds.broker_password, creds.client_password):
                    output = output.replace(secret, "[hidden]")
            raise RecqError(
                f"formatting Kafka storage in {self.data_dir} failed:\n{output[-3000:]}"
            )

    def _wait_ready(self, state: BrokerState) -> None:
        deadline = time.monotonic() + self._start_timeout_s
        assert self._proc is not None
        options = self.client_options()  # an SSL context: made once, not per probe
        while time.monotonic() < deadline:
            code = self._proc.poll()
            if code is not None:
                raise RecqError(
                    f"the Kafka broker exited with code {code} while starting. "
                    f"Last lines of {self.log_file}:\n{self.log_tail()}"
                )
            if answers_metadata(state.bootstrap_servers, timeout_s=1.0, client_options=options):
                return
            time.sleep(0.2)
        self._signal(self._proc.pid, signal.SIGKILL)
        self._proc.wait()
        raise RecqError(
            f"the Kafka broker did not answer within {self._start_timeout_s:.0f} s. "
            f"Last lines of {self.log_file}:\n{self.log_tail()}"
        )

    def _alive(self, pid: int) -> bool:
        if self._proc is not None and self._proc.pid == pid:
            return self._proc.poll() is None
        return broker_process_alive(pid)

    def _wait_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self._alive(pid):
                return True
            time.sleep(0.1)
        return not self._alive(pid)

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, sig)
