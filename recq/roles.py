"""Which install each `recq` command needs.

recq installs by role (pyproject's extras): the base is the contracts, the CLI and the
streams worker; `serve` adds nothing but one onnxruntime build (`cpu` or `gpu`);
`learner` adds torch and the ONNX exporter; `demo` adds matplotlib to the learner's. Each
command belongs to the smallest role whose install runs it, so an image built for one
role (deploy/docker/Dockerfile's ROLE) runs that role's commands and every base command.
tests/test_roles.py follows every import each command can reach and fails when one
leaves its role's install (a stray `import torch` in serving fails CI).
"""

from __future__ import annotations

from dataclasses import dataclass

#: recq's own top-level packages: a missing one is a broken install, not a role's extra.
FIRST_PARTY = ("schemas", "kafkaio", "streams", "learner", "inference", "simulator", "recq")


@dataclass(frozen=True)
class Role:
    name: str
    #: pyproject extras of the role's install; "{runtime}" is `cpu` or `gpu` (onnxruntime).
    extras: tuple[str, ...]
    #: CLI commands (space-separated for subcommands) this install is the smallest for.
    commands: tuple[str, ...]

    def install(self, runtime: str = "cpu") -> str:
        extras = ",".join(e.format(runtime=runtime) for e in self.extras)
        return f"recq[{extras}]"


ROLES: tuple[Role, ...] = (
    Role(
        "streams",
        ("streams",),
        (
            "worker",
            "topics create",
            "topics list",
            "kafka fetch",
            "kafka start",
            "kafka stop",
            "kafka status",
            "schemas export",
            "simulate",
            "health",
            "config docs",
            "replay",
            "roundtrip",
        ),
    ),
    Role("serve", ("serve", "{runtime}"), ("serve", "snapshots list", "snapshots rollback")),
    Role("learner", ("learner", "{runtime}"), ("learner", "ope")),
    Role("demo", ("demo", "{runtime}"), ("demo", "evaluate")),
)


def role_of(command: str) -> Role:
    """The role whose install runs `command` ("serve", "topics create")."""
    for role in ROLES:
        if command in role.commands:
            return role
    raise KeyError(f"no role lists the command {command!r}: add it to recq/roles.py")


def command_in(argv: list[str]) -> str | None:
    """The command an argument list runs (its first one or two words), if it names one."""
    words = [a for a in argv if not a.startswith("-")][:2]
    for n in (2, 1):
        candidate = " ".join(words[:n])
        if any(candidate in role.commands for role in ROLES):
            return candidate
    return None
