"""The compose stack's services, run as processes on the embedded broker: the commands
and environments of deploy/compose.yaml (with the image's ENV defaults), changed only
where one host is not a compose network (the broker's address, a metrics port and a
data directory per process, unique topic and group names) and where a test cannot wait
for the production cadence (warm-up and first snapshot sooner). The loop must run end to
end, every stage must pass its HEALTHCHECK command, and every metric the Grafana
dashboard queries must be exported by a running stage."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recq.embedded_kafka import free_port
from recq.processes import StageProcess
from recq.scrape import families, names, values
from tests.deploy.compose_spec import DEPLOY, Stack, local_env

pytestmark = pytest.mark.integration

RECQ = str(Path(sys.executable).with_name("recq"))
STAGES = ("worker", "learner", "serve", "shoppers")
ROLE = {"worker": "worker", "learner": "learner", "serve": "serve", "shoppers": "simulate"}


def scrape(port: int) -> dict[str, float]:
    """Every exported name (0: declared, no sample yet) and the sample sums."""
    found = families(port, timeout_s=3)
    return {**dict.fromkeys(names(found), 0.0), **values(found)}


def test_the_compose_services_run_the_loop_as_processes(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    stack = Stack.load()
    ports = {name: free_port() for name in STAGES}

    def env_of(name: str) -> dict[str, str]:
        return local_env(stack, name, bootstrap=kafka_bootstrap, unique=unique, root=tmp_path,
                         metrics_port=ports.get(name, 0))  # fmt: skip

    topics = subprocess.run([RECQ, *stack.services["topics"]["command"]], env=env_of("topics"),
                            capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert topics.returncode == 0, topics.stdout + topics.stderr
    processes = {
        name: StageProcess(env_of(name), tmp_path / f"{name}.log",
                           [RECQ, *stack.services[name]["command"]]).start()
        for name in STAGES
    }  # fmt: skip
    scraped: dict[str, dict[str, float]] = {}
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            time.sleep(3)
            for name, process in processes.items():
                assert process.proc is not None and process.proc.poll() is None, (
                    f"{name} stopped:\n{process.log_tail()}"
                )
                try:
                    scraped[name] = scrape(ports[name])
                except OSError:
                    continue
            if (
                scraped.get("serve", {}).get("recq_serve_snapshot_version", 0) >= 1
                and scraped.get("shoppers", {}).get("recq_sim_sessions_total", 0) > 0
                and scraped.get("worker", {}).get("recq_streams_transitions_total", 0) > 0
            ):
                break
        else:
            tails = "\n".join(f"--- {n}\n{p.log_tail(20)}" for n, p in processes.items())
            pytest.fail(f"the loop did not close in time: {scraped}\n{tails}")
        health = {
            name: subprocess.run([RECQ, "health", "--role", ROLE[name]], env=env_of(name),
                                 capture_output=True, text=True, timeout=30, check=False)
            for name in STAGES
        }  # fmt: skip
    finally:
        for process in processes.values():
            process.stop(timeout_s=60)
    for name, result in health.items():
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
    assert scraped["learner"]["recq_learner_snapshot_version"] >= 1
    assert scraped["learner"]["recq_learner_transitions_total"] > 0
    assert scraped["serve"]["recq_serve_requests_total"] > 0
    # Every metric a dashboard panel queries is one a running stage exports.
    dashboard = (DEPLOY / "grafana" / "dashboards" / "recq.json").read_text()
    queried = set(re.findall(r"\b(recq_[a-z_]+)", dashboard))
    exported = {name for stage in scraped.values() for name in stage}
    assert queried and queried <= exported, f"not exported: {sorted(queried - exported)}"
    for name, process in processes.items():
        assert "Traceback" not in process.log_path.read_text(errors="replace"), (
            f"{name}:\n{process.log_tail()}"
        )
