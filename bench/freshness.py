"""Freshness of the closed loop with the off-policy gate on and off, side by side.

Runs ``recq demo``'s closed loop (embedded broker, worker, learner, serving member,
simulated shoppers) once per setting of ``RECQ_GATE`` and prints, for each, the
serving member's freshness: event time to the swap of the first snapshot that trained
on the event (inference/freshness.py), p50 and p99 in seconds, with how many snapshots
the gate promoted and rejected and the learned arm's reward in the second half. The
gate-off run is the baseline of the ratios.

    .venv/bin/python bench/freshness.py [--duration 180] [--seed 1]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import orjson
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import figure
from recq.closed_loop import run_closed_loop
from schemas.settings import RewardSettings, StageSettings, load_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=180.0)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--reports", type=Path, default=Path("reports/bench-freshness"))
    args = parser.parse_args()
    console = Console(stderr=True)
    results: dict[str, dict[str, object]] = {}
    for gate in ("off", "on"):
        os.environ["RECQ_GATE"] = gate
        out = run_closed_loop(
            load_settings(StageSettings), load_settings(RewardSettings).reward(),
            duration_s=args.duration, seed=args.seed, console=console, reports=args.reports,
        )  # fmt: skip
        results[gate] = orjson.loads((out / "metrics.json").read_bytes())
    base = results["off"]
    for gate, m in results.items():
        learned = m["policies"]["learned"]["second_half"]  # type: ignore[index]
        for q in ("p50", "p99"):
            value, baseline = m[f"freshness_{q}_s"], base[f"freshness_{q}_s"]
            figure("freshness", f"freshness_{q}_s", float(value or "nan"), "s",  # type: ignore[arg-type]
                   baseline="gate off", baseline_value=float(baseline or "nan"),  # type: ignore[arg-type]
                   gate=gate, duration_s=args.duration, seed=args.seed,
                   snapshots=m["snapshots"], gate_decisions=m["gate"],
                   learned_reward_2nd_half=round(learned["reward_per_session"], 3),  # type: ignore[index]
                   learned_of_oracle_2nd_half=round(learned["fraction_of_oracle"], 3))  # type: ignore[index]  # fmt: skip


if __name__ == "__main__":
    main()
