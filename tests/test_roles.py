"""Each role's install runs its commands: every module a command can import (function-level
imports included, followed through recq's own modules) comes from the standard library,
recq, or a distribution that the role's extras (recq/roles.py, pyproject) pull in.

The allowed set is read from the installed metadata of recq and its dependencies, not
written here, so the test is what a fresh environment of only that role's dependencies
would find, without building one: a stray `import torch` in serving fails here rather
than in a serving image that has no torch."""

from __future__ import annotations

import ast
import importlib.metadata as metadata
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from recq.cli import app
from recq.roles import FIRST_PARTY, ROLES, Role, command_in, role_of

ROOT = Path(__file__).resolve().parents[1]
CLI = ROOT / "recq" / "cli.py"


# --- what a role installs --------------------------------------------------------------
def installed(role: Role) -> set[str]:
    """Distributions (canonical names) that `pip install recq[<role's extras>]` brings."""
    found: set[str] = set()
    todo = [("recq", frozenset(role.install().removeprefix("recq[").rstrip("]").split(",")))]
    while todo:
        name, extras = todo.pop()
        for line in metadata.requires(name) or []:
            req = Requirement(line)
            if req.marker and not any(req.marker.evaluate({"extra": e}) for e in extras | {""}):
                continue
            dist = canonicalize_name(req.name)
            if dist == "recq":  # an extra that names others (demo = recq[learner] + ...)
                todo.append(("recq", frozenset(req.extras)))
            elif dist not in found or req.extras:
                found.add(dist)
                todo.append((req.name, frozenset(req.extras)))
    return found


@cache
def distributions_of() -> dict[str, set[str]]:
    """Top-level import name -> the distributions that provide it."""
    return {top: {canonicalize_name(d) for d in dists}
            for top, dists in metadata.packages_distributions().items()}  # fmt: skip


# --- what a command imports ------------------------------------------------------------
def module_path(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.exists():
            return path
    return None


def imports_in(nodes: list[ast.stmt], package: str) -> set[str]:
    """Dotted names imported anywhere in these statements (function bodies included;
    ``from a import b`` counts ``a.b`` when that is a module of recq's)."""
    names: set[str] = set()
    for node in (n for stmt in nodes for n in ast.walk(stmt)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*parent, base] if base else parent)
            names.add(base)
            names.update(f"{base}.{a.name}" for a in node.names if module_path(f"{base}.{a.name}"))
    return names


@cache
def module_imports(module: str) -> frozenset[str]:
    path = module_path(module)
    assert path is not None, module
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    return frozenset(imports_in(ast.parse(path.read_text()).body, package))


def reachable(start: set[str]) -> set[str]:
    """Every module imported from ``start``, following recq's own modules (and the
    packages above each one, whose ``__init__`` runs first)."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for n in range(1, len(parts) + 1):
            prefix = ".".join(parts[:n])
            if prefix in seen:
                continue
            seen.add(prefix)
            if parts[0] in FIRST_PARTY and module_path(prefix):
                todo.extend(module_imports(prefix))
    return seen


def command_functions() -> dict[str, ast.FunctionDef]:
    """CLI command ("topics create") -> the function that implements it, read from the
    decorators in recq/cli.py (``@app.command("serve")``, ``@topics_app.command(...)``)."""
    groups = {f"{g.name}_app": g.name for g in app.registered_groups if g.name}
    out: dict[str, ast.FunctionDef] = {}
    for node in ast.parse(CLI.read_text()).body:
        if not isinstance(node, ast.FunctionDef):
            continue
        for deco in node.decorator_list:
            if (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)
                    and deco.func.attr == "command" and isinstance(deco.func.value, ast.Name)
                    and deco.args and isinstance(deco.args[0], ast.Constant)):  # fmt: skip
                group = groups.get(deco.func.value.id)
                out[f"{group} {deco.args[0].value}" if group else str(deco.args[0].value)] = node
    return out


def command_imports(command: str) -> set[str]:
    """What running ``recq <command>`` can import: the CLI module's top level, the
    command's function and the helpers of recq/cli.py that it calls, and all they reach."""
    tree = ast.parse(CLI.read_text())
    top = [s for s in tree.body if not isinstance(s, ast.FunctionDef | ast.ClassDef)]
    helpers = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
    body: list[ast.stmt] = [command_functions()[command]]
    called: set[str] = set()
    while True:
        calls = {n.id for stmt in body for n in ast.walk(stmt) if isinstance(n, ast.Name)}
        new = {c for c in calls & helpers.keys() - called if not c.startswith(("main",))}
        if not new:
            break
        called |= new
        body += [helpers[c] for c in new]
    return reachable(imports_in(top, "recq") | imports_in(body, "recq"))


def outside(role: Role, modules: set[str]) -> dict[str, set[str]]:
    """Third-party modules (top-level name -> providers) the role's install lacks."""
    allowed = installed(role)
    stray: dict[str, set[str]] = {}
    for top in {m.split(".")[0] for m in modules}:
        if top in FIRST_PARTY or top in sys.stdlib_module_names or top == "__future__":
            continue
        providers = distributions_of().get(top, {f"<not installed: {top}>"})
        if not providers & allowed:
            stray[top] = providers
    return stray


# --- the checks -------------------------------------------------------------------------
def test_every_command_belongs_to_exactly_one_role() -> None:
    listed = [c for role in ROLES for c in role.commands]
    assert len(listed) == len(set(listed)), "a command is listed under two roles"
    assert set(listed) == set(command_functions()), (
        "recq/roles.py and the CLI's commands differ: "
        f"{sorted(set(listed) ^ set(command_functions()))}"
    )


@pytest.mark.parametrize("command", [c for role in ROLES for c in role.commands])
def test_a_command_imports_only_what_its_role_installs(command: str) -> None:
    role = role_of(command)
    stray = outside(role, command_imports(command))
    assert not stray, f"`recq {command}` ({role.install()}) imports {stray}"


def test_serving_installs_no_torch_and_the_walk_sees_function_level_imports() -> None:
    serve, learner = role_of("serve"), role_of("learner")
    assert "torch" not in installed(serve) and "onnxruntime" in installed(serve)
    assert "matplotlib" not in installed(learner) and "torch" in installed(learner)
    # The learner imports torch only inside `recq learner`'s function: the walk finds it,
    # and would report it for serving's install.
    assert outside(serve, command_imports("learner")).keys() >= {"torch"}
    assert "torch" not in outside(learner, command_imports("learner"))


def test_the_cli_names_a_command_from_its_arguments() -> None:
    assert command_in(["serve", "--loglevel", "debug"]) == "serve"
    assert command_in(["topics", "create"]) == "topics create"
    assert command_in(["simulate", "--shoppers", "240"]) == "simulate"
    assert command_in(["--help"]) is None


def test_a_command_outside_the_install_says_which_extra_to_install() -> None:
    """`recq learner` where torch is missing (a serving image): one line naming the role's
    extras, exit 2, no traceback."""
    blocker = (
        "import sys\n"
        "class NoTorch:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'torch':\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, NoTorch())\n"
        "sys.argv = ['recq', 'learner']\n"
        "from recq.cli import main\n"
        "main()\n"
    )
    run = subprocess.run([sys.executable, "-c", blocker], capture_output=True, text=True,
                         timeout=120, cwd=ROOT)  # fmt: skip
    assert run.returncode == 2, run.stderr[-2000:]
    assert "recq[learner,cpu]" in run.stderr and "Traceback" not in run.stderr
