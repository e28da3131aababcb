"""The closed loop's report: per-policy metrics from the session timeline, the fraction
of the oracle, and the PNG plots, written where the run says."""

from __future__ import annotations

from pathlib import Path

import orjson
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from rich.console import Console

from recq.closed_loop import Stage, Timeline, _report
from recq.embedded_kafka import free_port
from schemas.reward import Reward


def test_report_metrics_and_plots(tmp_path: Path) -> None:
    timeline = Timeline()
    none = {"clicks": 0, "carts": 0, "purchases": 0, "revenue": 0.0}
    for i in range(60):
        t = float(i)
        bought = 1 if i % 2 else 0
        timeline.sessions += [
            (t, "learned", 1.0, 2, 1, bought,
             {"clicks": 2, "carts": 1, "purchases": bought, "revenue": 30.0 * bought}, f"l{i % 6}"),
            (t, "popularity", 0.5, 2, 1, 0, {**none, "clicks": 1}, f"p{i % 6}"),
            (t, "random", 0.2, 1, 0, 0, {**none, "clicks": 1}, f"r{i % 6}"),
            # the live oracle arm earns 2.0 per session, 2.5 in the second half
            (t, "oracle", 1.5 if t < 30 else 2.5, 2, 2, 1,
             {"clicks": 3, "carts": 2, "purchases": 1, "revenue": 50.0}, f"o{i % 6}"),
        ]  # fmt: skip
        timeline.vitals.append({"t": t, "events": 10.0 * i, "transitions": 5.0 * i, "replay": 1.0,
                                "updates": float(i), "loss_td": 0.1, "snapshot": 2.0,
                                "serving_snapshot": 2.0, "latency_ms_sum": 12.0 * i,
                                "latency_count": 2.0 * i})  # fmt: skip
    timeline.stages = {"learner": {"exit_code": None, "scrape_failures": 3},
                       "serve": {"exit_code": 1, "scrape_failures": 0}}  # fmt: skip
    reward = Reward(click=0.3, cart=0.5, purchase=2.0, cart_remove=-0.1)
    _report(tmp_path, timeline, [], duration_s=60.0, seed=3, reward=reward,
            console=Console(quiet=True))  # fmt: skip
    metrics = orjson.loads((tmp_path / "metrics.json").read_bytes())
    learned = metrics["policies"]["learned"]
    assert learned["sessions"] == 60 and learned["reward_per_session"] == 1.0
    assert learned["ctr"] == 0.5 and learned["conversion"] == 0.5
    assert learned["fraction_of_oracle"] == 0.5
    assert learned["second_half"]["fraction_of_oracle"] == 0.4  # 1.0 / 2.5
    # Every shopper of an arm earned the same per session here: zero-width intervals.
    intervals = learned["second_half"]["intervals"]
    assert intervals["reward_per_session"] == {"value": 1.0, "low": 1.0, "high": 1.0}
    assert intervals["of_oracle"] == {"value": 0.4, "low": 0.4, "high": 0.4}
    assert metrics["oracle_reward_per_session"] == 2.0
    # every objective, per session, per arm
    assert (learned["clicks_per_session"], learned["carts_per_session"]) == (2.0, 1.0)
    assert (learned["purchases_per_session"], learned["revenue_per_session"]) == (0.5, 15.0)
    assert metrics["policies"]["oracle"]["revenue_per_session"] == 50.0
    assert metrics["policies"]["random"]["ctr"] == 0.0
    assert metrics["policies"]["popularity"]["second_half"]["sessions"] == 30
    assert metrics["serving_latency_mean_ms"] == 6.0 and metrics["snapshots"] == 2.0
    assert metrics["stages"]["serve"] == {"exit_code": 1, "scrape_failures": 0}
    # the report says which reward scored the arms
    assert metrics["reward"] == {
        "click": 0.3,
        "cart": 0.5,
        "purchase": 2.0,
        "cart_remove": -0.1,
        "revenue": 0.0,
    }
    for png in ("reward_ctr.png", "loss_latency.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_missed_scrape_keeps_the_stages_last_values(tmp_path: Path) -> None:
    """A stage too busy to answer one scrape (the learner on 2 cores) must not read as a
    learner back at snapshot 0: CI once failed on exactly that."""
    registry = CollectorRegistry()
    Gauge("recq_learner_snapshot_version", "v", registry=registry).set(7)
    loss = Gauge("recq_learner_loss", "l", ["term"], registry=registry)
    loss.labels("td").set(0.25)
    loss.labels("ce").set(2.0)
    port = free_port()
    stage = Stage("learner", {}, tmp_path / "learner.log", port)
    assert stage.metrics(timeout_s=0.5) == {} and stage.scrape_failures == 1  # not up yet
    server, thread = start_http_server(port, addr="127.0.0.1", registry=registry)
    scraped = stage.metrics()
    assert scraped["recq_learner_snapshot_version"] == 7.0
    # labelled samples are kept apart (the demo's TD loss is not TD + CE)
    assert scraped['recq_learner_loss{term="td"}'] == 0.25
    assert scraped["recq_learner_loss"] == 2.25
    server.shutdown()
    server.server_close()
    thread.join()
    assert stage.metrics(timeout_s=0.5)["recq_learner_snapshot_version"] == 7.0
    assert stage.scrape_failures == 2
