"""The compose stack read statically (no container engine needed): every recq service
runs a real `recq` command whose environment its stage's settings accept, ports,
volumes and dependencies agree, Prometheus scrapes every stage where it exports, and the
GPU override puts the learner and serving on GPUs with the GPU image. What the
dashboard queries is checked against scraped stages in
tests/integration/test_compose_smoke.py."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import typer.main
import yaml

from recq.cli import app
from recq.roles import ROLES, role_of
from schemas.settings import (
    KNOWN_VARIABLES,
    LearnerSettings,
    RewardSettings,
    ServingSettings,
    StageSettings,
    StreamsSettings,
    load_settings,
)
from tests.deploy.compose_spec import COMPOSE, DEPLOY, GPU_OVERRIDE, Stack, dockerfile_env
from tests.test_roles import installed

STAGE_OF = {"worker": StreamsSettings, "learner": LearnerSettings, "serve": ServingSettings,
            "topics": StageSettings, "simulate": RewardSettings}  # fmt: skip
EXTERNAL = {"RECQ_BOOTSTRAP_SERVERS": "broker-1.example:9093,broker-2.example:9093"}


def parse_command(args: list[str]) -> str:
    """Parse ``recq ARGS`` as the CLI would (options and their types); the leaf command's
    name (a click.UsageError if the command or an option is wrong)."""
    command = typer.main.get_command(app)  # typer's own (vendored) click objects
    ctx = command.make_context("recq", list(args), resilient_parsing=False)
    name = "recq"
    while hasattr(command, "resolve_command"):  # a group: descend to the subcommand
        pending = [*getattr(ctx, "_protected_args", []), *ctx.args]
        found, sub, rest = command.resolve_command(ctx, pending)
        assert sub is not None and found, f"recq has no command {args}"
        command, name = sub, found
        ctx = sub.make_context(name, rest, parent=ctx)
    return name


@pytest.mark.parametrize("env", [{}, EXTERNAL], ids=["bundled-kafka", "external-cluster"])
def test_every_recq_service_runs_a_real_command_with_valid_settings(
    env: dict[str, str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    stack = Stack.load(env=env)
    services = stack.recq_services()
    assert set(services) == {"topics", "worker", "learner", "serve", "shoppers"}
    image_env = dockerfile_env()
    for name, service in services.items():
        command = service["command"]
        leaf = parse_command(command)
        stage = STAGE_OF["topics" if leaf == "create" else leaf]
        environment = {**image_env, **Stack.environment(service)}
        unknown = sorted(
            k for k in environment if k.startswith("RECQ_") and k not in KNOWN_VARIABLES
        )
        assert not unknown, f"{name}: {unknown} are not recq settings"
        monkeypatch.chdir(tmp_path)  # no .env of the developer's
        for key in [k for k in os.environ if k.startswith("RECQ_")]:
            monkeypatch.delenv(key)
        for key, value in environment.items():
            monkeypatch.setenv(key, value)
        settings = load_settings(stage)  # raises, naming the variable, if invalid
        if isinstance(settings, StageSettings):
            assert settings.bootstrap_servers == (env or {}).get(
                "RECQ_BOOTSTRAP_SERVERS", "kafka:9092"
            ), name
            assert settings.metrics_port == 9100, name


def test_ports_volumes_and_dependencies_agree() -> None:
    stack = Stack.load()
    services, image_env = stack.services, dockerfile_env()
    for name, service in services.items():
        for target in service.get("depends_on") or {}:
            assert target in services, f"{name} depends on unknown {target}"
        for mount in service.get("volumes") or []:
            source = mount.split(":")[0]
            if not source.startswith("."):
                assert source in stack.volumes, f"{name}: volume {source} is not declared"
            else:
                assert (DEPLOY / source).exists(), f"{name}: {source} does not exist"
    # The model store: the learner writes, serving members read, the same named volume
    # at the path the image's RECQ_MODEL_STORE names.
    store = image_env["RECQ_MODEL_STORE"]
    assert f"models:{store}" in services["learner"]["volumes"]
    assert f"models:{store}:ro" in services["serve"]["volumes"]
    learner_dir = load_defaults(image_env).learner_dir
    assert f"learner-state:{learner_dir}" in services["learner"]["volumes"]
    # The recq services are scalable: no fixed container names or host ports.
    for name in ("worker", "serve", "learner", "shoppers"):
        assert "container_name" not in services[name] and "ports" not in services[name]
    # One Kafka node: replication settings of 1, a healthcheck, topics after it.
    kafka = services["kafka"]
    assert kafka["image"].startswith("apache/kafka:")
    assert all(v == "1" for k, v in kafka["environment"].items() if "REPLICATION_FACTOR" in k)
    assert kafka["healthcheck"]["test"]
    assert services["topics"]["depends_on"]["kafka"]["condition"] == "service_healthy"
    assert services["shoppers"]["profiles"] == ["demo"]
    assert parse_command(services["shoppers"]["command"]) == "simulate"
    for name in ("worker", "learner", "serve"):
        assert services[name]["depends_on"]["topics"]["condition"] == (
            "service_completed_successfully"
        )
        assert services[name]["healthcheck"]["test"] == ["CMD", "recq", "health", "--role", name]


def load_defaults(image_env: dict[str, str]) -> StageSettings:
    return StageSettings(data_dir=Path(image_env["RECQ_DATA_DIR"]))


def test_prometheus_scrapes_every_stage_where_it_exports() -> None:
    stack = Stack.load()
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    assert set(jobs) == {"worker", "learner", "serve", "shoppers"}
    for name, job in jobs.items():
        (sd,) = job["dns_sd_configs"]
        (target,) = sd["names"]
        service = stack.services[target]
        assert int(Stack.environment(service)["RECQ_METRICS_PORT"]) == sd["port"], name
    prometheus = stack.services["prometheus"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]


def test_grafana_is_provisioned_with_the_datasource_and_the_dashboard() -> None:
    provisioning = DEPLOY / "grafana" / "provisioning"
    (source,) = yaml.safe_load((provisioning / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090" and source["uid"] == "prometheus"
    (provider,) = yaml.safe_load((provisioning / "dashboards" / "recq.yml").read_text())[
        "providers"
    ]
    grafana = Stack.load().services["grafana"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in grafana["volumes"]
    dashboard = (DEPLOY / "grafana" / "dashboards" / "recq.json").read_text()
    assert '"uid": "prometheus"' in dashboard
    titles = re.findall(r'"title": "([^"]+)"', dashboard)
    for wanted in ("Events in", "Dead letters", "Consumer lag", "Transitions", "Replay",
                   "updates per second", "Loss", "Snapshot version", "rejections",
                   "Serving latency", "reward per session"):  # fmt: skip
        assert any(wanted.lower() in t.lower() for t in titles), wanted


def test_the_gpu_override_puts_learner_and_serving_on_gpus() -> None:
    stack = Stack.load(DEPLOY / "compose.yaml", GPU_OVERRIDE)
    for name in ("learner", "serve"):
        service = stack.services[name]
        assert service["build"]["args"]["VARIANT"] == "gpu" and "gpu" in service["image"]
        (device,) = service["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["capabilities"] == ["gpu"]
        assert parse_command(service["command"]) == name  # the override kept it
    learner_env = Stack.environment(stack.services["learner"])
    assert learner_env["RECQ_LEARNER_DEVICE"] == "cuda"
    assert learner_env["RECQ_BOOTSTRAP_SERVERS"] == "kafka:9092"  # merged, not replaced
    assert "deploy" not in stack.services["worker"]


@pytest.mark.parametrize("files", [(COMPOSE,), (COMPOSE, GPU_OVERRIDE)], ids=["cpu", "gpu"])
def test_each_service_runs_an_image_whose_role_installs_its_command(
    files: tuple[Path, ...],
) -> None:
    """The learner's image has torch, serving's none, the streams image neither; each
    service's command (recq/roles.py) runs in the image its build names, health included."""
    stack = Stack.load(*files)
    roles = {name: s["build"]["args"]["ROLE"] for name, s in stack.recq_services().items()}
    assert roles == {"topics": "streams", "worker": "streams", "shoppers": "streams",
                     "learner": "learner", "serve": "serve"}  # fmt: skip
    for name, service in stack.recq_services().items():
        image_role = next(r for r in ROLES if r.name == roles[name])
        variant = service["build"]["args"]["VARIANT"]
        assert service["image"].endswith(f":{variant}-{image_role.name}"), service["image"]
        for args in (service["command"], service.get("healthcheck", {}).get("test", [])[2:]):
            if args:
                needs = role_of(parse_path(args))
                assert installed(needs) <= installed(image_role), (name, args)
    assert "torch" not in installed(next(r for r in ROLES if r.name == "serve"))


def parse_path(args: list[str]) -> str:
    """``["topics", "create"]`` -> "topics create": the command recq/roles.py lists."""
    leaf = parse_command(args)
    words = [a for a in args if not a.startswith("-")]
    return " ".join(words[: words.index(leaf) + 1])


def test_the_image_is_multi_stage_non_root_with_one_onnxruntime() -> None:
    text = (DEPLOY / "docker" / "Dockerfile").read_text()
    assert re.search(r"^ARG VARIANT=cpu$", text, re.M)
    assert re.search(r"^ARG ROLE=demo$", text, re.M)
    assert re.search(r"^ARG BASE=python:3\.11-slim$", text, re.M)
    assert re.search(r"^ARG CUDA_BASE=nvidia/cuda:12\.[0-9.]+-cudnn-runtime", text, re.M)
    # recq[ROLE,cpu] or recq[ROLE,gpu] (never both onnxruntime builds); the streams role
    # installs neither.
    assert '".[${extras}]"' in text
    for role in ROLES:
        if role.name == "streams":
            assert 'streams) extras="streams"' in text
        else:
            assert re.search(rf"\b{role.name}\b[^)]*\) extras=\"\$\{{ROLE}},\$\{{VARIANT}}\"", text)
    runtime = text[text.index("AS runtime") :]
    assert "COPY --from=build /opt/recq /opt/recq" in runtime
    assert "pip install" not in runtime and "apt-get" not in runtime
    assert re.search(r"^USER recq$", runtime, re.M)
    assert 'ENTRYPOINT ["recq"]' in runtime and "HEALTHCHECK" in runtime
    ignore = [
        line
        for line in (DEPLOY.parent / ".dockerignore").read_text().splitlines()
        if line and not line.startswith("#")
    ]
    assert ignore[0] == "*" and "!.venv" not in ignore and "!data/" not in ignore
    with pytest.raises(Exception, match="--rol") as wrong:
        parse_command(["health", "--rol", "serve"])
    assert getattr(wrong.value, "exit_code", None) == 2  # a usage error
