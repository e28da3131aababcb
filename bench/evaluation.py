"""What ``recq evaluate`` costs at the size of a real click-log sample: wall time and peak
memory of one evaluation with default settings (time split, 2,000 updates per neural
model) of a 65k-interaction log, where the time goes (fit and rank per model), and the
figures it reports (HR@20 / NDCG@10 of each model with its paired interval against the
best baseline). Target: <= 300 s on this 2-core machine.

    .venv/bin/python bench/evaluation.py [--log FILE] [--threads 1] [--updates 2000]

Without --log it writes the simulator's offline log (15,000 shoppers x 5 sessions, about
65k events; ``recq simulate --log``). Progress lines go to stderr, JSON lines
(bench/report.py) to stdout.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch
from rich.console import Console

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.report import figure
from recq.evaluation.run import run_evaluation
from simulator.offline import write_log


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--log", type=Path, help="A log recq evaluate reads.")
    parser.add_argument("--threads", type=int, default=1, help="torch compute threads.")
    parser.add_argument("--updates", type=int, default=2000)
    parser.add_argument("--split", default="time", choices=["time", "random"])
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        log = args.log
        if log is None:
            log = Path(tmp) / "shop.jsonl"
            write_log(log, n_shoppers=15_000, sessions_each=5, items=2000, categories=20,
                      seed=1)  # fmt: skip
        report = run_evaluation(log, updates=args.updates, seed=0, splits=[args.split],
                                out=Path(tmp) / "report", console=Console(stderr=True))  # fmt: skip
    common = {"log": str(args.log or "simulator"), "threads": args.threads,
              "updates": args.updates, "interactions": report["read"]}  # fmt: skip
    figure("evaluation", "wall_s", report["seconds"], "s", baseline="target",
           baseline_value=300.0, **common)  # fmt: skip
    figure("evaluation", "peak_rss_mb", report["peak_rss_mb"], "MiB", **common)
    result = report["splits"][args.split]
    for model, seconds in result["seconds"].items():
        figure("evaluation", "model_s", seconds["fit"] + seconds["rank"], "s", model=model,
               fit_s=seconds["fit"], rank_s=seconds["rank"], **common)  # fmt: skip
    best = result["best_baseline"]
    for model, by in result["results"].items():
        versus = result["versus_best_baseline"].get(model, {})
        for metric in ("hr@20", "ndcg@10"):
            interval = versus.get(metric)
            if interval is not None:
                interval = {k: round(v, 4) for k, v in interval.items()}
            figure("evaluation", metric, by["all"][metric], "share", model=model,
                   best_baseline=best, versus_best=interval, **common)  # fmt: skip


if __name__ == "__main__":
    main()
