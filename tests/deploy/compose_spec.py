"""The compose stack as the tests read it: deploy/compose.yaml (and overrides) loaded the
way `docker compose` merges them, `${VAR:-default}` resolved from an environment."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
COMPOSE = DEPLOY / "compose.yaml"
GPU_OVERRIDE = DEPLOY / "compose.gpu.yaml"
DOCKERFILE = DEPLOY / "docker" / "Dockerfile"
#: Which settings object each recq role loads (its stage), by its command.
ROLES = {"worker": "worker", "learner": "learner", "serve": "serve", "topics": "topics",
         "simulate": "simulate"}  # fmt: skip

_VAR = re.compile(r"\$\{([A-Z0-9_]+)(?::-([^}]*))?\}")


def interpolate(value: Any, env: dict[str, str]) -> Any:
    """Resolve ``${NAME}`` / ``${NAME:-default}`` as compose does."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: env.get(m.group(1)) or (m.group(2) or ""), value)
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    return value


def _merge(base: Any, override: Any) -> Any:
    """Compose's merge of an override file: mappings merge key by key, the rest replaces."""
    if isinstance(base, dict) and isinstance(override, dict):
        out = dict(base)
        for key, value in override.items():
            out[key] = _merge(base.get(key), value) if key in base else value
        return out
    return override


@dataclass(frozen=True)
class Stack:
    services: dict[str, dict[str, Any]]
    volumes: dict[str, Any]

    @classmethod
    def load(cls, *files: Path, env: dict[str, str] | None = None) -> Stack:
        merged: dict[str, Any] = {}
        for path in files or (COMPOSE,):
            merged = _merge(merged, yaml.safe_load(path.read_text()))  # merge keys: <<
        merged = interpolate(merged, env or {})
        return cls(services=merged["services"], volumes=merged.get("volumes") or {})

    def recq_services(self) -> dict[str, dict[str, Any]]:
        """Services that run a recq image (built from our Dockerfile; entrypoint `recq`)."""
        return {
            name: s
            for name, s in self.services.items()
            if (s.get("build") or {}).get("dockerfile") == "deploy/docker/Dockerfile"
        }

    @staticmethod
    def environment(service: dict[str, Any]) -> dict[str, str]:
        env = service.get("environment") or {}
        if isinstance(env, list):
            env = dict(item.split("=", 1) for item in env)
        return {k: str(v) for k, v in env.items()}


def dockerfile_env() -> dict[str, str]:
    """The RECQ_* defaults the image sets (ENV lines of the runtime stage)."""
    text = DOCKERFILE.read_text().replace("\\\n", " ")
    out: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("ENV "):
            out.update(re.findall(r"(RECQ_[A-Z0-9_]+)=(\S+)", line))
    return out


#: Only so the first snapshot comes within a test's patience (production: 1000 / 500 / 5),
#: and is served as it comes: with the gate on, the first candidates wait until the
#: shoppers have logged enough slates to judge them (58 s of this test's 89 in one run:
#: 20 candidates kept back). The gate is tested in tests/learner/test_gate.py and in the
#: closed loop (`make reliability`).
SOONER = {"RECQ_WARMUP_TRANSITIONS": "100", "RECQ_SNAPSHOT_MIN_UPDATES": "20",
          "RECQ_SNAPSHOT_EVERY_S": "3", "RECQ_BATCH_SIZE": "64", "RECQ_GATE": "off"}  # fmt: skip


def local_env(
    stack: Stack, service: str, *, bootstrap: str, unique: str, root: Path, metrics_port: int
) -> dict[str, str]:
    """A compose service's environment (the image's ENV defaults, then the service's),
    changed only where one host is not a compose network: the broker's address, a
    metrics port and a data directory per process, unique topic and group names, the
    shared ``models`` volume as a directory; and the first snapshot sooner (SOONER)."""
    import os

    from schemas.settings import CONNECTION_SECURITY_VARIABLES, stage_env

    env = {**dockerfile_env(), **Stack.environment(stack.services[service])}
    # compose interpolates the security settings from the shell's environment
    # (${RECQ_SECURITY_PROTOCOL:-PLAINTEXT}); so does this (RECQ_TEST_SECURE=1 sets them).
    env.update({k: os.environ[k] for k in CONNECTION_SECURITY_VARIABLES if k in os.environ})
    env.update(
        RECQ_BOOTSTRAP_SERVERS=bootstrap,
        RECQ_TOPIC_PREFIX=f"c{unique}.",
        RECQ_DATA_DIR=str(root / service),
        RECQ_MODEL_STORE=str(root / "models"),
        RECQ_METRICS_PORT=str(metrics_port),
        RECQ_STREAMS_APP_ID=f"c{unique}-streams",
        RECQ_LEARNER_GROUP_ID=f"c{unique}-learner",
        RECQ_SERVE_GROUP_ID=f"c{unique}-serve",
        # No CPU limits here: every process shares this host's cores, so one thread each.
        RECQ_LEARNER_THREADS="1",
        RECQ_SERVE_THREADS="1",
        **SOONER,
    )
    return stage_env(**{k: v for k, v in env.items() if k.startswith("RECQ_")})
