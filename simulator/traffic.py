"""Simulated shoppers on Kafka: each step a shopper asks recq for a slate (a rec_request
on `rec-requests`, answered on `recommendations`), reacts to it, and its events go to
the event topics keyed by user_id, carrying the recommendation's rec_id and position.

Shoppers are split between arms: ``learned`` asks recq; ``coview`` (the control a shop
would deploy instead: session co-occurrence, ``simulator.controls``), ``popularity`` and
``random`` are computed here from the events this driver has produced, so the same
simulated shop measures them side by side. The baselines log their slates on
the recommendations topic like any policy recq could learn from (policy ``popularity`` /
``random``, model_version ``baseline``, with their propensities: random shows slot j
with 1 / (catalog - j)). ``oracle`` reads the shoppers' hidden tastes
(``simulator.session.oracle_slate``); its shoppers' events and slates are kept off Kafka,
so recq never learns from the oracle. A request recq does not answer within
``answer_timeout_s`` counts as unanswered and the shopper browses on its own. With
``impressions`` the shop reports each shown slate's rendered positions (explicit
impressions, ``RECQ_IMPRESSIONS=explicit``)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field

import numpy as np
from aiokafka import AIOKafkaProducer

from schemas.codec import encode
from schemas.records import (
    CatalogItem,
    ClickEvent,
    ImpressionEvent,
    Recommendation,
    RecommendedItem,
    RecRequest,
)
from schemas.reward import Reward
from schemas.topics import EVENT_ROLES, TopicCatalog, TopicRole
from simulator import metrics
from simulator.client import Answers
from simulator.controls import CoView
from simulator.session import SessionOutcome, ShoppingSession, Slate, oracle_slate
from simulator.shop import Catalog, Shopper, shoppers

ARMS = ("learned", "coview", "popularity", "random", "oracle")
#: Arms whose shoppers' events reach recq (the oracle's stay off Kafka).
LOGGED_ARMS = ("learned", "coview", "popularity", "random")
OBJECTIVES = ("clicks", "carts", "purchases", "revenue")


@dataclass
class ArmStats:
    sessions: int = 0
    reward: float = 0.0
    shown: int = 0
    clicked_shown: int = 0
    purchases: int = 0
    unanswered: int = 0
    versions: Counter[str] = field(default_factory=Counter)
    objectives: Counter[str] = field(default_factory=Counter)

    def add(self, outcome: SessionOutcome) -> None:
        self.sessions += 1
        self.reward += outcome.reward
        self.shown += outcome.shown
        self.clicked_shown += outcome.clicked_shown
        self.purchases += outcome.purchases
        self.objectives.update(outcome.objectives())

    def summary(self) -> dict[str, float]:
        n = max(1, self.sessions)
        return {
            "sessions": self.sessions,
            "reward_per_session": self.reward / n,
            "ctr": self.clicked_shown / max(1, self.shown),
            "conversion": self.purchases / n,
            "unanswered": self.unanswered,
            **{f"{name}_per_session": self.objectives[name] / n for name in OBJECTIVES},
        }


class Traffic:
    def __init__(
        self,
        *,
        catalog: Catalog,
        topics: TopicCatalog,
        producer: AIOKafkaProducer,
        answers: Answers,
        seed: int,
        k: int = 10,
        answer_timeout_s: float = 2.0,
        reward: Reward | None = None,
        impressions: bool = False,
    ) -> None:
        self.catalog = catalog
        self.reward = reward or Reward()  # how sessions are scored (schemas.reward)
        self.topics = topics
        self.producer = producer
        self.answers = answers
        self.rng = np.random.default_rng(seed)
        self.seed = seed
        self.k = k
        self.answer_timeout_s = answer_timeout_s
        self.impressions = impressions
        self.stats: dict[str, ArmStats] = defaultdict(ArmStats)
        #: The latest sessions (bounded: ``recq simulate --forever`` runs for days).
        self.sessions_log: deque[tuple[str, SessionOutcome]] = deque(maxlen=100_000)
        self.popularity: Counter[int] = Counter()
        self.coview = CoView(len(catalog))
        # Returning shoppers keep their cart and what they own between sessions.
        self.carts: dict[str, list[int]] = defaultdict(list)
        self.owned: dict[str, set[int]] = defaultdict(set)
        self.index_of = {item: i for i, item in enumerate(catalog.item_ids)}

    async def slate(self, arm: str, shopper: Shopper, history: list[int]) -> Slate | None:
        if arm == "oracle":
            user = shopper.user_id
            chosen = oracle_slate(self.catalog, shopper, self.k, self.reward,
                                  self.carts[user], self.owned[user])  # fmt: skip
            return (f"oracle-{uuid.uuid4().hex}", chosen)
        if arm == "random":
            drawn = [int(i) for i in self.rng.choice(len(self.catalog), self.k, replace=False)]
            n = len(self.catalog)
            return await self._logged(
                arm, shopper, drawn, [1.0 / (n - j) for j in range(len(drawn))]
            )
        if arm == "popularity":
            top = [i for i, _ in self.popularity.most_common(self.k)]
            return await self._logged(arm, shopper, top, [1.0] * len(top)) if top else None
        if arm == "coview":
            if not history:  # nothing to co-occur with: popularity, as serving falls back
                return await self.slate("popularity", shopper, history)
            scores = self.coview.scores(history)
            # The filters serving applies: nothing owned or already in the cart.
            scores[list(set(self.carts[shopper.user_id]) | self.owned[shopper.user_id])] = -np.inf
            top = [int(i) for i in np.argsort(-scores, kind="stable")[: self.k]]
            return await self._logged(arm, shopper, top, [1.0] * len(top))
        request = RecRequest(request_id=uuid.uuid4().hex, user_id=shopper.user_id, k=self.k,
                             ts_ms=int(time.time() * 1000))  # fmt: skip
        future = self.answers.expect(request.request_id)
        await self.producer.send(self.topics.name(TopicRole.REC_REQUESTS), encode(request),
                                 key=shopper.user_id.encode())  # fmt: skip
        try:
            answer = await asyncio.wait_for(future, self.answer_timeout_s)
        except TimeoutError:
            self.answers.forget(request.request_id)
            self.stats[arm].unanswered += 1
            return None
        self.stats[arm].versions[answer.model_version] += 1
        shown = [self.index_of[i.item_id] for i in answer.items if i.item_id in self.index_of]
        return (answer.rec_id, shown)

    async def publish_catalog(self) -> int:
        """Describe every item on the catalog topic (category, price; key = item id), as a
        shop's catalog service would: what the learner embeds as item features."""
        topic = self.topics.name(TopicRole.CATALOG)
        now = int(time.time() * 1000)
        for i, item_id in enumerate(self.catalog.item_ids):
            record = CatalogItem(item_id=item_id, category=self.catalog.category_name(i),
                                 price=float(self.catalog.price[i]), ts_ms=now)  # fmt: skip
            await self.producer.send(topic, encode(record), key=item_id.encode())
        await self.producer.flush()
        return len(self.catalog.item_ids)

    async def _logged(
        self, policy: str, shopper: Shopper, items: list[int], propensities: list[float]
    ) -> Slate:
        """A baseline's slate, published on the recommendations topic as a policy's would be."""
        now = int(time.time() * 1000)
        rec = Recommendation(
            rec_id=f"{policy}-{uuid.uuid4().hex}", request_id=uuid.uuid4().hex,
            user_id=shopper.user_id, model_version="baseline", policy=policy,
            items=[RecommendedItem(item_id=self.catalog.item_ids[i], score=0.0, propensity=p)
                   for i, p in zip(items, propensities, strict=True)],
            requested_ts_ms=now, received_ts_ms=now, served_ts_ms=now,
        )  # fmt: skip
        await self.producer.send(self.topics.name(TopicRole.RECOMMENDATIONS), encode(rec),
                                 key=shopper.user_id.encode())  # fmt: skip
        return (rec.rec_id, items)

    async def _report_impression(self, shopper: Shopper, slate: Slate) -> None:
        impression = ImpressionEvent(
            event_id=uuid.uuid4().hex, user_id=shopper.user_id, ts_ms=int(time.time() * 1000),
            rec_id=slate[0], positions=list(range(len(slate[1]))),
        )  # fmt: skip
        await self.producer.send(self.topics.name(TopicRole.IMPRESSIONS), encode(impression),
                                 key=shopper.user_id.encode())  # fmt: skip

    async def session(
        self,
        arm: str,
        shopper: Shopper,
        max_steps: int = 20,
        step_ms: int = 15_000,
        think_s: float = 0.0,
        live: bool = False,
    ) -> SessionOutcome:
        """One session; each step's slate is fetched (from recq for ``learned``) first.
        ``live``: events carry the wall-clock time they are produced at."""
        clock = (lambda: int(time.time() * 1000)) if live else None
        session = ShoppingSession(
            self.catalog, shopper, self.rng, int(time.time() * 1000), step_ms, clock,
            cart=self.carts[shopper.user_id], owned=self.owned[shopper.user_id],
            reward=self.reward,
        )  # fmt: skip
        for _ in range(max_steps):
            if session.ended:
                break
            if think_s:
                await asyncio.sleep(think_s)  # a shopper reads the page before acting
            slate = await self.slate(arm, shopper, list(session.history))
            logged = arm in LOGGED_ARMS
            if slate is not None and slate[1] and logged and self.impressions:
                await self._report_impression(shopper, slate)
            for event in session.step(slate):
                if not logged:
                    continue
                topic = self.topics.name(EVENT_ROLES[event.type])
                await self.producer.send(topic, encode(event), key=shopper.user_id.encode())
                if isinstance(event, ClickEvent):
                    self.popularity[self.index_of[event.item_id]] += 1
                    self.coview.observe(shopper.user_id, self.index_of[event.item_id])
        self.coview.end_session(shopper.user_id)
        self.stats[arm].add(session.outcome)
        metrics.record(arm, session.outcome)
        self.sessions_log.append((arm, session.outcome))
        return session.outcome

    async def run(
        self, n_shoppers: int, concurrency: int = 16, think_s: float = 0.0, live: bool = False
    ) -> dict[str, ArmStats]:
        """One session for each of ``n_shoppers`` (the same shoppers on every call, so
        calling again makes them returning shoppers), a quarter per arm."""
        population = shoppers(self.catalog, n_shoppers, self.seed)
        queue: asyncio.Queue[tuple[str, Shopper]] = asyncio.Queue()
        for i, s in enumerate(population):
            queue.put_nowait((ARMS[i % len(ARMS)], s))

        async def worker() -> None:
            while not queue.empty():
                arm, shopper = queue.get_nowait()
                await self.session(arm, shopper, think_s=think_s, live=live)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
        await self.producer.flush()
        return dict(self.stats)
