"""Offline evaluation: the log readers on small handwritten files, the protocol's
filtering and splits, ranking metrics against hand-computed values, and the baselines'
scores on a tiny log."""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from rich.console import Console

from recq.evaluation.logs import LoggedInteraction, Skipped, log_format, read_interactions
from recq.evaluation.metrics import Targets, breakdown, paired_difference, summary, target_ranks
from recq.evaluation.models import CoOccurrence, Histories, Popularity
from recq.evaluation.progress import StageLog
from recq.evaluation.protocol import Step, sessions_of, split
from schemas.codec import encode
from schemas.records import ClickEvent, LineItem, PurchaseEvent
from simulator.offline import write_log

RETAILROCKET = """timestamp,visitorid,event,itemid,transactionid
1433221332117,257597,view,355908,
1433224214164,992329,view,248676,
1433221999827,257597,addtocart,355908,
1433222000000,257597,transaction,355908,4000
1433221955914,257597,view,248676,
1433223236124,111016,wishlist,318965,
1433223236125,,view,318965,
1433223236126,111016,view
"""


def test_retailrocket_rows_become_recq_interactions(tmp_path: Path) -> None:
    path = tmp_path / "events.csv"
    path.write_text(RETAILROCKET)
    assert log_format(path) == "retailrocket"
    skipped = Skipped()
    got = read_interactions(path, skipped)
    assert [(x.user, x.ts_ms, x.item, x.event, x.line) for x in got] == [
        ("257597", 1433221332117, "355908", "click", 2),
        ("992329", 1433224214164, "248676", "click", 3),
        ("257597", 1433221999827, "355908", "cart", 4),
        ("257597", 1433222000000, "355908", "purchase", 5),
        ("257597", 1433221955914, "248676", "click", 6),
    ]
    assert dict(skipped.reasons) == {
        "unknown_event": 1, "missing_field": 1, "wrong_column_count": 1,
    }  # fmt: skip
    assert skipped.examples["unknown_event"] == [7]


def test_jsonl_reads_the_event_contract_and_counts_bad_lines(tmp_path: Path) -> None:
    click = ClickEvent(event_id="e1", user_id="u1", ts_ms=1_600_000_000_000, item_id="a")
    order = PurchaseEvent(
        event_id="e2", user_id="u1", ts_ms=1_600_000_001_000, order_id="o1",
        items=[LineItem(item_id="a", quantity=1, unit_price=2.0),
               LineItem(item_id="b", quantity=2, unit_price=1.0)],
    )  # fmt: skip
    path = tmp_path / "log.jsonl"
    path.write_bytes(encode(click) + b"\n" + b'{"type": "click"}\n\n' + encode(order) + b"\n")
    assert log_format(path) == "jsonl"
    skipped = Skipped()
    got = read_interactions(path, skipped)
    assert [(x.item, x.event, x.line) for x in got] == [
        ("a", "click", 1), ("a", "purchase", 4), ("b", "purchase", 4),
    ]  # fmt: skip
    assert skipped.total == 1 and skipped.examples[next(iter(skipped.reasons))] == [2]


def test_diginetica_and_session_rec_rows_become_clicks(tmp_path: Path) -> None:
    digi = tmp_path / "train-item-views.csv"
    digi.write_text(
        "session_id;user_id;item_id;timeframe;eventdate\n"
        "1;NA;81766;526309;2016-05-09\n"
        "1;NA;31331;x;2016-05-09\n"
        "2;NA;32118;0;09.05.2016\n"
    )
    assert log_format(digi) == "diginetica"
    skipped = Skipped()
    # 2016-05-09T00:00:00Z is 1,462,752,000 s after the epoch.
    assert [(x.user, x.ts_ms, x.item, x.event) for x in read_interactions(digi, skipped)] == [
        ("1", 1_462_752_000_000 + 526_309, "81766", "click")
    ]
    assert dict(skipped.reasons) == {"missing_field": 1, "invalid_field": 1}
    rec = tmp_path / "yoochoose-clicks-100k_test.txt"
    rec.write_text("SessionId\tItemId\tTime\n3\t214716935\t1396437466.94\n3\t21\n")
    assert log_format(rec) == "sessionrec"
    skipped = Skipped()
    got = read_interactions(rec, skipped)
    assert [(x.user, x.ts_ms, x.item) for x in got] == [("3", 1_396_437_466_940, "214716935")]
    assert dict(skipped.reasons) == {"wrong_column_count": 1}


def test_progress_in_a_log_is_a_line_per_interval_with_rate_and_eta() -> None:
    out = io.StringIO()
    now = [0.0]
    stages = StageLog(Console(file=out, width=200), interval=10.0, clock=lambda: now[0])
    with stages.stage("time: fit dqn", 100) as advance:
        for _ in range(4):
            now[0] += 5.0
            advance(10)  # 10 per 5 s: a line at 10 s and at 20 s
    assert out.getvalue().splitlines() == [
        "time: fit dqn: 20/100 (20%), 2.0/s, ETA 40 s",
        "time: fit dqn: 40/100 (40%), 2.0/s, ETA 30 s",
        "time: fit dqn: done 40 in 20.0 s, 2.0/s",
    ]


def test_unknown_format_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match=r"not a RetailRocket events\.csv"):
        log_format(path)


def _log(tmp_path: Path, script: dict[str, list[str]], ts: int = 1_433_221_332_117) -> Path:
    """A RetailRocket log of views, visitor by visitor, one second apart."""
    rows = ["timestamp,visitorid,event,itemid,transactionid"]
    for visitor, items in script.items():
        for item in items:
            ts += 1_000
            rows.append(f"{ts},{visitor},view,{item},")
    path = tmp_path / "events.csv"
    path.write_text("\n".join(rows) + "\n")
    return path


def test_item_filter_counts_training_sessions_only(tmp_path: Path) -> None:
    # Ten visitors in time order: the last one is the test (time split, 80/10/10).
    # Item z is frequent in the test session only: training saw it twice (< 3), so it
    # is removed everywhere and its test interactions are counted, not ranked.
    script = {f"v{i}": ["x", "y", "x"] for i in range(7)}
    script["v7"] = ["y", "z", "x", "z"]  # train: z's 1st and 2nd interaction
    script["v8"] = ["x", "y", "x"]  # validation
    script["v9"] = ["z", "x", "z", "y", "z", "x"]  # test: z four... three times
    script["u0"] = ["x", "y"]  # two interactions: dropped before the split
    sessions = sessions_of(read_interactions(_log(tmp_path, script), Skipped()))
    assert len(sessions) == 10
    got = split(sessions, "time")
    assert got.items == ["x", "y"]  # z: 2 training interactions
    assert [[s.item for s in xs] for xs in got.test] == [[0, 1, 0]]
    assert (got.unknown_test_interactions, got.raw_test_interactions) == (3, 6)
    # v7 keeps y, x: two interactions, dropped after the filter.
    assert len(got.train) == 7 and all(len(xs) == 3 for xs in got.train)


def _visitors(n: int) -> list[list[LoggedInteraction]]:
    return [
        [LoggedInteraction(f"v{i:03d}", 1000 * (n - i) + t, "abc"[t], "click", 1, f"e{i}-{t}")
         for t in range(3)]
        for i in range(n)
    ]  # fmt: skip


def test_random_split_is_80_10_10_and_seeded() -> None:
    sessions = _visitors(50)
    a, b = split(sessions, "random", seed=1), split(sessions, "random", seed=1)
    assert (len(a.train), len(a.validation), len(a.test)) == (40, 5, 5)
    assert a == b and split(sessions, "random", seed=2) != a


def test_time_split_tests_on_the_latest_sessions() -> None:
    got = split(_visitors(50), "time")
    latest_train = max(xs[0].ts_ms for xs in got.train)
    assert all(xs[0].ts_ms > latest_train for xs in got.validation + got.test)
    with pytest.raises(ValueError, match="unknown split"):
        split(_visitors(50), "weekly")


def test_ranks_count_ties_against_the_target_and_hr_ndcg_by_hand() -> None:
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.5, 0.3],  # target 2: one item higher -> rank 1
            [0.2, 0.8, 0.1, 0.0],  # target 1: rank 0
            [0.1, 0.2, 0.3, 0.4],  # target 0: rank 3
            [0.0, 0.0, 0.0, 0.0],  # target 3: three items tie with it -> rank 3
            [0.9, 0.7, 0.7, 0.1],  # target 2: one higher, one tied -> rank 2
        ]
    )
    ranks = target_ranks(scores, torch.tensor([2, 1, 0, 3, 2]))
    assert ranks.tolist() == [1, 0, 3, 3, 2]
    got = summary(ranks.numpy()[:3], ks=(1, 2, 4))
    assert got["targets"] == 3
    assert got["hr@1"] == pytest.approx(1 / 3, abs=1e-4)
    assert got["hr@2"] == pytest.approx(2 / 3, abs=1e-4)
    assert got["ndcg@2"] == pytest.approx((1 / math.log2(3) + 1.0) / 3, abs=1e-4)
    assert got["hr@4"] == 1.0
    assert got["ndcg@4"] == pytest.approx((1 / math.log2(3) + 1 + 1 / math.log2(5)) / 3, abs=1e-4)


def test_targets_are_grouped_empty_repeat_new_and_reported_apart() -> None:
    sessions = [[Step(0, 1, 1), Step(1, 1, 2), Step(0, 1, 3)], [Step(2, 1, 1), Step(3, 3, 2)]]
    targets = Targets.of(sessions)
    assert targets.group.tolist() == ["empty", "new", "repeat", "empty", "new"]
    assert targets.kind.tolist() == ["click"] * 4 + ["purchase"]
    assert targets.session.tolist() == [0, 0, 0, 1, 1]
    assert targets.shares() == {"empty": 0.4, "repeat": 0.2, "new": 0.4,
                                "filtered_by_serving": 0.0}  # fmt: skip
    bought = Targets.of([[Step(5, 2, 1), Step(5, 3, 2), Step(5, 1, 3), Step(6, 1, 4)]])
    # Cart 5, buy 5 (in the cart: forbidden), view 5 (bought: forbidden), view 6.
    assert bought.filtered.tolist() == [False, True, True, False]
    by = breakdown(np.array([0, 30, 4, 25, 0]), targets)
    assert by["all"]["hr@20"] == 0.6 and by["all"]["targets"] == 5
    assert by["empty"]["hr@20"] == 0.5 and by["new"]["hr@20"] == 0.5
    assert by["repeat"]["hr@5"] == 1.0 and by["repeat"]["ndcg@5"] == pytest.approx(
        1 / math.log2(6), abs=1e-4
    )
    assert by["purchase"]["hr@5"] == 1.0 and by["click"]["hr@5"] == 0.5


def test_paired_difference_resamples_sessions() -> None:
    targets = Targets.of([[Step(0, 1, t) for t in range(4)] for _ in range(30)])
    base = np.full(len(targets), 50)
    same = paired_difference(base, base, targets, "hr@20")
    assert (same.estimate, same.low, same.high) == (0.0, 0.0, 0.0)
    # The model hits every target of the first 15 sessions, where the baseline misses.
    model = np.where(targets.session < 15, 0, 50)
    got = paired_difference(model, base, targets, "hr@20", resamples=2000)
    assert got.estimate == 0.5 and got.low < 0.5 < got.high
    assert got.low > 0.25 and got.high < 0.75  # about +-1.96 * sqrt(.25 / 30) = .18
    assert paired_difference(model, base, targets, "hr@20", resamples=2000) == got  # seeded


def test_serving_filters_follow_the_cart_and_purchases() -> None:
    # Cart 1, cart 2, remove 2, buy 3, view 4: serving would not show 1 (in the cart)
    # nor 3 (bought); 2 left the cart; with exclude_seen every item of the history.
    history = [Step(1, 2, 1), Step(2, 2, 2), Step(2, 4, 3), Step(3, 3, 4), Step(4, 1, 5)]
    batch = Histories.build([(history, 10), ([], 10)])
    assert batch.excluded(exclude_seen=False) == [frozenset({1, 3}), frozenset()]
    assert batch.excluded(exclude_seen=True) == [frozenset({1, 2, 3, 4}), frozenset()]


def test_baselines_score_what_they_counted() -> None:
    train = [
        [Step(0, 1, 1), Step(1, 1, 2), Step(2, 1, 3)],
        [Step(0, 1, 1), Step(1, 1, 2)],
        [Step(3, 1, 1), Step(3, 1, 2), Step(3, 1, 3)],
    ]
    popularity = Popularity()
    popularity.fit(train, 4, lambda n: None)
    batch = Histories.build([([Step(0, 1, 5)], 10), ([], 10)])
    assert popularity.score(batch).tolist() == [[2, 2, 1, 3]] * 2
    pairs = CoOccurrence()
    pairs.fit(train, 4, lambda n: None)
    got = pairs.score(batch)
    # Popularity scaled below one co-occurrence: counts / (max + 1) = [2, 2, 1, 3] / 4.
    # After item 0: co-occurred with 1 twice (within the window), with 2 once, 3 never.
    assert got.tolist() == [
        pytest.approx([0.5, 0.5 + 2.0, 0.25 + 1.0, 0.75]),
        pytest.approx([0.5, 0.5, 0.25, 0.75]),
    ]


def test_offline_simulator_log_is_deterministic(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    kwargs = {"n_shoppers": 30, "sessions_each": 3, "items": 100, "categories": 5}
    n = write_log(a, seed=4, **kwargs)
    write_log(b, seed=4, **kwargs)
    write_log(c, seed=5, **kwargs)
    assert n > 0 and a.read_bytes() == b.read_bytes() != c.read_bytes()
    assert len(read_interactions(a, Skipped())) >= n
