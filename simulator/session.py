"""Shopping sessions that react to what they are shown.

Each step the shopper may be shown a slate (by the ``recommend`` callback: item indices in
slot order, plus the recommendation's id). They examine slots with a position bias and
click a shown item with probability sigmoid(utility - 2); otherwise they browse on their
own with probability 0.45 (a complement of the last item, or what looks best to them of
20 random items: the organic utility, which differs in a shop where browsing misleads)
and leave with 0.55, so what is shown decides how long a session lasts. A clicked item is
put in the cart with probability sigmoid(utility - 3) (if affordable, not owned and not
already in the cart), and a session with a cart checks out with probability 0.3 per step
(a purchase of the cart, which ends the session; the items are then owned). A returning
shopper's cart and owned items carry over between sessions when the caller keeps them
(``Traffic`` does), as in a real shop. Sessions also end by leaving (probability 0.12
per step) or after ``max_steps``. Events responding to a slate carry its ``rec_id``
and the ``position``.

A session's reward is its events scored by ``schemas.reward.Reward`` (the caller passes
the configured weights; default: recq's defaults), the same definition the streams
worker rewards transitions with, so it is what the learner optimizes.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from schemas.records import CartEvent, ClickEvent, LineItem, PurchaseEvent
from schemas.reward import Reward
from simulator.shop import Catalog, Shopper, utility

POSITION_BIAS = 0.85  # probability of examining slot j is POSITION_BIAS ** j
CLICK_BAR = 2.0  # a shown item is clicked with probability sigmoid(utility - CLICK_BAR)
CART_BAR = 3.0  # a clicked, affordable item is carted with probability sigmoid(utility - CART_BAR)
BROWSE_ON = 0.45  # when no shown item is clicked: probability of browsing on (else leave)

ShopEvent = ClickEvent | CartEvent | PurchaseEvent
Slate = tuple[str, list[int]]  # (rec_id, item indices in slot order)
Recommend = Callable[[Shopper, list[int]], Slate | None]  # (shopper, history) -> slate


@dataclass
class SessionOutcome:
    events: list[ShopEvent] = field(default_factory=list)
    reward: float = 0.0
    shown: int = 0  # slates shown
    clicked_shown: int = 0  # clicks on a shown item
    purchases: int = 0  # orders
    # The objectives the reward weighs (schemas.reward): counts and revenue.
    clicks: int = 0
    carts: int = 0
    revenue: float = 0.0

    def objectives(self) -> dict[str, float]:
        return {"clicks": self.clicks, "carts": self.carts, "purchases": self.purchases,
                "revenue": self.revenue}  # fmt: skip


def _sigmoid(x: np.ndarray | float) -> np.ndarray | float:
    return 1.0 / (1.0 + np.exp(-x))


class ShoppingSession:
    """One shopper's session, advanced a step at a time with the slate shown at that
    step (None: nothing shown). ``ended`` once they leave or check out."""

    def __init__(
        self, catalog: Catalog, shopper: Shopper, rng: np.random.Generator, start_ms: int,
        step_ms: int = 15_000, clock: Callable[[], int] | None = None,
        cart: list[int] | None = None, owned: set[int] | None = None,
        reward: Reward | None = None,
    ) -> None:  # fmt: skip
        self.catalog, self.shopper, self.rng = catalog, shopper, rng
        self.reward = reward or Reward()
        self.step_ms = step_ms
        #: Live sessions stamp events with this clock (ms) instead of simulated steps, so
        #: event time never runs ahead of the wall clock a live pipeline measures.
        self.clock = clock
        self.ts = start_ms
        self.history: list[int] = []
        #: A returning shopper's cart and what they bought before (the caller keeps them
        #: across sessions): nobody carts what they own or already have in the cart.
        self.cart: list[int] = cart if cart is not None else []
        self.owned: set[int] = owned if owned is not None else set()
        self.outcome = SessionOutcome()
        self.ended = False

    def _event_id(self) -> str:
        return uuid.UUID(int=int(self.rng.integers(0, 2**63)) << 64 | len(self.outcome.events)).hex

    def _likes(self, item: int, bar: float) -> bool:
        u = float(utility(self.catalog, self.shopper, np.array([item]))[0])
        return bool(self.rng.random() < float(_sigmoid(u - bar)))

    def step(self, slate: Slate | None) -> list[ShopEvent]:
        """The shopper's events at this step (empty when they leave instead)."""
        if self.ended:
            return []
        catalog, shopper, rng, out = self.catalog, self.shopper, self.rng, self.outcome
        gap = int(rng.integers(self.step_ms // 2, self.step_ms * 2))
        self.ts = max(self.ts + 1, self.clock()) if self.clock else self.ts + gap
        clicked, rec_id, position = None, None, None
        if slate is not None and slate[1]:
            out.shown += 1
            for j, item in enumerate(slate[1]):
                if rng.random() > POSITION_BIAS**j:
                    continue  # not examined
                if self._likes(item, CLICK_BAR):
                    clicked, rec_id, position = item, slate[0], j
                    out.clicked_shown += 1
                    break
        if clicked is None:
            if rng.random() > BROWSE_ON:
                self.ended = True  # nothing caught their eye: they leave
                return []
            if self.history and rng.random() < 0.5:
                clicked = int(rng.choice(catalog.complements[self.history[-1]]))
            else:
                pool = rng.integers(len(catalog), size=20)
                u = utility(catalog, shopper, pool, organic=True)
                clicked = int(pool[np.argmax(u + rng.gumbel(size=len(pool)))])
        attribution = {"rec_id": rec_id, "position": position} if rec_id else {}
        events: list[ShopEvent] = [
            ClickEvent(
                event_id=self._event_id(), user_id=shopper.user_id, ts_ms=self.ts,
                item_id=catalog.item_ids[clicked], **attribution,  # type: ignore[arg-type]
            )
        ]  # fmt: skip
        self.history.append(clicked)
        out.clicks += 1
        if (
            catalog.price[clicked] <= shopper.budget
            and clicked not in self.owned
            and clicked not in self.cart
            and self._likes(clicked, CART_BAR)
        ):
            self.ts += 1 if self.clock else 1_000
            events.append(
                CartEvent(
                    event_id=self._event_id(), user_id=shopper.user_id, ts_ms=self.ts,
                    item_id=catalog.item_ids[clicked], action="add",
                    unit_price=float(catalog.price[clicked]), **attribution,  # type: ignore[arg-type]
                )
            )  # fmt: skip
            self.cart.append(clicked)
            out.carts += 1
        if self.cart and rng.random() < 0.3:
            self.ts += 1 if self.clock else 2_000
            lines = [
                LineItem(
                    item_id=catalog.item_ids[i], quantity=1, unit_price=float(catalog.price[i])
                )
                for i in dict.fromkeys(self.cart)
            ]
            events.append(
                PurchaseEvent(
                    event_id=self._event_id(), user_id=shopper.user_id, ts_ms=self.ts,
                    order_id=self._event_id(), items=lines,
                )
            )  # fmt: skip
            out.purchases += 1
            out.revenue += sum(line.unit_price * line.quantity for line in lines)
            self.owned.update(self.cart)
            self.cart.clear()
            self.ended = True
        elif rng.random() < 0.12:
            self.ended = True
        out.events += events
        out.reward += self.reward.of_events(events)
        return events


def run_session(
    catalog: Catalog,
    shopper: Shopper,
    rng: np.random.Generator,
    recommend: Recommend | None,
    start_ms: int,
    max_steps: int = 20,
    step_ms: int = 15_000,
    reward: Reward | None = None,
) -> SessionOutcome:
    """A whole session with a synchronous recommender (tests, offline runs)."""
    session = ShoppingSession(catalog, shopper, rng, start_ms, step_ms, reward=reward)
    for _ in range(max_steps):
        if session.ended:
            break
        slate = recommend(shopper, list(session.history)) if recommend is not None else None
        session.step(slate)
    return session.outcome


def oracle_slate(
    catalog: Catalog,
    shopper: Shopper,
    k: int = 10,
    reward: Reward | None = None,
    cart: list[int] | None = None,
    owned: set[int] | None = None,
) -> list[int]:
    """The k items with the highest true value of showing them under ``reward``: click,
    plus cart (and revenue, when weighted) where the shopper would cart it (affordable,
    not owned, not in the cart). The best a recommender could do knowing the hidden
    tastes, one item at a time."""
    weights = reward or Reward()
    u = utility(catalog, shopper)
    cartable = catalog.price <= shopper.budget
    unavailable = list(cart or []) + list(owned or [])
    if unavailable:
        cartable = cartable.copy()
        cartable[unavailable] = False
    cart_value = weights.cart + 0.3 * (weights.purchase + weights.revenue * catalog.price)
    value = _sigmoid(u - CLICK_BAR) * (
        weights.click + np.where(cartable, _sigmoid(u - CART_BAR) * cart_value, 0.0)
    )
    return [int(i) for i in np.argsort(-value)[:k]]


def oracle(catalog: Catalog, k: int = 10, reward: Reward | None = None) -> Recommend:
    """``oracle_slate`` as a synchronous recommender for fresh shoppers (offline runs)."""

    def recommend(shopper: Shopper, history: list[int]) -> Slate:
        return (
            f"oracle-{shopper.user_id}-{len(history)}",
            oracle_slate(catalog, shopper, k, reward),
        )

    return recommend


def random_policy(catalog: Catalog, rng: np.random.Generator, k: int = 10) -> Recommend:
    def recommend(shopper: Shopper, history: list[int]) -> Slate:
        return (
            f"random-{uuid.uuid4().hex[:8]}",
            [int(i) for i in rng.choice(len(catalog), k, replace=False)],
        )

    return recommend
