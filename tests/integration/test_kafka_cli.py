"""`recq kafka start|status|stop` as a user runs them: the console script, in a shell
environment, against a broker it launches itself."""

from __future__ import annotations

import socket
import subprocess
import sys
from pathlib import Path

import orjson
import pytest

from recq.embedded_kafka import answers_metadata, broker_process_alive
from schemas.settings import stage_env

pytestmark = pytest.mark.integration

RECQ = str(Path(sys.executable).with_name("recq"))


def recq(*args: str, data_dir: Path, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**stage_env(RECQ_DATA_DIR=data_dir, **env), "COLUMNS": "200"}
    return subprocess.run(
        [RECQ, "kafka", *args], env=environ, capture_output=True, text=True, timeout=180,
        check=False,
    )  # fmt: skip


def test_start_status_stop(tmp_path: Path) -> None:
    status = recq("status", data_dir=tmp_path)
    assert status.returncode == 1
    assert "not running" in status.stdout

    started = recq("start", data_dir=tmp_path)
    try:
        assert started.returncode == 0, started.stdout + started.stderr
        state = orjson.loads((tmp_path / "kafka" / "broker.json").read_bytes())
        assert f"running at {state['bootstrap_servers']}" in started.stdout
        assert answers_metadata(state["bootstrap_servers"])

        again = recq("start", data_dir=tmp_path)
        assert again.returncode == 0
        assert f"already running at {state['bootstrap_servers']}" in again.stdout

        status = recq("status", data_dir=tmp_path)
        assert status.returncode == 0
        assert "answering" in status.stdout
        assert (tmp_path / "kafka" / "kafka.log").stat().st_size > 0
    finally:
        stopped = recq("stop", data_dir=tmp_path)
    assert stopped.returncode == 0
    assert "Kafka stopped" in stopped.stdout
    assert not broker_process_alive(state["pid"])  # exited (perhaps not yet reaped by init)
    assert not answers_metadata(state["bootstrap_servers"])
    assert "was not running" in recq("stop", data_dir=tmp_path).stdout


def test_taken_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = recq("start", "--port", str(port), data_dir=tmp_path)
    assert result.returncode == 2
    assert f"port {port} is already in use" in result.stderr
    assert not (tmp_path / "kafka" / "broker.json").exists()


def test_broker_that_dies_shows_its_log(tmp_path: Path) -> None:
    # A heap far too small for the broker: the JVM starts, Kafka dies during startup.
    result = recq("start", data_dir=tmp_path, RECQ_KAFKA_HEAP="-Xms2m -Xmx2m")
    assert result.returncode == 2
    assert "exited with code" in result.stderr
    assert "Last lines of" in result.stderr
    assert not (tmp_path / "kafka" / "broker.json").exists()
