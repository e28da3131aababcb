"""The CPU image built for real and its worker, learner and serving member run against
the embedded broker (host networking): `make container-test`, outside `make test`.

Needs a container engine: podman (preferred: daemonless) or docker with a running
daemon. Without one it skips and says so. Where Docker Hub is unreachable, give a base
image with Python 3.11 that the engine already has (e.g. one made with mmdebstrap and
`podman import`) as RECQ_TEST_BASE_IMAGE; the Dockerfile's default is python:3.11-slim.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from recq.embedded_kafka import free_port
from tests.deploy.compose_spec import DEPLOY, Stack

pytestmark = [pytest.mark.container, pytest.mark.integration, pytest.mark.timeout(3600)]

ROOT = DEPLOY.parent
IMAGE = "localhost/recq:cpu-test"


def engine() -> str | None:
    for name in ("podman", "docker"):
        path = shutil.which(name)
        if (
            path
            and subprocess.run([path, "info"], capture_output=True, check=False).returncode == 0
        ):
            return path
    return None


@pytest.fixture(scope="module")
def built_image() -> tuple[str, str]:
    tool = engine()
    if tool is None:
        pytest.skip("no container engine answers (podman or docker with a daemon): "
                    "install podman, or start dockerd, to run `make container-test`")  # fmt: skip
    base = os.environ.get("RECQ_TEST_BASE_IMAGE", "python:3.11-slim")
    start = time.monotonic()
    args = [tool, "build", "--network", "host", "-f", str(DEPLOY / "docker" / "Dockerfile"),
            "--build-arg", f"BASE={base}", "--build-arg", "VARIANT=cpu", "-t", IMAGE]  # fmt: skip
    bundle = os.environ.get("PIP_CERT")
    if bundle and Path(bundle).is_file():  # a network that intercepts TLS: trust its CA
        args += ["-v", f"{bundle}:{bundle}:ro", "--build-arg", f"PIP_CERT={bundle}"]
    build = subprocess.run([*args, str(ROOT)], capture_output=True, text=True, timeout=3600,
                           check=False)  # fmt: skip
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    size = subprocess.run([tool, "image", "inspect", IMAGE, "--format", "{{.Size}}"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    print(
        f"built {IMAGE} from {base} in {time.monotonic() - start:.0f} s: {int(size) / 1e6:.0f} MB"
    )
    return tool, IMAGE


def test_the_image_runs_each_stage_against_the_broker(
    built_image: tuple[str, str], kafka_bootstrap: str, unique: str
) -> None:
    tool, image = built_image
    whoami = subprocess.run([tool, "run", "--rm", "--entrypoint", "id", image, "-u"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert whoami.stdout.strip() == "10001"  # not root
    stack = Stack.load()
    names: list[str] = []
    try:
        for service in ("worker", "learner", "serve"):
            env = Stack.environment(stack.services[service])
            env.update(RECQ_BOOTSTRAP_SERVERS=kafka_bootstrap, RECQ_TOPIC_PREFIX=f"k{unique}.",
                       RECQ_METRICS_PORT=str(free_port()),
                       RECQ_STREAMS_APP_ID=f"k{unique}-streams")  # fmt: skip
            name = f"recq-test-{unique}-{service}"
            args = [tool, "run", "-d", "--name", name, "--network", "host"]
            for key, value in env.items():
                args += ["-e", f"{key}={value}"]
            subprocess.run([*args, image, *stack.services[service]["command"]], check=True,
                           capture_output=True)  # fmt: skip
            names.append(name)
        deadline = time.monotonic() + 180
        pending = {(n, s) for n, s in zip(names, ("worker", "learner", "serve"), strict=True)}
        while pending and time.monotonic() < deadline:
            time.sleep(5)
            for name, role in sorted(pending):
                check = subprocess.run([tool, "exec", name, "recq", "health", "--role", role],
                                       capture_output=True, check=False)  # fmt: skip
                if check.returncode == 0:
                    pending.discard((name, role))
        logs = {n: subprocess.run([tool, "logs", n], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True,
                                  check=False).stdout[-2000:] for n in names}  # fmt: skip
        assert not pending, f"not healthy: {pending}\n{logs}"
    finally:
        for name in names:
            subprocess.run([tool, "rm", "-f", name], capture_output=True, check=False)
