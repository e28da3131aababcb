"""``recq evaluate LOG``: read the log, build the protocol's sessions, and for each split
(random, time) fit every recommender on the training sessions and rank every target of
the test sessions against all items. A table on the terminal, ``evaluation.json`` on
disk, progress bars while it works."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import torch
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from recq.evaluation.baselines import session_baselines
from recq.evaluation.logs import Skipped, read_interactions
from recq.evaluation.metrics import KS, RankingMetrics, target_ranks
from recq.evaluation.models import Histories, Recommender, recommenders
from recq.evaluation.protocol import Split, Step, build_dataset, split_random, split_time
from schemas.features import EVENT_NAMES

SCORE_BATCH = 256


def test_targets(sessions: list[list[Step]]) -> list[tuple[list[Step], Step]]:
    """Every interaction of every test session, with the interactions before it."""
    return [(xs[:t], xs[t]) for xs in sessions for t in range(len(xs))]


def evaluate_split(
    split: Split, n_items: int, models: list[Recommender], progress: Progress
) -> dict[str, Any]:
    targets = test_targets(split.test)
    results: dict[str, Any] = {}
    for model in models:
        task = progress.add_task(f"{split.name}: fit {model.name}", total=model.fit_steps())

        def advance(n: int, task: TaskID = task) -> None:
            progress.advance(task, n)

        model.fit(split.train, n_items, advance)
        progress.update(task, visible=False)
        metrics = RankingMetrics()
        task = progress.add_task(f"{split.name}: rank with {model.name}", total=len(targets))
        for start in range(0, len(targets), SCORE_BATCH):
            chunk = targets[start : start + SCORE_BATCH]
            batch = Histories.build([(history, target.ts_ms) for history, target in chunk])
            wanted = torch.tensor([target.item for _, target in chunk], dtype=torch.int64)
            ranks = target_ranks(model.score(batch), wanted)
            metrics.add(ranks, [EVENT_NAMES[target.code] for _, target in chunk])
            progress.advance(task, len(chunk))
        progress.update(task, visible=False)
        results[model.name] = metrics.summary()
    return results


def run_evaluation(
    log: Path, *, updates: int, seed: int, splits: list[str], out: Path, console: Console,
    knn_k: int = 100, knn_sample: int = 500,
) -> dict[str, Any]:  # fmt: skip
    skipped = Skipped()
    with console.status(f"reading {log}..."):
        interactions = read_interactions(log, skipped)
    if skipped.total:
        console.print(f"[yellow]skipped {skipped.total} rows:[/] {skipped.describe()}")
    dataset = build_dataset(interactions)
    if len(dataset.sessions) < 10:
        raise ValueError(
            f"{log}: {len(dataset.sessions)} sessions left after dropping items and sessions "
            "with <= 2 interactions; the protocol needs at least 10 (use a larger log)"
        )
    console.print(
        f"{len(interactions)} interactions read; after filtering {dataset.interactions} in "
        f"{len(dataset.sessions)} sessions over {len(dataset.items)} items"
    )
    report: dict[str, Any] = {
        "log": str(log), "updates": updates, "seed": seed, "knn_k": knn_k,
        "knn_sample": knn_sample,
        "read": len(interactions), "skipped": dict(skipped.reasons),
        "sessions": len(dataset.sessions), "items": len(dataset.items),
        "interactions": dataset.interactions, "splits": {},
    }  # fmt: skip
    started = time.perf_counter()
    with Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TimeElapsedColumn(), console=console, transient=True,
    ) as progress:  # fmt: skip
        for name in splits:
            split = split_random(dataset, seed) if name == "random" else split_time(dataset)
            models = [*session_baselines(knn_k, knn_sample), *recommenders(updates, seed)]
            report["splits"][name] = {
                "train_sessions": len(split.train),
                "test_sessions": len(split.test),
                "results": evaluate_split(split, len(dataset.items), models, progress),
            }
    report["seconds"] = round(time.perf_counter() - started, 1)
    out.mkdir(parents=True, exist_ok=True)
    (out / "evaluation.json").write_bytes(orjson.dumps(report, option=orjson.OPT_INDENT_2))
    for name, split_report in report["splits"].items():
        console.print(_table(name, split_report))
    console.print(f"written {out / 'evaluation.json'}")
    return report


def _table(split: str, report: dict[str, Any]) -> Table:
    table = Table(
        title=f"{split} split: {report['train_sessions']} train / "
        f"{report['test_sessions']} test sessions"
    )
    table.add_column("model")
    table.add_column("targets")
    for k in KS:
        table.add_column(f"HR@{k}", justify="right")
        table.add_column(f"NDCG@{k}", justify="right")
    for model, by_kind in report["results"].items():
        for kind, row in by_kind.items():
            cells = [f"{row[f'{m}@{k}']:.4f}" for k in KS for m in ("hr", "ndcg")]
            table.add_row(model, f"{kind} ({row['targets']:.0f})", *cells)
    return table
