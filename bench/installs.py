"""What each role's install weighs and whether it runs its role, built the way the image
builds it (deploy/docker/Dockerfile: `pip install -c <lock without hashes> .[extras]`)
into a fresh virtual environment per role, with nothing of the others:

- streams (`recq[streams]`): `recq worker --help` and the worker's app import;
- learner (`recq[learner,cpu]`): trains a QNetwork for a few double-DQN updates on the
  CPU, exports a snapshot through the learner's exporter (ONNX parity checked), then the
  same with PyPI torch's CUDA libraries (nvidia-*, cuda-*, triton) uninstalled;
- serve (`recq[serve,cpu]`): has no torch, verifies that snapshot through the registry
  (hash, I/O, smoke run) and ranks a request with it.

Sizes are of the virtual environment (an image adds its base: python:3.11-slim is about
125 MB). Prints JSON lines (bench/report.py). Needs PyPI (about 4 GB for the learner):

    .venv/bin/python bench/installs.py [--keep DIR]
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import figure
from recq.roles import role_of

ROOT = Path(__file__).resolve().parents[1]

LEARNER_SMOKE = """
import sys
from pathlib import Path
import torch
from learner.export import SnapshotExporter, check_parity, io_spec
from learner.qnet import QNetwork
from schemas.model_store import ModelStore
from schemas.reward import Reward
torch.manual_seed(0)
items = [f"sku-{i}" for i in range(200)]
net = QNetwork(n_items=len(items), dim=16, history_length=10, capacity=256)
opt = torch.optim.Adam(net.parameters(), lr=1e-2)
seq = torch.randint(0, len(items), (64, 10))
ev = torch.ones(64, 10, dtype=torch.long)
for _ in range(20):  # a supervised-style step: the graph trains and its weights move
    _, user, value = net.encode(seq, ev, ev)
    q = net.q_all(user, value)
    loss = torch.nn.functional.cross_entropy(q, torch.randint(0, len(items), (64,)))
    opt.zero_grad(); loss.backward(); opt.step()
model, policy = SnapshotExporter(k=20).export(net, len(items))
parity = check_parity(model, policy)
ModelStore(Path(sys.argv[1])).write(
    model=model, item_ids=items, step=20, k=policy.k, history_length=10, encoder="gru",
    reward=Reward(), io_spec=io_spec(10, policy.k), parity=parity, metrics={})
print("trained and exported; loss", round(float(loss), 3), "parity", parity.max_abs_diff)
"""

SERVE_SMOKE = """
import importlib.util, sys
from pathlib import Path
import numpy as np
assert importlib.util.find_spec("torch") is None, "the serving install has torch"
from inference.registry import SnapshotRegistry
import inference.service  # the member's module and everything it imports
registry = SnapshotRegistry(Path(sys.argv[1]), threads=1)
model = registry.scan()
assert model is not None, "no verified snapshot"
rows = np.zeros((1, model.history_length), dtype=np.int64)
top, _ = model.predict(rows, rows, rows, np.zeros((1, 1), dtype=np.int64))
print("served snapshot", model.version, "top-3", top[0, :3].tolist())
"""

STREAMS_SMOKE = """
import importlib.util
for absent in ("torch", "onnxruntime", "matplotlib"):
    assert importlib.util.find_spec(absent) is None, absent
from streams.worker import create_app
print("streams worker imports; app", create_app.__name__)
"""

CUDA_PREFIXES = ("nvidia-", "cuda-", "triton")


def run(args: list[str], **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, check=False, **kw)  # type: ignore[call-overload, no-any-return]


def size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) / 1e6


def build(venv: Path, extras: str, constraints: Path) -> float:
    started = time.monotonic()
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run([*pip, "-c", str(constraints), f"{ROOT}[{extras}]"], check=True)
    return time.monotonic() - started


def smoke(venv: Path, script: str, *args: str) -> tuple[bool, str]:
    # Run outside the checkout so the installed recq (not the source tree) is imported.
    done = run([str(venv / "bin" / "python"), "-c", script, *args], cwd=venv, timeout=900)
    said = (done.stdout if done.returncode == 0 else done.stderr).strip().splitlines()
    return done.returncode == 0, said[-1] if said else ""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keep", type=Path, help="build here and keep the environments")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="recq-installs-"))
    work.mkdir(parents=True, exist_ok=True)
    constraints = work / "tested.txt"  # the lock without hashes, as the Dockerfile does
    lock = (ROOT / "requirements" / "cpu.lock").read_text().splitlines()
    constraints.write_text("\n".join(ln.removesuffix(" \\") for ln in lock
                                     if "--hash" not in ln) + "\n")  # fmt: skip
    store = work / "models"
    try:
        for name, command, script, store_arg in (
            ("streams", "worker", STREAMS_SMOKE, None),
            ("learner", "learner", LEARNER_SMOKE, store),
            ("serve", "serve", SERVE_SMOKE, store),
        ):
            role = role_of(command)
            extras = role.install("cpu").removeprefix("recq[").rstrip("]")
            venv = work / name
            seconds = build(venv, extras, constraints)
            ok, said = smoke(venv, script, *([str(store_arg)] if store_arg else []))
            has_torch = (venv / "lib/python3.11/site-packages/torch").exists()
            figure("installs", f"{name}_install_size", size_mb(venv), "MB", digits=0,
                   install=role.install("cpu"), smoke_ok=ok, smoke=said, torch=has_torch,
                   install_s=round(seconds))  # fmt: skip
            if name == "learner":
                listed = run([str(venv / "bin" / "python"), "-m", "pip", "list",
                              "--format", "freeze"]).stdout.split()  # fmt: skip
                cuda = [ln.split("==")[0] for ln in listed if ln.startswith(CUDA_PREFIXES)]
                before = size_mb(venv)
                run([str(venv / "bin" / "python"), "-m", "pip", "uninstall", "-y", *cuda])
                ok, said = smoke(venv, script, str(work / "models-without-cuda"))
                figure("installs", "learner_without_cuda_size", size_mb(venv), "MB", digits=0,
                       baseline="learner_install_size", baseline_value=before,
                       removed=cuda, smoke_ok=ok, smoke=said)  # fmt: skip
    finally:
        if args.keep is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
