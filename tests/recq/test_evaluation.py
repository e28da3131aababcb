"""Offline evaluation: the log readers on small handwritten files, the protocol's
filtering and splits, ranking metrics against hand-computed values, and the baselines'
scores on a tiny log."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from recq.evaluation.logs import Skipped, log_format, read_interactions
from recq.evaluation.metrics import RankingMetrics, target_ranks
from recq.evaluation.models import CoOccurrence, Histories, Popularity
from recq.evaluation.protocol import Dataset, Step, build_dataset, split_random, split_time
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


def test_unknown_format_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "x.csv"
    path.write_text("a,b,c\n1,2,3\n")
    with pytest.raises(ValueError, match=r"not a RetailRocket events\.csv"):
        log_format(path)


def test_protocol_drops_rare_items_then_short_sessions(tmp_path: Path) -> None:
    rows = ["timestamp,visitorid,event,itemid,transactionid"]
    # items x, y: 3+ interactions; z: 2 (dropped). Visitor v3 keeps 2 after z goes: dropped.
    script = {
        "v1": ["x", "y", "x", "z"],
        "v2": ["y", "x", "y"],
        "v3": ["x", "z", "y"],
        "v4": ["y"],
    }
    ts = 1_433_221_332_117
    for visitor, items in script.items():
        for item in items:
            ts += 1_000
            rows.append(f"{ts},{visitor},view,{item},")
    path = tmp_path / "events.csv"
    path.write_text("\n".join(rows) + "\n")
    dataset = build_dataset(read_interactions(path, Skipped()))
    assert dataset.items == ["x", "y"]
    assert [[s.item for s in xs] for xs in dataset.sessions] == [[0, 1, 0], [1, 0, 1]]
    assert all(s.code == 1 for xs in dataset.sessions for s in xs)


def _sessions(n: int) -> Dataset:
    return Dataset(
        items=["a", "b", "c"],
        sessions=[[Step(i % 3, 1, 1000 * (n - i) + t) for t in range(3)] for i in range(n)],
    )


def test_random_split_is_80_10_10_and_seeded() -> None:
    dataset = _sessions(50)
    a, b = split_random(dataset, seed=1), split_random(dataset, seed=1)
    assert (len(a.train), len(a.validation), len(a.test)) == (40, 5, 5)
    assert a == b and split_random(dataset, seed=2) != a
    assert sorted(map(id, a.train + a.validation + a.test)) == sorted(map(id, dataset.sessions))


def test_time_split_tests_on_the_latest_sessions() -> None:
    split = split_time(_sessions(50))
    latest_train = max(xs[0].ts_ms for xs in split.train)
    assert all(xs[0].ts_ms > latest_train for xs in split.validation + split.test)


def test_ranks_hr_and_ndcg_by_hand() -> None:
    scores = torch.tensor(
        [
            [0.9, 0.1, 0.5, 0.3],  # target 2: one item higher -> rank 1
            [0.2, 0.8, 0.1, 0.0],  # target 1: rank 0
            [0.1, 0.2, 0.3, 0.4],  # target 0: rank 3
        ]
    )
    ranks = target_ranks(scores, torch.tensor([2, 1, 0]))
    assert ranks.tolist() == [1, 0, 3]
    metrics = RankingMetrics(ks=(1, 2, 4))
    metrics.add(ranks, ["click", "click", "purchase"])
    got = metrics.summary()
    assert got["click"]["targets"] == 2
    assert got["click"]["hr@1"] == 0.5 and got["click"]["hr@2"] == 1.0
    assert got["click"]["ndcg@1"] == pytest.approx(0.5)
    assert got["click"]["ndcg@2"] == pytest.approx((1.0 + 1 / math.log2(3)) / 2)
    assert got["purchase"]["hr@2"] == 0.0 and got["purchase"]["hr@4"] == 1.0
    assert got["purchase"]["ndcg@4"] == pytest.approx(1 / math.log2(5))


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
