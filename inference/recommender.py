"""Answering a micro-batch of requests: one model call for the shoppers with history,
popularity for the rest, filters, exploration, the recommendation records."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import numpy as np

from inference.metrics import ANSWERED, MODEL_LATENCY
from inference.model import SnapshotModel, live
from inference.policy import Popularity
from inference.state import ShopperStates
from schemas.exploration import Policy
from schemas.records import Recommendation, RecommendedItem, RecRequest

POPULARITY = "popularity"


@dataclass(frozen=True)
class Pending:
    request: RecRequest
    received_ms: int  # when this member consumed it
    produced_ms: int  # the request message's Kafka timestamp


class Recommender:
    def __init__(
        self,
        *,
        states: ShopperStates,
        popularity: Popularity,
        policy: Policy,
        blocklist: frozenset[str] = frozenset(),
        exclude_seen: bool = False,
        seed: int | None = None,
    ) -> None:
        self.states = states
        self.popularity = popularity
        self.policy = policy
        self.blocklist = blocklist
        self.exclude_seen = exclude_seen
        self.rng = np.random.default_rng(seed)

    def excluded(self, request: RecRequest) -> set[str]:
        """Item ids never shown for this request: bought, in the cart (known or sent with
        the request), excluded by the request, blocklisted; with ``exclude_seen``, also
        the shopper's last L interactions."""
        shopper = self.states.get(request.user_id)
        out = set(request.exclude_item_ids) | set(request.context.cart_item_ids) | self.blocklist
        if shopper is not None:
            out |= shopper.purchased | shopper.cart
            if self.exclude_seen:
                out.update(h[0] for h in shopper.history)
        return out

    def answer(self, batch: list[Pending], model: SnapshotModel | None) -> list[Recommendation]:
        excluded = [self.excluded(p.request) for p in batch]
        rows: list[int] = []
        if model is not None:
            length = model.history_length
            self.states.keep_at_least(length)  # the snapshot's L, not a setting of ours
            # Ages as of the request (the decision time the shop stamped on it).
            arrays = [
                self.states.arrays(p.request.user_id, p.request.ts_ms, model.index_of, length)
                for p in batch
            ]
            rows = [i for i, (_, events, _) in enumerate(arrays) if events.any()]
        answers: dict[int, tuple[list[str], np.ndarray, str]] = {}
        if rows and model is not None:
            width = max(1, max(len(excluded[i]) for i in rows))
            exclude = np.full((len(rows), width), -1, np.int64)
            for r, i in enumerate(rows):
                known = [model.index_of[x] for x in excluded[i] if x in model.index_of]
                exclude[r, : len(known)] = known
            items = np.stack([arrays[i][0] for i in rows])
            events = np.stack([arrays[i][1] for i in rows])
            ages = np.stack([arrays[i][2] for i in rows])
            start = time.perf_counter()
            indices, scores = model.predict(items, events, ages, exclude)
            MODEL_LATENCY.observe((time.perf_counter() - start) * 1000)
            for r, i in enumerate(rows):
                keep = live(scores[r])
                ids = [model.item_ids[j] for j in indices[r][keep]]
                answers[i] = (ids, scores[r][keep].astype(np.float64), str(model.version))
        out = []
        for i, pending in enumerate(batch):
            request = pending.request
            if i in answers:
                ids, scores, version = answers[i]
            else:
                ids, scores = self.popularity.top(max(request.k * 5, 50), excluded[i])
                version = POPULARITY
            choice = self.policy.choose(scores, request.k, self.rng)
            ANSWERED.labels("model" if version != POPULARITY else POPULARITY).inc()
            out.append(
                Recommendation(
                    rec_id=uuid.uuid4().hex,
                    request_id=request.request_id,
                    user_id=request.user_id,
                    items=[
                        RecommendedItem(item_id=ids[j], score=float(scores[j]), propensity=p)
                        for j, p in zip(choice.positions, choice.propensities, strict=True)
                    ],
                    model_version=version,
                    policy=self.policy.name,
                    requested_ts_ms=request.ts_ms,
                    received_ts_ms=pending.received_ms,
                    served_ts_ms=int(time.time() * 1000),
                )
            )
        return out
