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
from inference.state import ShopEvent, ShopperStates
from schemas.codec import decode, encode_recommendation
from schemas.exploration import Policy
from schemas.records import Recommendation, RecRequest

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

    def learn(self, event: ShopEvent, partition: int = -1) -> bool:
        """One event (read from ``partition``) into the shopper's state and popularity;
        False for a repeat, which counts once, as the streams worker counts it."""
        if not self.states.apply(event, partition):
            return False
        self.popularity.count(event)
        return True

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

    def answer_encoded(
        self, batch: list[Pending], model: SnapshotModel | None
    ) -> list[tuple[str, bytes]]:
        """(user_id, recommendation bytes) per request, in order: what serving publishes.
        One model call for the shoppers with history, popularity for the rest, one policy
        call for the whole batch, the bytes built directly (``encode_recommendation``)."""
        excluded = [self.excluded(p.request) for p in batch]
        # Per request: the candidates' ids (an index into the snapshot's catalog, or item
        # ids from popularity), their scores, and who ranked them.
        candidates: list[tuple[np.ndarray | list[str], np.ndarray, str]] = [
            ([], np.zeros(0), POPULARITY)
        ] * len(batch)
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
            keep = live(scores)
            version = str(model.version)
            for r, i in enumerate(rows):
                candidates[i] = (
                    indices[r][keep[r]],
                    scores[r][keep[r]].astype(np.float64),
                    version,
                )
        for i, pending in enumerate(batch):
            if candidates[i][2] == POPULARITY:
                ids, top = self.popularity.top(max(pending.request.k * 5, 50), excluded[i])
                candidates[i] = (ids, top, POPULARITY)
        choices = self.policy.choose_batch(
            [c[1] for c in candidates], [p.request.k for p in batch], self.rng
        )
        ANSWERED.labels("model").inc(len(rows))
        ANSWERED.labels(POPULARITY).inc(len(batch) - len(rows))
        served_ms = int(time.time() * 1000)
        out = []
        for pending, (ranked, top, version), choice in zip(batch, candidates, choices, strict=True):
            request = pending.request
            names = model.item_ids if model is not None and version != POPULARITY else None
            shown = [
                (names[int(ranked[j])] if names is not None else str(ranked[j]), float(top[j]), p)
                for j, p in zip(choice.positions, choice.propensities, strict=True)
            ]
            payload = encode_recommendation(
                rec_id=uuid.uuid4().hex, request_id=request.request_id, user_id=request.user_id,
                items=shown, model_version=version, policy=self.policy.name,
                requested_ts_ms=request.ts_ms, received_ts_ms=pending.received_ms,
                served_ts_ms=served_ms,
            )  # fmt: skip
            out.append((request.user_id, payload))
        return out

    def answer(self, batch: list[Pending], model: SnapshotModel | None) -> list[Recommendation]:
        """``answer_encoded``'s answers as records, decoded (and so validated against the
        contract) from the very bytes serving would publish: for tests and tools."""
        out: list[Recommendation] = []
        for _, payload in self.answer_encoded(batch, model):
            record = decode(payload, Recommendation)
            if not isinstance(record, Recommendation):
                raise ValueError(f"serving built an invalid recommendation: {record.reason}")
            out.append(record)
        return out
