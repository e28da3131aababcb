"""The topic catalog: every recq topic's name, partition count, retention and cleanup.

Event topics and the request topic are co-partitioned by ``user_id`` (same key, same
partition count, default partitioner), so one worker sees all of a shopper's events and
requests. That count is ``RECQ_PARTITIONS`` and cannot change once the topics exist.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal

from schemas.records import EventType

DAY_MS = 24 * 3600 * 1000


class TopicRole(StrEnum):
    """What a topic carries; names are the topic's suffix after the prefix."""

    CLICKS = "events.click"
    CARTS = "events.cart"
    PURCHASES = "events.purchase"
    IMPRESSIONS = "events.impression"
    REC_REQUESTS = "rec-requests"
    RECOMMENDATIONS = "recommendations"
    TRANSITIONS = "transitions"
    ITEM_VOCABULARY = "item-vocabulary"
    SNAPSHOTS = "snapshots"
    DEAD_LETTER = "dead-letter"
    SESSION_TICKS = "session-ticks"
    CATALOG = "catalog"


EVENT_ROLES: dict[EventType, TopicRole] = {
    "click": TopicRole.CLICKS,
    "cart": TopicRole.CARTS,
    "purchase": TopicRole.PURCHASES,
}


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """One topic as recq creates it."""

    role: TopicRole
    name: str
    partitions: int
    co_partitioned: bool
    cleanup_policy: Literal["delete", "compact"]
    retention_ms: int  # -1 keeps forever
    extra_config: dict[str, str] = field(default_factory=dict)

    def config(self) -> dict[str, str]:
        return {
            "cleanup.policy": self.cleanup_policy,
            "retention.ms": str(self.retention_ms),
            **self.extra_config,
        }


@dataclass(frozen=True, slots=True)
class TopicCatalog:
    """All topics for one prefix and partition count."""

    prefix: str
    partitions: int

    def name(self, role: TopicRole) -> str:
        return f"{self.prefix}{role.value}"

    def spec(self, role: TopicRole) -> TopicSpec:
        return next(spec for spec in self.specs() if spec.role is role)

    def specs(self) -> list[TopicSpec]:
        p = self.partitions
        co = [
            (TopicRole.CLICKS, 7 * DAY_MS),
            (TopicRole.CARTS, 7 * DAY_MS),
            (TopicRole.PURCHASES, 30 * DAY_MS),
            # Which positions of a recommendation the shop rendered (explicit impressions).
            (TopicRole.IMPRESSIONS, 3 * DAY_MS),
            (TopicRole.REC_REQUESTS, 1 * DAY_MS),
        ]
        specs = [TopicSpec(role, self.name(role), p, True, "delete", keep) for role, keep in co]
        specs += [
            # Keyed by user_id and co-partitioned: the streams worker that owns a user
            # joins later events carrying rec_id to what was shown.
            TopicSpec(
                TopicRole.RECOMMENDATIONS,
                self.name(TopicRole.RECOMMENDATIONS),
                p,
                True,
                "delete",
                3 * DAY_MS,
            ),
            # The replay store's durable log: kept long enough to refill a restarted learner.
            TopicSpec(
                TopicRole.TRANSITIONS,
                self.name(TopicRole.TRANSITIONS),
                p,
                False,
                "delete",
                7 * DAY_MS,
            ),
            # Item claims, in one totally ordered partition: an item's index is the rank of
            # its first claim. Never compacted or expired: compaction would drop first
            # claims of re-claimed items and shift every later rank.
            TopicSpec(
                TopicRole.ITEM_VOCABULARY,
                self.name(TopicRole.ITEM_VOCABULARY),
                1,
                False,
                "delete",
                -1,
                {"retention.bytes": "-1"},
            ),
            # Timer-driven "is this session idle?" nudges, keyed by user_id and
            # co-partitioned so the worker owning the user's state handles them.
            TopicSpec(
                TopicRole.SESSION_TICKS,
                self.name(TopicRole.SESSION_TICKS),
                p,
                True,
                "delete",
                1 * DAY_MS,
            ),
            # Item descriptions (catalog_item, key = item_id): compacted, so the newest
            # description of every item is kept for as long as the item exists.
            TopicSpec(TopicRole.CATALOG, self.name(TopicRole.CATALOG), 1, False, "compact", -1),
            # One partition: announcements are totally ordered by version.
            TopicSpec(
                TopicRole.SNAPSHOTS, self.name(TopicRole.SNAPSHOTS), 1, False, "delete", 7 * DAY_MS
            ),
            # Dead letters carry the original payload base64-encoded inside JSON: allow
            # letters for the largest payload a source topic accepts (1 MiB default).
            TopicSpec(
                TopicRole.DEAD_LETTER,
                self.name(TopicRole.DEAD_LETTER),
                1,
                False,
                "delete",
                30 * DAY_MS,
                {"max.message.bytes": str(8 * 1024 * 1024)},
            ),
        ]
        return specs

    def co_partitioned(self) -> list[TopicSpec]:
        return [spec for spec in self.specs() if spec.co_partitioned]
