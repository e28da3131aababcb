"""One check suite run over every state builder (as River runs one over every estimator):
the streams worker (training states), the serving members (request states) and offline
evaluation get the same event log, with cart removals, a repeated delivery, events out of
order within the reorder window, a late event, an item the serving snapshot does not know
yet and a multi-line purchase, and must build the same state. The expected state is
written by hand from the rules in schemas/features.py (and docs/streams.md), not computed by
any builder; the learner's network must accept every code and bucket they produce."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
import torch

from inference.state import ShopperStates
from learner.qnet import QNetwork
from recq.evaluation.logs import Skipped, read_interactions
from recq.evaluation.models import Histories, bought_or_carted
from recq.evaluation.protocol import Step, user_histories
from schemas.codec import Limits, Source, encode
from schemas.features import (
    DEFAULT_HISTORY_LENGTH,
    EVENT_CODES,
    N_AGE_BUCKETS,
    N_EVENT_CODES,
    encode_state,
)
from schemas.records import CartEvent, ClickEvent, LineItem, PurchaseEvent
from schemas.reward import Reward
from schemas.topics import EVENT_ROLES, TopicCatalog
from streams.assembler import TransitionAssembler
from streams.session import Rules, Sessionizer, UserSession
from streams.state import WriteThrough
from tests.streams.test_assembler import ListVocabulary

T0 = 1_790_000_000_000
L = DEFAULT_HISTORY_LENGTH
NOW = T0 + 30_000  # decision time: every interaction is 10 s - 1 min old -> bucket 2
REORDER_MS = 2_000
CATALOG = TopicCatalog(prefix="check.", partitions=1)
ShopEvent = ClickEvent | CartEvent | PurchaseEvent
State = tuple[list[str], list[int], list[int]]  # item ids, event codes, age buckets


def click(eid: str, at_s: float, item: str, user: str = "u1") -> ClickEvent:
    return ClickEvent(event_id=eid, user_id=user, ts_ms=T0 + int(at_s * 1000), item_id=item)


def cart(eid: str, at_s: float, item: str, action: str) -> CartEvent:
    return CartEvent(event_id=eid, user_id="u1", ts_ms=T0 + int(at_s * 1000), item_id=item,
                     action=action)  # type: ignore[arg-type]  # fmt: skip


# (event, wall-clock second it reaches the builders), in delivery order.
DELIVERY: list[tuple[ShopEvent, float]] = [
    (click("x", -6, "sku-x"), -6),
    (click("y", -5, "sku-y"), -5),
    (click("other", -4.5, "sku-a", user="u2"), -4.5),  # another shopper's: not u1's state
    (click("z", -4, "sku-z"), -4),
    (click("w", -3, "sku-w"), -3),
    (click("a1", 0, "sku-a"), 0),
    (click("b1", 3, "sku-b"), 3.1),  # before the cart add below: out of order,
    (cart("a2", 1, "sku-a", "add"), 3.2),  # inside the reorder window
    (cart("a2", 1, "sku-a", "add"), 3.3),  # the same event delivered again
    (cart("a3", 4, "sku-a", "remove"), 4),
    (click("n1", 5, "sku-new"), 5),  # an item the serving snapshot does not know yet
    (
        PurchaseEvent(
            event_id="p1",
            user_id="u1",
            ts_ms=T0 + 7_000,
            order_id="o1",
            items=[
                LineItem(item_id="sku-b", quantity=1, unit_price=5.0),
                LineItem(item_id="sku-c", quantity=2, unit_price=3.0),
            ],
        ),
        7,
    ),
    (click("d1", 2, "sku-d"), 20),  # late: everything after it was released long ago
]

# The rules applied by hand: u1's interactions in (event time, event_id, line) order,
# a2 once, the removal with code 4, one interaction per line item, the last L = 10.
#   x@-6 y@-5 | z@-4 w@-3 a1@0 a2@1 d1@2 b1@3 a3@4 n1@5 p1.0@7 p1.1@7
EXPECTED: State = (
    ["sku-z", "sku-w", "sku-a", "sku-a", "sku-d", "sku-b", "sku-a", "sku-new", "sku-b", "sku-c"],
    [1, 1, 1, 2, 1, 1, 4, 1, 3, 3],
    [2] * 10,
)


async def streams_state() -> tuple[State, dict[str, int]]:
    vocabulary = ListVocabulary()
    rules = Rules(history_length=L, reorder_window_ms=REORDER_MS, session_timeout_ms=3_600_000)
    assembler = TransitionAssembler(catalog=CATALOG, sessionizer=Sessionizer(rules),
                                    vocabulary=vocabulary, limits=Limits())  # fmt: skip
    table: dict[bytes, bytes] = {}
    sessions = WriteThrough(table)  # the per-event writes, over plain bytes
    for n, (event, wall_s) in enumerate(DELIVERY):
        await assembler.handle(
            sessions, key=event.user_id.encode(), value=encode(event),
            source=Source(CATALOG.name(EVENT_ROLES[event.type]), 0, n),
            wall_ms=T0 + int(wall_s * 1000),
        )  # fmt: skip
    session = UserSession.from_bytes(table[b"u1"])
    Sessionizer(rules).on_tick(session, "u1", wall_ms=T0 + 60_000)  # release the window
    assert not session.buffer
    ids = {i: item for item, i in vocabulary.index.items()}
    items = [ids[h[0]] for h in session.history]
    state = encode_state(session.history, NOW)
    return (items, state["events"], state["ages"]), vocabulary.index


def serving_state(index_of: dict[str, int]) -> State:
    states = ShopperStates(L)
    for event, _ in DELIVERY:
        states.apply(event)
    items, events, ages = states.arrays("u1", NOW, index_of, L)
    real = events > 0
    ids = {i: item for item, i in index_of.items()}
    return ([ids[int(i)] for i in items[real]], events[real].tolist(), ages[real].tolist())


def evaluation_state(tmp_path: Path) -> State:
    log = tmp_path / "shop.jsonl"
    log.write_bytes(b"\n".join(encode(event) for event, _ in DELIVERY))
    skipped = Skipped()
    history = user_histories(read_interactions(log, skipped))["u1"]
    assert skipped.total == 0
    index = {item: i for i, item in enumerate(sorted({x.item for x in history}))}
    steps = [Step(index[x.item], EVENT_CODES[x.event], x.ts_ms) for x in history]
    batch = Histories.build([(steps, NOW)])
    real = batch.events[0] > 0
    ids = {i: item for item, i in index.items()}
    return (
        [ids[int(i)] for i in batch.items[0][real]],
        batch.events[0][real].tolist(),
        batch.ages[0][real].tolist(),
    )


async def test_every_state_builder_builds_the_documented_state(tmp_path: Path) -> None:
    streams, vocabulary = await streams_state()
    builders: dict[str, Callable[[], State]] = {
        "serving": lambda: serving_state(vocabulary),
        "evaluation": lambda: evaluation_state(tmp_path),
    }
    assert streams == EXPECTED, "streams"
    for name, build in builders.items():
        assert build() == EXPECTED, name


def test_serving_and_evaluation_filter_the_same_items(tmp_path: Path) -> None:
    """What a served slate may not show after u1's events, by serving's state and by
    ``recq evaluate``'s served row: by hand, sku-a was added (a2, delivered twice) and
    removed (a3), so it is no longer in the cart; p1 bought sku-b and sku-c."""
    expected = {"sku-b", "sku-c"}
    states = ShopperStates(L)
    for event, _ in DELIVERY:
        states.apply(event)
    shopper = states.get("u1")
    assert shopper is not None
    assert shopper.purchased | shopper.cart == expected, "serving"
    log = tmp_path / "shop.jsonl"
    log.write_bytes(b"\n".join(encode(event) for event, _ in DELIVERY))
    history = user_histories(read_interactions(log, Skipped()))["u1"]
    index = {item: i for i, item in enumerate(sorted({x.item for x in history}))}
    steps = [Step(index[x.item], EVENT_CODES[x.event], x.ts_ms) for x in history]
    ids = {i: item for item, i in index.items()}
    assert {ids[i] for i in bought_or_carted(steps)} == expected, "evaluation"


@pytest.mark.parametrize(("weights", "total"), [(Reward(), 3.6), (Reward(revenue=0.1), 4.7)])
async def test_streams_and_the_simulators_scoring_agree_on_the_reward(
    weights: Reward, total: float
) -> None:
    """The documented weights by hand: 8 clicks x 0.2, a cart add 0.5, its removal -0.5, two
    purchase lines x 1.0 (the repeat counted once) = 3.6; with the revenue objective at
    0.1 per EUR, the order's 5.0 x 1 + 3.0 x 2 = 11 EUR adds 1.1. From the worker's organic
    transitions and from the Reward the simulator and the demo score sessions with."""
    rules = Rules(history_length=L, reorder_window_ms=REORDER_MS, session_timeout_ms=3_600_000,
                  reward=weights)  # fmt: skip
    sessionizer = Sessionizer(rules)
    assembler = TransitionAssembler(catalog=CATALOG, sessionizer=sessionizer,
                                    vocabulary=ListVocabulary(), limits=Limits())  # fmt: skip
    table: dict[bytes, bytes] = {}
    sessions = WriteThrough(table)  # the per-event writes, over plain bytes
    rewards: list[float] = []
    for n, (event, wall_s) in enumerate(DELIVERY):
        result = await assembler.handle(
            sessions, key=event.user_id.encode(), value=encode(event),
            source=Source(CATALOG.name(EVENT_ROLES[event.type]), 0, n),
            wall_ms=T0 + int(wall_s * 1000),
        )  # fmt: skip
        rewards += [orjson.loads(o.value)["reward"] for o in result.outputs if o.key == b"u1"]
    session = UserSession.from_bytes(table[b"u1"])
    rewards += [
        t["reward"] for t in sessionizer.on_tick(session, "u1", wall_ms=T0 + 10**8).transitions
    ]
    once = list({e.event_id: e for e, _ in DELIVERY if e.user_id == "u1"}.values())
    assert sum(rewards) == pytest.approx(total) == weights.of_events(once)


def test_serving_leaves_out_an_item_its_snapshot_does_not_know() -> None:
    index_of = {f"sku-{c}": i for i, c in enumerate("xyzwabcd")}  # no sku-new yet
    items, events, _ = serving_state(index_of)
    assert items == [i for i in EXPECTED[0] if i != "sku-new"] and len(events) == 9
    # once a snapshot knows it, the state is the full one (test above)


@pytest.mark.parametrize("encoder", ["gru", "transformer"])
async def test_the_learner_embeds_every_code_and_bucket_the_builders_produce(encoder: str) -> None:
    (_, events, ages), vocabulary = await streams_state()
    net = QNetwork(n_items=len(vocabulary), dim=8, history_length=L, encoder=encoder)  # type: ignore[arg-type]
    assert net.event.num_embeddings == N_EVENT_CODES == 1 + max(EVENT_CODES.values())
    assert net.age.num_embeddings == N_AGE_BUCKETS > 7
    every_code = torch.tensor([[0, *EVENT_CODES.values(), *[1] * (L - 1 - len(EVENT_CODES))]])
    every_bucket = torch.tensor([[0, *range(1, 8), 1, 1]])
    items = torch.zeros(1, L, dtype=torch.int64)
    for e, a in ((every_code, every_bucket), (torch.tensor([events]), torch.tensor([ages]))):
        _, user, _ = net.encode(items, e, a)
        assert torch.isfinite(user).all()
