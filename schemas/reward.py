"""The reward, in one place: what each interaction earns. Read by the streams worker (the
reward of every transition), the simulator (a session's reward) and the demo's scoring
of its arms, all from the same ``RECQ_REWARD_*`` settings.

The reward is a weighted sum of objectives. An interaction earns the weight of its event
code (``schemas.features``): a click, a cart add, a cart removal (negative by default:
it takes back what the add earned), and each line item of a purchase; a purchased line
also earns ``revenue`` x its unit price x quantity (0 by default: the revenue objective
is off until a weight is set). A session's reward is the sum over its interactions.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from schemas.features import EVENT_CODES, interactions_of


@dataclass(frozen=True, slots=True)
class Reward:
    """Weights by event code. Built from ``RewardSettings`` (``from_settings``) in every
    process; the defaults here equal the settings' defaults (a test holds them equal)."""

    click: float = 0.2
    cart: float = 0.5
    purchase: float = 1.0
    cart_remove: float = -0.5
    revenue: float = 0.0

    def of(self, code: int, revenue: float = 0.0) -> float:
        """The reward of one interaction with event code ``code``; ``revenue``: its line's
        unit price x quantity (purchases only)."""
        if code == EVENT_CODES["click"]:
            return self.click
        if code == EVENT_CODES["cart"]:
            return self.cart
        if code == EVENT_CODES["purchase"]:
            return self.purchase + self.revenue * revenue
        if code == EVENT_CODES["cart_remove"]:
            return self.cart_remove
        raise ValueError(f"no reward for event code {code}")

    def of_events(self, events: Iterable[Any]) -> float:
        """The summed reward of shop events (click, cart, purchase records)."""
        return sum(self.of(x.code, x.revenue) for event in events for x in interactions_of(event))

    def slot_ceiling(self) -> float:
        """The most one shown slot is taken to earn: a click, a cart and a purchase of its
        item (revenue on top is counted as reaching the ceiling). The response model
        learns each slot's reward as a share of it."""
        return max(1e-6, max(self.click, 0.0) + max(self.cart, 0.0) + max(self.purchase, 0.0))

    def as_dict(self) -> dict[str, float]:
        return asdict(self)

    @classmethod
    def from_settings(cls, settings: Any) -> Reward:
        return cls(
            click=settings.reward_click,
            cart=settings.reward_cart,
            purchase=settings.reward_purchase,
            cart_remove=settings.reward_cart_remove,
            revenue=settings.reward_revenue,
        )
