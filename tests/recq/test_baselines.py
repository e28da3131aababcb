"""The session-based baselines against scores worked out by hand on a four-session log
(Ludewig and Jannach's definitions; the module docstring)."""

from __future__ import annotations

import math

import pytest

from recq.evaluation.baselines import ItemKNN, SessionKNN, SessionPopularity
from recq.evaluation.models import Histories
from recq.evaluation.protocol import Step

# Training sessions over items 0-4, in time order: {0,1,2}, {1,2}, {3,4}, {0,3}.
TRAIN = [
    [Step(0, 1, 1), Step(1, 1, 2), Step(2, 1, 3)],
    [Step(1, 1, 10), Step(2, 1, 11)],
    [Step(3, 1, 20), Step(4, 1, 21)],
    [Step(0, 1, 30), Step(3, 1, 31)],
]


def history(*items: int) -> Histories:
    return Histories.build([([Step(i, 1, 100 + t) for t, i in enumerate(items)], 200)])


def fitted(model):  # type: ignore[no-untyped-def]
    model.fit(TRAIN, 5, lambda n: None)
    return model


def test_s_pop_counts_the_session_and_breaks_ties_by_popularity() -> None:
    scores = fitted(SessionPopularity()).score(history(2, 2, 4))[0].tolist()
    # Session counts 2 (item 2) and 1 (item 4); global counts 2, 2, 2, 2, 1 scaled by 1/3.
    assert scores == pytest.approx([2 / 3, 2 / 3, 2 + 2 / 3, 2 / 3, 1 + 1 / 3])


def test_item_knn_is_the_cosine_of_session_sets_to_the_last_item() -> None:
    model = fitted(ItemKNN())
    # Item 1 is in sessions {0, 1}; item 2 in {0, 1}; item 0 in {0, 3}.
    assert model.score(history(4, 1))[0].tolist() == pytest.approx([0.5, 0.0, 1.0, 0.0, 0.0])
    # Item 3 is in {2, 3}; item 4 in {2}; item 0 in {0, 3}.
    expected = [0.5, 0.0, 0.0, 0.0, 1 / math.sqrt(2)]
    assert model.score(history(3))[0].tolist() == pytest.approx(expected)


def test_session_knn_sums_the_similarity_of_the_k_nearest_recent_sessions() -> None:
    # Current session {1, 3}: cosine 1/sqrt(6) with {0,1,2}, 1/2 with {1,2}, {3,4}, {0,3}.
    # k = 2 keeps the two most recent of the ties at 1/2: {0,3} and {3,4}.
    scores = fitted(SessionKNN(k=2, sample=500)).score(history(1, 3))[0].tolist()
    assert scores == pytest.approx([0.5, 0.0, 0.0, 1.0, 0.5])
    # A sample of 1 looks only at the most recent candidate, {0, 3}.
    scores = fitted(SessionKNN(k=2, sample=1)).score(history(1, 3))[0].tolist()
    assert scores == pytest.approx([0.5, 0.0, 0.0, 0.5, 0.0])
    # k = 4: every candidate counts, {0,1,2} with 1/sqrt(6).
    scores = fitted(SessionKNN(k=4, sample=500)).score(history(1, 3))[0].tolist()
    third = 1 / math.sqrt(6)
    assert scores == pytest.approx([0.5 + third, third + 0.5, third + 0.5, 1.0, 0.5])


def test_an_empty_history_scores_nothing_and_bad_settings_fail() -> None:
    assert fitted(SessionKNN()).score(history())[0].tolist() == [0.0] * 5
    assert fitted(ItemKNN()).score(history())[0].tolist() == [0.0] * 5
    with pytest.raises(ValueError, match="k >= 1"):
        SessionKNN(k=0)


def test_recq_evaluate_is_reproducible_and_reports_every_row(tmp_path, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Same log, seed and settings (two compute threads, where unordered parallel sums
    once moved the DQN rows): the same figures for every model, twice."""
    import io

    import torch
    from rich.console import Console

    from recq.evaluation.run import run_evaluation
    from simulator.offline import write_log

    log = tmp_path / "shop.jsonl"
    # Large enough that two threads summing in another order moved the DQN rows
    # (checked with deterministic algorithms off).
    write_log(log, n_shoppers=300, sessions_each=5, items=80, categories=4, seed=3)
    monkeypatch.setenv("RECQ_SUPERVISED_HEAD", "true")
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        runs = []
        for n in range(2):
            out = io.StringIO()
            report = run_evaluation(log, updates=100, seed=0, splits=["time"],
                                    out=tmp_path / f"out{n}", knn_k=5, knn_sample=20,
                                    console=Console(file=out, width=200))  # fmt: skip
            runs.append((report["splits"]["time"], out.getvalue()))
    finally:
        torch.set_num_threads(threads)
    (first, printed), (second, _) = runs
    # The served row follows the environment's settings, and the report says which.
    assert report["served_settings"]["RECQ_SUPERVISED_HEAD"] == "True"
    assert list(first["results"]) == ["s-pop", "item-knn", "session-knn", "popularity",
                                      "cooccurrence", "supervised", "dqn", "dqn+sqn",
                                      "served"]  # fmt: skip
    assert first["results"] == second["results"]
    assert first["versus_best_baseline"] == second["versus_best_baseline"]
    assert set(first["versus_best_baseline"]) == set(first["results"]) - {first["best_baseline"]}
    shares = first["target_shares"]
    assert shares["empty"] + shares["repeat"] + shares["new"] == pytest.approx(1.0, abs=1e-3)
    # Not a terminal: one line per stage in the log (no transient bars).
    assert "time: fit dqn: done 100 in" in printed and "time: rank with served: done" in printed
