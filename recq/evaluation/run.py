"""``recq evaluate LOG``: read the log, build the protocol's sessions, and for each split
(random, time) fit every recommender on the training sessions and rank every target of
the test sessions against all items. Tables on the terminal, ``evaluation.json`` on
disk, progress while it works (bars on a terminal, lines in a log)."""

from __future__ import annotations

import resource
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import torch
from rich.console import Console
from rich.table import Table

from recq.evaluation.baselines import session_baselines
from recq.evaluation.logs import LoggedInteraction, Skipped, read_interactions
from recq.evaluation.metrics import (
    GROUPS,
    HEADLINE,
    Targets,
    breakdown,
    paired_difference,
    target_ranks,
)
from recq.evaluation.models import LEARNED, Histories, Recommender, Snapshot, recommenders
from recq.evaluation.progress import Advance, StageBars, StageLog, stages
from recq.evaluation.protocol import MIN_INTERACTIONS, Split, sessions_of, split

SCORE_BATCH = 256


def rank_targets(
    model: Recommender, batches: list[tuple[Histories, torch.Tensor]], advance: Advance
) -> np.ndarray:
    """The rank of every target under ``model`` ([T] int64), batch by batch."""
    out = []
    for histories, wanted in batches:
        out.append(target_ranks(model.score(histories), wanted).numpy())
        advance(len(wanted))
    return np.concatenate(out) if out else np.empty(0, np.int64)


def evaluate_split(
    data: Split, models: list[Recommender], progress: StageLog | StageBars, seed: int
) -> dict[str, Any]:
    targets = Targets.of(data.test)
    batches = targets.batches(SCORE_BATCH)
    ranks: dict[str, np.ndarray] = {}
    seconds: dict[str, dict[str, float]] = {}
    for model in models:
        started = time.perf_counter()
        with progress.stage(f"{data.name}: fit {model.name}", model.fit_steps()) as advance:
            model.fit(data.train, len(data.items), advance)
        fitted = time.perf_counter()
        with progress.stage(f"{data.name}: rank with {model.name}", len(targets)) as advance:
            ranks[model.name] = rank_targets(model, batches, advance)
        seconds[model.name] = {"fit": round(fitted - started, 1),
                               "rank": round(time.perf_counter() - fitted, 1)}  # fmt: skip
    results = {name: breakdown(r, targets) for name, r in ranks.items()}
    baselines = [name for name in ranks if name not in LEARNED]
    best = max(baselines, key=lambda n: tuple(results[n]["all"][m] for m in HEADLINE))
    versus = {
        name: {m: asdict(paired_difference(r, ranks[best], targets, m, seed=seed))
               for m in HEADLINE}
        for name, r in ranks.items() if name != best
    }  # fmt: skip
    return {
        "train_sessions": len(data.train), "validation_sessions": len(data.validation),
        "test_sessions": len(data.test), "items": len(data.items), "targets": len(targets),
        "unknown_test_interactions": data.unknown_test_interactions,
        "raw_test_interactions": data.raw_test_interactions,
        "target_shares": targets.shares(), "best_baseline": best, "results": results,
        "versus_best_baseline": versus, "seconds": seconds,
    }  # fmt: skip


def run_evaluation(
    log: Path, *, updates: int, seed: int, splits: list[str], out: Path, console: Console,
    knn_k: int = 100, knn_sample: int = 500,
) -> dict[str, Any]:  # fmt: skip
    started = time.perf_counter()
    skipped = Skipped()
    with console.status(f"reading {log}..."):
        interactions = read_interactions(log, skipped)
    if skipped.total:
        console.print(f"[yellow]skipped {skipped.total} rows:[/] {skipped.describe()}")
    sessions = sessions_of(interactions)
    if len(sessions) < 10:
        raise ValueError(
            f"{log}: {len(sessions)} sessions with >= {MIN_INTERACTIONS} interactions; the "
            "protocol needs at least 10 (use a larger log)"
        )
    console.print(
        f"{len(interactions)} interactions read; {len(sessions)} sessions with >= "
        f"{MIN_INTERACTIONS} interactions ({sum(map(len, sessions))} interactions)"
    )
    report: dict[str, Any] = {
        "log": str(log), "updates": updates, "seed": seed, "knn_k": knn_k,
        "knn_sample": knn_sample, "read": len(interactions), "skipped": dict(skipped.reasons),
        "sessions": len(sessions), "threads": torch.get_num_threads(),
        "served_settings": {}, "splits": {},
    }  # fmt: skip
    # Multi-threaded CPU kernels may sum in any order (the DQN rows moved between runs
    # with two threads); deterministic ones make a run's figures a function of the log,
    # the seed, the settings and the thread count.
    was_deterministic = torch.are_deterministic_algorithms_enabled()
    torch.use_deterministic_algorithms(True)
    try:
        _run_splits(sessions, report, splits, updates=updates, seed=seed, knn_k=knn_k,
                    knn_sample=knn_sample, console=console)  # fmt: skip
    finally:
        torch.use_deterministic_algorithms(was_deterministic)
    report["seconds"] = round(time.perf_counter() - started, 1)
    report["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    for name, split_report in report["splits"].items():
        # A log is read on a wide screen: no wrapping of the interval columns there.
        wide = console
        if not console.is_terminal and console.width < 132:
            wide = Console(file=console.file, width=132, quiet=console.quiet)
        wide.print(_table(name, split_report))
        wide.print(_groups(name, split_report))
    if report["served_settings"]:
        settings = ", ".join(f"{k}={v}" for k, v in report["served_settings"].items())
        console.print(f"served row trained with {settings}")
    console.print(
        f"{report['seconds']} s, peak memory {report['peak_rss_mb']} MiB; "
        f"written {out / 'evaluation.json'}"
    )
    return report


def _run_splits(
    sessions: list[list[LoggedInteraction]], report: dict[str, Any], splits: list[str], *,
    updates: int, seed: int, knn_k: int, knn_sample: int, console: Console,
) -> None:  # fmt: skip
    with stages(console) as progress:
        for name in splits:
            data = split(sessions, name, seed)
            console.print(
                f"{name} split: {len(data.train)} train / {len(data.validation)} validation "
                f"/ {len(data.test)} test sessions over {len(data.items)} items known to "
                f"training; {data.unknown_test_interactions} of "
                f"{data.raw_test_interactions} test interactions are of items training "
                "never saw (not ranked)"
            )
            models = [*session_baselines(knn_k, knn_sample), *recommenders(updates, seed)]
            report["served_settings"] = served_settings(models)
            report["splits"][name] = evaluate_split(data, models, progress, seed)


def served_settings(models: list[Recommender]) -> dict[str, str]:
    """The learner settings the served row was trained with that differ from recq's
    defaults (``RECQ_*`` from the environment): what the row's figures depend on."""
    for model in models:
        if isinstance(model, Snapshot) and model.name == "served":
            changed = model.settings.model_dump(exclude_defaults=True)
            return {f"RECQ_{key.upper()}": str(value) for key, value in sorted(changed.items())}
    return {}


def _interval(row: dict[str, float] | None) -> str:
    if row is None:
        return "(best)"
    return f"{row['estimate']:+.3f} [{row['low']:+.3f},{row['high']:+.3f}]"


def _table(split_name: str, report: dict[str, Any]) -> Table:
    best = report["best_baseline"]
    shares = report["target_shares"]
    table = Table(
        title=f"{split_name} split: {report['train_sessions']} train / "
        f"{report['test_sessions']} test sessions, {report['targets']} targets "
        f"({shares['empty']:.0%} empty history, {shares['repeat']:.0%} repeats, "
        f"{shares['filtered_by_serving']:.0%} forbidden by serving's filters)",
        caption=f"d: difference from the best baseline ({best}), paired 95% bootstrap "
        "over test sessions",
    )
    table.add_column("model")
    shown = ("hr@10", "hr@20", "ndcg@10", "ndcg@20")
    for metric in shown:
        table.add_column(metric.upper(), justify="right")
    for metric in HEADLINE:
        table.add_column(f"d {metric.upper()}", justify="right")
    for model, by in report["results"].items():
        versus = report["versus_best_baseline"].get(model, {})
        table.add_row(model, *(f"{by['all'][m]:.4f}" for m in shown),
                      *(_interval(versus.get(m)) for m in HEADLINE))  # fmt: skip
    return table


def _groups(split_name: str, report: dict[str, Any]) -> Table:
    table = Table(title=f"{split_name} split by target group (HR@20 / NDCG@10)")
    table.add_column("model")
    for group in GROUPS:
        n = report["results"][report["best_baseline"]][group]["targets"]
        table.add_column(f"{group} ({n:.0f})", justify="right")
    for model, by in report["results"].items():
        table.add_row(model, *(f"{by[g]['hr@20']:.3f} / {by[g]['ndcg@10']:.3f}" for g in GROUPS))
    return table
