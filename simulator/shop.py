"""A synthetic shop: a catalog with categories, latent item factors, prices and
complementary items, and shoppers with hidden tastes, budgets and price sensitivity.
Everything is drawn from one seed, so a shop and its shoppers are reproducible.

A shop where browsing misleads (``misleading`` > 0): for that share of items, what draws
shoppers to an item when they browse on their own (its organic factors) is another
item's factors, drawn from a different category, while whether they click it when it is
recommended, cart it or buy it still follows its own. Organic data alone then points at
the wrong items; only the answers to shown slates reveal them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

FACTORS = 8


@dataclass(frozen=True)
class Catalog:
    item_ids: list[str]
    category: np.ndarray  # [N] int
    factors: np.ndarray  # [N, FACTORS] latent item factors
    price: np.ndarray  # [N] float, EUR
    complements: np.ndarray  # [N, 3] item indices bought/clicked together
    #: What organic browsing sees: ``factors``, except for the misleading share of items.
    organic_factors: np.ndarray  # [N, FACTORS]
    misleading: float = 0.0  # share of items whose organic appeal is another item's

    def __len__(self) -> int:
        return len(self.item_ids)

    def category_name(self, item: int) -> str:
        """The category an item's catalog record names (what a shop would publish)."""
        return f"category-{int(self.category[item]):03d}"

    @classmethod
    def generate(
        cls, n_items: int, n_categories: int, seed: int, misleading: float = 0.0
    ) -> Catalog:
        if not 0.0 <= misleading <= 1.0:
            raise ValueError(f"misleading is a share of items in [0, 1], got {misleading}")
        rng = np.random.default_rng(seed)
        category = rng.integers(n_categories, size=n_items)
        centroids = rng.normal(0.0, 1.0, (n_categories, FACTORS))
        factors = centroids[category] + rng.normal(0.0, 0.5, (n_items, FACTORS))
        price = np.round(np.exp(rng.normal(3.0, 0.8, n_items)), 2).clip(1.0, 5000.0)
        members = [np.flatnonzero(category == c) for c in range(n_categories)]
        # Every item's category has at least the item itself as a member.
        complements = np.stack([rng.choice(members[category[i]], 3) for i in range(n_items)])
        ids = [f"sku-{i:06d}" for i in range(n_items)]
        organic = factors.copy()
        if misleading > 0.0:
            # Its own generator: the default shop (misleading = 0) stays as it always was.
            swap = np.random.default_rng([seed, 1])
            chosen = swap.choice(n_items, round(misleading * n_items), replace=False)
            for i in chosen:
                others = np.flatnonzero(category != category[i])
                donor = int(swap.choice(others)) if len(others) else int(swap.integers(n_items))
                organic[i] = factors[donor]
        return cls(ids, category, factors, price, complements, organic, misleading)


@dataclass(frozen=True)
class Shopper:
    user_id: str
    taste: np.ndarray  # [FACTORS] hidden
    budget: float  # largest price they will pay
    price_sensitivity: float


def shoppers(catalog: Catalog, n: int, seed: int) -> list[Shopper]:
    rng = np.random.default_rng(seed)
    favourites = rng.integers(int(catalog.category.max()) + 1, size=n)
    out = []
    for u in range(n):
        members = np.flatnonzero(catalog.category == favourites[u])
        anchor = catalog.factors[members].mean(0) if len(members) else np.zeros(FACTORS)
        out.append(
            Shopper(
                user_id=f"shopper-{seed}-{u:06d}",
                taste=anchor + rng.normal(0.0, 0.4, FACTORS),
                budget=float(np.exp(rng.normal(4.0, 0.7))),
                price_sensitivity=float(rng.uniform(0.1, 0.6)),
            )
        )
    return out


def utility(
    catalog: Catalog, shopper: Shopper, items: np.ndarray | slice = slice(None),
    organic: bool = False,
) -> np.ndarray:  # fmt: skip
    """How much the shopper likes items: taste . factors - sensitivity * log price, with
    unaffordable items far below. ``organic``: how appealing they look while browsing on
    one's own (the organic factors; the same unless the shop misleads)."""
    factors = catalog.organic_factors if organic else catalog.factors
    u = factors[items] @ shopper.taste / np.sqrt(FACTORS)
    u = u - shopper.price_sensitivity * np.log(catalog.price[items])
    affordable: np.ndarray = np.where(catalog.price[items] <= shopper.budget, u, u - 5.0)
    return affordable
