"""The configuration reference (docs/configuration.md), generated from the settings
classes of ``schemas/settings.py``: every ``RECQ_*`` variable once, in the group that
defines it, with its type, default and description. ``recq config docs`` writes it;
a test holds the committed page to what this renders, so the reference cannot drift
from the code."""

from __future__ import annotations

import types
import typing
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

from annotated_types import Ge, Gt, Le, Lt, MaxLen
from pydantic import SecretStr
from pydantic.fields import FieldInfo

from schemas.settings import (
    ENV_PREFIX,
    STAGES,
    ConnectionSettings,
    ExplorationSettings,
    GroupSettings,
    HistorySettings,
    LearnerSettings,
    RewardSettings,
    ServingSettings,
    StageSettings,
    StreamsSettings,
)

#: In the repository beside this package (recq runs from a checkout: `pip install -e`).
PAGE = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

#: (heading, class) in the order the page lists them; each class shows its own fields.
GROUPS: tuple[tuple[str, type[Any]], ...] = (
    ("Every process: the broker connection", ConnectionSettings),
    ("Every stage", StageSettings),
    ("Reward", RewardSettings),
    ("History (the state's length)", HistorySettings),
    ("Exploration", ExplorationSettings),
    ("Consumer groups", GroupSettings),
    ("Streams worker (`recq worker`)", StreamsSettings),
    ("Learner (`recq learner`)", LearnerSettings),
    ("Serving (`recq serve`)", ServingSettings),
)
STAGE_NAMES = {StreamsSettings: "streams worker", LearnerSettings: "learner",
               ServingSettings: "serving"}  # fmt: skip

INTRO = """\
Settings are read from `RECQ_*` environment variables (or `.env`) into one typed object
per stage (`schemas/settings.py`): each process loads and validates only its own, so an
invalid value stops that process at start with a message naming the variable, and a bad
learner setting does not stop a serving member. A `RECQ_*` variable that no stage reads
is logged as a warning at start, with the closest real name. In containers, a file named
like the variable in lower case under `/run/secrets` (`recq_sasl_password`) sets it.
Scripts that start recq processes (the demo, benches, tests) build their environment
with `schemas.settings.stage_env`, which refuses unknown names."""


def own_fields(cls: type[Any]) -> dict[str, FieldInfo]:
    """The fields ``cls`` declares itself (not those of the settings it extends)."""
    inherited: set[str] = set()
    for base in cls.__mro__[1:]:
        inherited |= set(getattr(base, "model_fields", {}))
    return {name: f for name, f in cls.model_fields.items() if name not in inherited}


def type_name(annotation: Any) -> str:
    origin = get_origin(annotation)
    if origin is Literal:
        return " \\| ".join(f"`{v}`" for v in get_args(annotation))
    if origin in (typing.Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        return " \\| ".join(type_name(a) for a in args)
    if annotation is SecretStr:
        return "secret"
    return getattr(annotation, "__name__", str(annotation))


def bounds(field: FieldInfo) -> str:
    parts = []
    for m in field.metadata:
        if isinstance(m, Ge):
            parts.append(f">= {m.ge}")
        elif isinstance(m, Gt):
            parts.append(f"> {m.gt}")
        elif isinstance(m, Le):
            parts.append(f"<= {m.le}")
        elif isinstance(m, Lt):
            parts.append(f"< {m.lt}")
        elif isinstance(m, MaxLen):
            parts.append(f"at most {m.max_length} characters")
    return ", ".join(parts)


def default_of(field: FieldInfo) -> str:
    value = field.get_default(call_default_factory=True)
    if value is None or value == "":
        return "unset"
    if isinstance(value, Path) and value.is_relative_to(Path.home()):
        value = Path("~") / value.relative_to(Path.home())  # not this machine's home
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    return f"`{value}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render() -> str:
    lines = [
        "# Configuration reference",
        "",
        "Generated from `schemas/settings.py` by `recq config docs`; do not edit by hand (a",
        "test checks that this page matches the code).",
        "",
        INTRO,
        "",
        "Contents: " + " · ".join(f"[{heading}](#{_anchor(heading)})" for heading, _ in GROUPS),
    ]
    for heading, cls in GROUPS:
        readers = [STAGE_NAMES[s] for s in STAGES if issubclass(s, cls)]
        lines += ["", f"## {heading}", ""]
        lines.append(f"`{cls.__name__}`, read by: {', '.join(readers)}.")
        lines += ["", "| variable | type | default | meaning |", "| --- | --- | --- | --- |"]
        for name, field in own_fields(cls).items():
            kind = type_name(field.annotation)
            if limits := bounds(field):
                kind += f" ({limits})"
            lines.append(
                f"| `{ENV_PREFIX}{name.upper()}` | {kind} | {default_of(field)} | "
                f"{_cell(field.description or '')} |"
            )
    return "\n".join(lines) + "\n"


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to dashes."""
    kept = "".join(c for c in heading.lower() if c.isalnum() or c in " -_")
    return kept.replace(" ", "-")
