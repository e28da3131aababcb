"""The closed loop, live: an embedded broker, a streams worker, the learner, a serving
member and simulated shoppers, for a set duration. Shoppers are split between the
learned policy (asking recq), popularity, random and the oracle (the shoppers' hidden
tastes; its shoppers stay off Kafka); the terminal shows the loop's vital signs and each
arm's reward, CTR and conversion as they happen. At the end,
``reports/<run>/`` gets ``metrics.json`` and PNG plots, and every process started here
is stopped (also on Ctrl-C)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from rich.console import Console
from rich.live import Live
from rich.table import Table

from inference.recommender import POPULARITY
from kafkaio.connection import check_broker, client_options, quiet_retriable_client_errors
from recq import scrape
from recq.embedded_kafka import EmbeddedKafka, free_port
from recq.processes import StageProcess, recq_command
from recq.topics import ensure_topics
from schemas.reward import Reward
from schemas.settings import KNOWN_VARIABLES, StageSettings, stage_env
from schemas.topics import TopicCatalog
from simulator.client import ShopClient
from simulator.compare import ArmRewards, ratio_interval, reward_interval
from simulator.shop import Catalog, shoppers
from simulator.traffic import ARMS, OBJECTIVES, Traffic

STAGES = ("worker", "learner", "serve")
#: Settings the demo wires itself; any other RECQ_* variable in the environment is
#: passed on to the stages (``RECQ_SLATE_LEARNING=off make demo``).
PLUMBING = frozenset({"RECQ_BOOTSTRAP_SERVERS", "RECQ_TOPIC_PREFIX", "RECQ_PARTITIONS",
                      "RECQ_DATA_DIR", "RECQ_METRICS_PORT"})  # fmt: skip
# Concurrent simulated sessions: sized so one streams worker keeps up on a 2-core laptop
# (it shares the cores with the broker, the learner and the serving member): ~100 events/s.
SHOPPER_LOOPS = 12
THINK_S = 0.1  # pause before each step of a simulated shopper
POPULATION = 240  # returning shoppers: each comes back about every 30 s


class Stage(StageProcess):
    """One recq stage of the loop, with its Prometheus port."""

    def __init__(self, name: str, env: dict[str, str], log: Path, metrics_port: int) -> None:
        super().__init__(env, log, recq_command(name))
        self.name = name
        self.metrics_port = metrics_port
        self.scrape_failures = 0
        self._last_scrape: dict[str, float] = {}

    def metrics(self, timeout_s: float = 2.0) -> dict[str, float]:
        """Sum of each Prometheus sample name (labels folded), and each labelled sample
        under ``name{label="value",...}``: {} until the stage's first answer, then the
        last values it answered. A busy stage on a small machine can miss
        a scrape; a missed scrape is missing data, not a learner back at zero."""
        try:
            out = scrape.values(scrape.families(self.metrics_port, timeout_s))
        except OSError:
            self.scrape_failures += 1
            return dict(self._last_scrape)
        self._last_scrape = out
        return dict(out)

    def exit_code(self) -> int | None:
        """None while the stage runs."""
        return self.proc.poll() if self.proc is not None else None


@dataclass
class Timeline:
    """Finished sessions (time, arm, reward, shown, clicked, purchased, objectives,
    shopper) and samples of the loop's vital signs over time."""

    sessions: list[tuple[float, str, float, int, int, int, dict[str, float], str]] = field(
        default_factory=list
    )
    vitals: list[dict[str, float]] = field(default_factory=list)
    #: How the learned arm's requests were answered: by a model snapshot, by the serving
    #: member's popularity fallback (before the first snapshot, or no history), or not.
    learned_answers: dict[str, int] = field(default_factory=dict)
    #: Each stage at the end of the run, before it is stopped: its exit code (None: it
    #: was still running, as it should be) and how many metric scrapes it missed.
    stages: dict[str, dict[str, int | None]] = field(default_factory=dict)
    #: How long the shoppers ran (the duration, or less with ``until_served``).
    ran_s: float = 0.0

    def rewards(self, arm: str, since: float = 0.0) -> ArmRewards:
        """The arm's reward per shopper (for intervals over shoppers)."""
        return ArmRewards.of((s[7], s[2]) for s in self.sessions if s[1] == arm and s[0] >= since)

    def arm(self, arm: str, since: float = 0.0) -> dict[str, float]:
        rows = [s for s in self.sessions if s[1] == arm and s[0] >= since]
        n = len(rows)
        shown = sum(r[3] for r in rows)
        return {
            "sessions": n,
            "reward_per_session": sum(r[2] for r in rows) / n if n else 0.0,
            "ctr": sum(r[4] for r in rows) / shown if shown else 0.0,
            "conversion": sum(r[5] for r in rows) / n if n else 0.0,
            **{
                f"{name}_per_session": sum(r[6][name] for r in rows) / n if n else 0.0
                for name in OBJECTIVES
            },
        }


def _ratio(a: float, b: float) -> float:
    return a / b if b else 0.0


def process_env(base: dict[str, str], name: str, port: int) -> dict[str, str]:
    """One stage's environment: the demo's settings plus its metrics port (and threads)."""
    env = {**base, **stage_env({}, RECQ_METRICS_PORT=port)}
    # One compute thread each for the learner and the serving member: on a small machine
    # the streams worker and the broker need the rest to keep the loop's data flowing.
    if name == "learner":
        env.update(stage_env({}, RECQ_LEARNER_THREADS=1))
    if name == "serve":
        env.update(stage_env({}, RECQ_SERVE_THREADS=1))
    return env


def run_closed_loop(
    settings: StageSettings,
    reward: Reward,
    *,
    duration_s: float,
    seed: int,
    console: Console,
    reports: Path = Path("reports"),
    misleading: float = 0.0,
    until_served: int = 0,
) -> Path:
    """Run the loop for ``duration_s``; with ``until_served`` > 0, stop as soon as the
    learned arm has been answered from model snapshots that many times (a smoke run that
    waits for the loop to close rather than for a fixed time)."""
    run = time.strftime("%Y%m%d-%H%M%S")
    out = reports / run
    (out / "logs").mkdir(parents=True, exist_ok=True)
    # The demo's own Kafka clients log to a file beside the stages' logs, not into the
    # live table on the terminal.
    quiet_retriable_client_errors()
    own_log = logging.FileHandler(out / "logs" / "demo.log")
    own_log.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.getLogger().addHandler(own_log)
    try:
        return _run(settings, reward, out, run, duration_s, seed, console, misleading, until_served)
    finally:
        logging.getLogger().removeHandler(own_log)
        own_log.close()


def _run(
    settings: StageSettings,
    reward: Reward,
    out: Path,
    run: str,
    duration_s: float,
    seed: int,
    console: Console,
    misleading: float = 0.0,
    until_served: int = 0,
) -> Path:
    with tempfile.TemporaryDirectory(prefix="recq-demo-") as tmp:
        root = Path(tmp)
        kafka = None
        bootstrap = settings.bootstrap_servers
        if bootstrap is None:
            kafka = EmbeddedKafka(root / "kafka", cache_dir=settings.cache_dir)
            with console.status("starting the embedded Kafka broker..."):
                bootstrap = kafka.start().bootstrap_servers
        prefix = f"demo{run.replace('-', '')}."
        base = stage_env(
            RECQ_BOOTSTRAP_SERVERS=bootstrap,
            RECQ_TOPIC_PREFIX=prefix,
            RECQ_PARTITIONS=2,
            RECQ_DATA_DIR=root / "data",
            # Sessions of the simulated shoppers last seconds; 10 s idle ends one.
            RECQ_SESSION_TIMEOUT_S=10,
            RECQ_REORDER_WINDOW_S=0.5,
            RECQ_WARMUP_TRANSITIONS=300,
            RECQ_SNAPSHOT_EVERY_S=5,
            RECQ_SNAPSHOT_EVERY_UPDATES=100000,
            RECQ_SNAPSHOT_MIN_UPDATES=300,
            RECQ_REPLAY_CAPACITY=100000,
            RECQ_TENSORBOARD=False,
            RECQ_BATCH_SIZE=128,
            # The learned arm explores (epsilon 0.1, serving's default) with exact logged
            # propensities: the gate can only judge a candidate whose picks the logs
            # cover, and a greedy arm left 40 of 43 candidates unsupported (docs/serving.md).
            RECQ_EXPLORATION="epsilon",
            # The reward the demo scores its arms with is the one the stages learn from.
            RECQ_REWARD_CLICK=reward.click,
            RECQ_REWARD_CART=reward.cart,
            RECQ_REWARD_PURCHASE=reward.purchase,
            RECQ_REWARD_CART_REMOVE=reward.cart_remove,
            RECQ_REWARD_REVENUE=reward.revenue,
        )
        base.update(
            {k: v for k, v in os.environ.items() if k in KNOWN_VARIABLES and k not in PLUMBING}
        )
        base["PYTHONUNBUFFERED"] = "1"
        impressions = base.get("RECQ_IMPRESSIONS", "implicit") == "explicit"
        ports = {n: free_port() for n in STAGES}
        stages = [
            Stage(n, process_env(base, n, ports[n]), out / "logs" / f"{n}.log", ports[n])
            for n in STAGES
        ]
        catalog = TopicCatalog(prefix=prefix, partitions=2)
        # A secured cluster (RECQ_SECURITY_PROTOCOL, RECQ_SASL_*, RECQ_SSL_*): the demo's
        # own clients and its stages connect with the same settings.
        options = client_options(settings)
        try:
            asyncio.run(check_broker(settings, bootstrap))
            asyncio.run(ensure_topics(catalog, bootstrap_servers=bootstrap,
                                      client_options=options))  # fmt: skip
            for s in stages:
                s.start()
            timeline = asyncio.run(
                _drive(bootstrap, options, catalog, stages, duration_s, seed, reward,
                       impressions, console, misleading, until_served)
            )  # fmt: skip
        finally:
            with console.status("stopping worker, learner and serving member..."):
                for s in reversed(stages):
                    s.stop(timeout_s=60)  # the learner writes a final checkpoint
                if kafka is not None:
                    kafka.stop()
    _report(out, timeline, stages, timeline.ran_s, seed, reward, console, misleading)
    return out


async def _drive(
    bootstrap: str,
    options: dict[str, Any],
    catalog: TopicCatalog,
    stages: list[Stage],
    duration_s: float,
    seed: int,
    reward: Reward,
    impressions: bool,
    console: Console,
    misleading: float,
    until_served: int,
) -> Timeline:
    shop = Catalog.generate(2000, 20, seed, misleading=misleading)
    async with ShopClient(bootstrap, catalog, options) as client:
        return await _run_shoppers(client, shop, catalog, stages, duration_s, seed, reward,
                                   impressions, console, until_served)  # fmt: skip


async def _run_shoppers(
    client: ShopClient, shop: Catalog, catalog: TopicCatalog, stages: list[Stage],
    duration_s: float, seed: int, reward: Reward, impressions: bool, console: Console,
    until_served: int = 0,
) -> Timeline:  # fmt: skip
    traffic = Traffic(
        catalog=shop,
        topics=catalog,
        producer=client.producer,
        answers=client.answers,
        seed=seed,
        answer_timeout_s=1.0,
        reward=reward,
        impressions=impressions,
    )
    await traffic.publish_catalog()  # item features for the learner (the catalog topic)
    timeline = Timeline()
    start = time.monotonic()
    stopping = asyncio.Event()

    # Returning shoppers, each always in the same arm (a split by user, as in an A/B
    # test): their history carries across sessions, as it does in a real shop.
    population = shoppers(shop, POPULATION, seed * 1000 + 1)

    async def shopper_loop(worker: int) -> None:
        mine = list(range(worker, len(population), SHOPPER_LOOPS))
        while not stopping.is_set():
            for i in mine:
                if stopping.is_set():
                    return
                arm = ARMS[i % len(ARMS)]
                o = await traffic.session(arm, population[i], think_s=THINK_S, live=True)
                at = time.monotonic() - start
                user = population[i].user_id
                timeline.sessions.append(
                    (at, arm, o.reward, o.shown, o.clicked_shown, o.purchases, o.objectives(), user)
                )

    shoppers_tasks = [asyncio.create_task(shopper_loop(w)) for w in range(SHOPPER_LOOPS)]
    try:
        with Live(console=console, refresh_per_second=2) as live:
            last: dict[str, float] = {}
            while (elapsed := time.monotonic() - start) < duration_s:
                await asyncio.sleep(1.0)
                vitals = await _vitals(stages, elapsed)
                rate = (vitals["events"] - last.get("events", 0.0)) / max(
                    1e-9, elapsed - last.get("t", 0.0)
                )
                vitals["events_per_s"] = rate
                last = {"events": vitals["events"], "t": elapsed}
                timeline.vitals.append(vitals)
                live.update(_table(timeline, vitals, duration_s))
                if until_served and model_answers(traffic) >= until_served:
                    break
    finally:
        timeline.ran_s = min(time.monotonic() - start, duration_s)
        stopping.set()
        timeline.stages = {
            s.name: {"exit_code": s.exit_code(), "scrape_failures": s.scrape_failures}
            for s in stages
        }
        learned = traffic.stats["learned"]
        by_popularity = learned.versions.get(POPULARITY, 0)
        timeline.learned_answers = {
            "model": model_answers(traffic),
            "popularity": by_popularity,
            "unanswered": learned.unanswered,
        }
        for task in shoppers_tasks:
            task.cancel()
        for task in shoppers_tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
    return timeline


def model_answers(traffic: Traffic) -> int:
    """Requests of the learned arm answered from a model snapshot (not popularity)."""
    versions = traffic.stats["learned"].versions
    return sum(versions.values()) - versions.get(POPULARITY, 0)


async def _vitals(stages: list[Stage], elapsed: float) -> dict[str, float]:
    # Scraped side by side: one slow stage must not delay the others' samples.
    scrapes = await asyncio.gather(*(asyncio.to_thread(s.metrics) for s in stages))
    m = {s.name: scrape for s, scrape in zip(stages, scrapes, strict=True)}
    return {
        "t": elapsed,
        "events": m["worker"].get("recq_streams_events_total", 0.0),
        "transitions": m["worker"].get("recq_streams_transitions_total", 0.0),
        "replay": m["learner"].get("recq_learner_replay_size", 0.0),
        "slates": m["learner"].get('recq_learner_transitions_total{kind="slate"}', 0.0),
        "updates": m["learner"].get("recq_learner_updates_total", 0.0),
        "loss_td": m["learner"].get('recq_learner_loss{term="td"}', 0.0),
        "snapshot": m["learner"].get("recq_learner_snapshot_version", 0.0),
        "serving_snapshot": m["serve"].get("recq_serve_snapshot_version", 0.0),
        "latency_ms_sum": m["serve"].get("recq_serve_latency_ms_sum", 0.0),
        "latency_count": m["serve"].get("recq_serve_latency_ms_count", 0.0),
        **{f"gate_{result}": m["learner"].get(f'recq_learner_snapshots_total{{result="{result}"}}',
                                              0.0)
           for result in ("promoted", "ope_rejected", "unjudged")},
        "guard_rollbacks": m["learner"].get("recq_learner_guard_rollbacks_total", 0.0),
        # Cumulative since the member started (NaN until a snapshot covered an event).
        **{f"freshness_p{q}_s": _or_nan(scrape.histogram_quantile(
            m["serve"], "recq_serve_freshness_seconds", q / 100)) for q in (50, 99)},
    }  # fmt: skip


def _or_nan(value: float | None) -> float:
    return float("nan") if value is None else value


def _table(timeline: Timeline, v: dict[str, float], duration_s: float) -> Table:
    table = Table(title=f"recq closed loop: {v['t']:.0f} / {duration_s:.0f} s")
    table.add_column("loop")
    table.add_column("value", justify="right")
    latency = v["latency_ms_sum"] / v["latency_count"] if v["latency_count"] else 0.0
    for name, value in (
        ("events/s", f"{v['events_per_s']:.0f}"),
        ("transitions", f"{v['transitions']:.0f}"),
        ("replay size", f"{v['replay']:.0f}"),
        ("updates", f"{v['updates']:.0f}"),
        ("TD loss", f"{v['loss_td']:.4f}"),
        ("snapshot (learner / serving)", f"{v['snapshot']:.0f} / {v['serving_snapshot']:.0f}"),
        (
            "gate: promoted / rejected / unjudged",
            f"{v['gate_promoted']:.0f} / {v['gate_ope_rejected']:.0f} / {v['gate_unjudged']:.0f}",
        ),
        ("guard rollbacks", f"{v['guard_rollbacks']:.0f}"),
        ("freshness p50 / p99", f"{v['freshness_p50_s']:.1f} / {v['freshness_p99_s']:.1f} s"),
        ("mean serving latency", f"{latency:.1f} ms"),
    ):
        table.add_row(name, value)
    for arm in ARMS:
        a = timeline.arm(arm)
        table.add_row(
            f"{arm}: reward/session, CTR, conversion",
            f"{a['reward_per_session']:.3f}  {a['ctr']:.3f}  {a['conversion']:.3f}  "
            f"({a['sessions']:.0f})",
        )
    return table


def _report(
    out: Path,
    timeline: Timeline,
    stages: list[Stage],
    duration_s: float,
    seed: int,
    reward: Reward,
    console: Console,
    misleading: float = 0.0,
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    second_half = duration_s / 2
    oracle, oracle_late = timeline.arm("oracle"), timeline.arm("oracle", since=second_half)
    oracle_reward = oracle["reward_per_session"]
    metrics: dict[str, Any] = {
        "duration_s": duration_s,
        "seed": seed,
        "misleading": misleading,
        # Every arm (the live oracle too) is scored with this reward, the one the stages used.
        "reward": reward.as_dict(),
        "oracle_reward_per_session": oracle_reward,
        "policies": {},
    }
    for arm in ARMS:
        overall, late = timeline.arm(arm), timeline.arm(arm, since=second_half)
        late["fraction_of_oracle"] = _ratio(late["reward_per_session"],
                                            oracle_late["reward_per_session"])  # fmt: skip
        # 95% bootstrap intervals over shoppers (simulator/compare.py): of the second
        # half's reward per session, and of its ratio to the oracle and the co-view control.
        late_rewards = timeline.rewards(arm, second_half)
        intervals = {"reward_per_session": reward_interval(late_rewards).as_dict()}
        for other in ("oracle", "coview"):
            if other != arm:
                ratio = ratio_interval(late_rewards, timeline.rewards(other, second_half))
                intervals[f"of_{other}"] = ratio.as_dict()
        metrics["policies"][arm] = {
            **overall,
            "second_half": {**late, "intervals": intervals},
            "fraction_of_oracle": _ratio(overall["reward_per_session"], oracle_reward),
        }
    last = timeline.vitals[-1] if timeline.vitals else {}
    metrics["snapshots"] = last.get("snapshot", 0.0)
    metrics["updates"] = last.get("updates", 0.0)
    metrics["transitions"] = last.get("transitions", 0.0)
    metrics["slate_transitions_learned"] = last.get("slates", 0.0)
    metrics["gate"] = {
        "promoted": last.get("gate_promoted", 0.0),
        "ope_rejected": last.get("gate_ope_rejected", 0.0),
        "unjudged": last.get("gate_unjudged", 0.0),
    }
    metrics["guard_rollbacks"] = last.get("guard_rollbacks", 0.0)
    # event time -> swap of the first snapshot that trained on it (inference/freshness.py)
    for q in ("p50", "p99"):
        value = last.get(f"freshness_{q}_s", float("nan"))
        metrics[f"freshness_{q}_s"] = None if value != value else value
    count = last.get("latency_count", 0.0)
    metrics["learned_answers"] = timeline.learned_answers
    metrics["stages"] = timeline.stages
    metrics["serving_latency_mean_ms"] = last.get("latency_ms_sum", 0.0) / count if count else None
    (out / "metrics.json").write_bytes(orjson.dumps(metrics, option=orjson.OPT_INDENT_2))

    window = max(10.0, duration_s / 12)
    edges = np.arange(0.0, duration_s + window, window)
    fig, (ax_r, ax_c) = plt.subplots(1, 2, figsize=(11, 4))
    for arm in ARMS:
        rows = [s for s in timeline.sessions if s[1] == arm]
        rewards, ctrs = [], []
        for lo, hi in pairwise(edges):
            chunk = [r for r in rows if lo <= r[0] < hi]
            shown = sum(r[3] for r in chunk)
            rewards.append(np.mean([r[2] for r in chunk]) if chunk else np.nan)
            ctrs.append(sum(r[4] for r in chunk) / shown if shown else np.nan)
        ax_r.plot(edges[1:], rewards, marker="o", label=arm)
        ax_c.plot(edges[1:], ctrs, marker="o", label=arm)
    ax_r.set(title="reward per session", xlabel="seconds")
    ax_c.set(title="CTR of shown slates", xlabel="seconds")
    ax_r.legend()
    fig.tight_layout()
    fig.savefig(out / "reward_ctr.png", dpi=110)
    plt.close(fig)
    if timeline.vitals:
        fig, (ax_l, ax_s) = plt.subplots(1, 2, figsize=(11, 4))
        t = [v["t"] for v in timeline.vitals]
        ax_l.plot(t, [v["loss_td"] for v in timeline.vitals])
        ax_l.set(title="learner loss", xlabel="seconds")
        lat = []
        prev_sum = prev_count = 0.0
        for v in timeline.vitals:
            d = v["latency_count"] - prev_count
            lat.append((v["latency_ms_sum"] - prev_sum) / d if d > 0 else np.nan)
            prev_sum, prev_count = v["latency_ms_sum"], v["latency_count"]
        ax_s.plot(t, lat)
        ax_s.set(title="serving latency (mean per second, ms)", xlabel="seconds")
        ax_s.set_yscale("log")  # the first answers wait for the model to load
        fig.tight_layout()
        fig.savefig(out / "loss_latency.png", dpi=110)
        plt.close(fig)

    table = Table(
        "policy", "sessions", "reward/session", "of oracle", "2nd half", "of oracle", "CTR",
        "clicks", "carts", "purchases", "revenue",
        title=f"closed loop, {duration_s:.0f} s, seed {seed}: {out} (per session)",
    )  # fmt: skip
    for arm in ARMS:
        p = metrics["policies"][arm]
        late = p["second_half"]
        table.add_row(
            arm, str(p["sessions"]), f"{p['reward_per_session']:.3f}",
            f"{p['fraction_of_oracle']:.0%}", f"{late['reward_per_session']:.3f}",
            f"{late['fraction_of_oracle']:.0%}", f"{p['ctr']:.3f}",
            *(f"{p[f'{name}_per_session']:.2f}" for name in OBJECTIVES),
        )  # fmt: skip
    console.print(table)
    for name, status in timeline.stages.items():
        if status["exit_code"] is not None:
            console.print(
                f"[red]the {name} stopped before the end of the run (exit code "
                f"{status['exit_code']}); its figures above stop there. "
                f"See {out / 'logs' / f'{name}.log'}.[/red]"
            )
