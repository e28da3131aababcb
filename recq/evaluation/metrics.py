"""HR@k and NDCG@k of targets ranked against all items.

A target's rank is the number of items scored strictly higher (0 = first), so ties are
broken in the target's favour only when the tie is exact; HR@k = rank < k and NDCG@k =
1 / log2(rank + 2) for a hit (one relevant item per target, so the ideal DCG is 1)."""

from __future__ import annotations

import math
from collections import defaultdict

import torch

KS = (5, 10, 20)


def target_ranks(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """scores [B, N], targets [B] item indices -> rank of each target [B]."""
    target_scores = scores.gather(1, targets.unsqueeze(1))
    return (scores > target_scores).sum(dim=1)


class RankingMetrics:
    """Accumulates ranks per target kind (click, cart, purchase) and reports HR/NDCG."""

    def __init__(self, ks: tuple[int, ...] = KS) -> None:
        self.ks = ks
        self.ranks: dict[str, list[int]] = defaultdict(list)

    def add(self, ranks: torch.Tensor, kinds: list[str]) -> None:
        for rank, kind in zip(ranks.tolist(), kinds, strict=True):
            self.ranks[kind].append(int(rank))

    def summary(self) -> dict[str, dict[str, float]]:
        """{kind: {"targets": n, "hr@5": ..., "ndcg@5": ..., ...}}"""
        out: dict[str, dict[str, float]] = {}
        for kind, ranks in sorted(self.ranks.items()):
            row: dict[str, float] = {"targets": len(ranks)}
            for k in self.ks:
                hits = [r for r in ranks if r < k]
                row[f"hr@{k}"] = len(hits) / len(ranks)
                row[f"ndcg@{k}"] = sum(1.0 / math.log2(r + 2) for r in hits) / len(ranks)
            out[kind] = row
        return out
