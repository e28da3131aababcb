"""A synthetic shop: a catalog with categories, latent item factors, prices and
complementary items, and shoppers with hidden tastes, budgets and price sensitivity.
Everything is drawn from one seed, so a shop and its shoppers are reproducible."""

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

    def __len__(self) -> int:
        return len(self.item_ids)

    @classmethod
    def generate(cls, n_items: int, n_categories: int, seed: int) -> Catalog:
        rng = np.random.default_rng(seed)
        category = rng.integers(n_categories, size=n_items)
        centroids = rng.normal(0.0, 1.0, (n_categories, FACTORS))
        factors = centroids[category] + rng.normal(0.0, 0.5, (n_items, FACTORS))
        price = np.round(np.exp(rng.normal(3.0, 0.8, n_items)), 2).clip(1.0, 5000.0)
        members = [np.flatnonzero(category == c) for c in range(n_categories)]
        # Every item's category has at least the item itself as a member.
        complements = np.stack([rng.choice(members[category[i]], 3) for i in range(n_items)])
        ids = [f"sku-{i:06d}" for i in range(n_items)]
        return cls(ids, category, factors, price, complements)


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
    catalog: Catalog, shopper: Shopper, items: np.ndarray | slice = slice(None)
) -> np.ndarray:
    """How much the shopper likes items: taste . factors - sensitivity * log price, with
    unaffordable items far below."""
    u = catalog.factors[items] @ shopper.taste / np.sqrt(FACTORS)
    u = u - shopper.price_sensitivity * np.log(catalog.price[items])
    affordable: np.ndarray = np.where(catalog.price[items] <= shopper.budget, u, u - 5.0)
    return affordable
