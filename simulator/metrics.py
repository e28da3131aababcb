"""Prometheus metrics of the simulated shoppers (``recq simulate`` with
``RECQ_METRICS_PORT``): what each arm earns, so a dashboard can compare them live."""

from __future__ import annotations

from prometheus_client import Counter

from simulator.session import SessionOutcome

SESSIONS = Counter("recq_sim_sessions_total", "Finished shopping sessions, by arm.", ["arm"])
REWARD = Counter(
    "recq_sim_reward_total", "Reward earned (schemas.reward, configured weights), by arm.", ["arm"]
)
SLATES = Counter("recq_sim_slates_shown_total", "Slates shown, by arm.", ["arm"])
CLICKS = Counter("recq_sim_slate_clicks_total", "Clicks on a shown item, by arm.", ["arm"])
PURCHASES = Counter("recq_sim_purchases_total", "Checkouts, by arm.", ["arm"])


def record(arm: str, outcome: SessionOutcome) -> None:
    SESSIONS.labels(arm).inc()
    REWARD.labels(arm).inc(outcome.reward)
    SLATES.labels(arm).inc(outcome.shown)
    CLICKS.labels(arm).inc(outcome.clicked_shown)
    PURCHASES.labels(arm).inc(outcome.purchases)
