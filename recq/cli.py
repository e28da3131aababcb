"""The ``recq`` command line. Settings come from ``RECQ_*`` variables; every command
validates them first and fails with a message naming the bad one."""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from kafkaio.connection import (
    BrokerNotConfigured,
    BrokerRefused,
    checked_bootstrap,
    client_options,
)
from recq.embedded_kafka import EmbeddedKafka
from recq.errors import RecqError
from recq.roles import FIRST_PARTY, command_in, role_of
from schemas.settings import (
    ExplorationSettings,
    LearnerSettings,
    RewardSettings,
    ServingSettings,
    SettingsError,
    StageSettings,
    StreamsSettings,
    load_settings,
)
from schemas.topics import TopicCatalog

#: ``--misleading`` of the commands that run the simulated shop.
Misleading = Annotated[
    float,
    typer.Option(
        min=0.0,
        max=1.0,
        help="Share of items whose organic appeal is another item's (a shop where "
        "browsing misleads; simulator/shop.py). 0: the default shop.",
    ),
]

app = typer.Typer(
    help="recq: a real-time recommender that learns while it serves.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
kafka_app = typer.Typer(help="The embedded Apache Kafka broker (KRaft, single node).")
topics_app = typer.Typer(help="The topic catalog.")
schemas_app = typer.Typer(help="The event contract.")
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(schemas_app, name="schemas")
snapshots_app = typer.Typer(help="The model store: snapshots written by the learner.")
app.add_typer(snapshots_app, name="snapshots")
config_app = typer.Typer(help="The configuration reference.", no_args_is_help=True)
app.add_typer(config_app, name="config")

console = Console()
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
err_console = Console(stderr=True)


def _settings() -> StageSettings:
    """What every command needs (Kafka, paths, limits); stages load their own object."""
    return load_settings(StageSettings)


def _embedded(
    settings: StageSettings, port: int | None = None, *, secure: bool = False
) -> EmbeddedKafka:
    return EmbeddedKafka(
        settings.embedded_kafka_dir, cache_dir=settings.cache_dir, port=port,
        heap=settings.kafka_heap, secure=secure,
    )  # fmt: skip


# --- kafka -------------------------------------------------------------------------------
@kafka_app.command("fetch")
def kafka_fetch() -> None:
    """Resolve the pinned Kafka release from Maven Central into the cache (once)."""
    from recq.kafka_dist import KafkaDistribution

    settings = _settings()
    dist = KafkaDistribution.in_cache(settings.cache_dir)
    if dist.is_complete:
        console.print(f"Kafka {dist.version} already in {dist.home}")
        return
    with console.status(f"resolving Kafka {dist.version} from Maven Central..."):
        dist.fetch()
    console.print(f"Kafka {dist.version} resolved into {dist.home}")


@kafka_app.command("start")
def kafka_start(
    port: Annotated[int | None, typer.Option(help="Listener port; default: a free one.")] = None,
    secure: Annotated[
        bool,
        typer.Option(
            "--secure",
            help="SASL_SSL only (SCRAM-SHA-512), with a CA and users made for this broker; "
            "writes the client settings to client.env in its directory.",
        ),
    ] = False,
) -> None:
    """Start the embedded broker detached; returns once it answers a metadata request."""
    settings = _settings()
    broker = _embedded(settings, port, secure=secure)
    already = broker.state()
    if already is not None:
        console.print(
            f"Kafka already running at {already.bootstrap_servers} (pid {already.pid}, "
            f"{already.security_protocol}); `recq kafka stop` first to change that"
        )
        return
    with console.status("starting Kafka (KRaft)..."):
        state = broker.start()
    console.print(
        f"Kafka {state.kafka_version} running at [bold]{state.bootstrap_servers}[/] "
        f"(pid {state.pid}, log {state.log_file})"
    )
    if state.client_env_file:
        console.print(
            f"SASL_SSL only. Clients need the settings in {state.client_env_file} "
            "(a password: keep it private):\n"
            f"  set -a; . {state.client_env_file}; set +a"
        )


@kafka_app.command("stop")
def kafka_stop() -> None:
    """Stop the embedded broker (safe when it is not running)."""
    stopped = _embedded(_settings()).stop()
    console.print("Kafka stopped" if stopped else "Kafka was not running")


@kafka_app.command("status")
def kafka_status() -> None:
    """Say whether the embedded broker runs and answers; exit 1 if it does not."""
    from recq.embedded_kafka import answers_metadata

    broker = _embedded(_settings())
    state = broker.state()
    if state is None:
        console.print(f"Kafka is not running (state dir {broker.workdir})")
        raise typer.Exit(1)
    broker.secure = state.security_protocol == "SASL_SSL"
    answering = answers_metadata(state.bootstrap_servers, client_options=broker.client_options())
    console.print(
        f"Kafka {state.kafka_version} pid {state.pid} at {state.bootstrap_servers} "
        f"({state.security_protocol}): "
        + ("answering" if answering else "[red]not answering[/]")
        + f" (log {state.log_file})"
    )
    if not answering:
        raise typer.Exit(1)


# --- topics ------------------------------------------------------------------------------
@topics_app.command("create")
def topics_create() -> None:
    """Create every catalog topic that is missing (idempotent)."""
    from recq.topics import ensure_topics

    settings = _settings()
    catalog = TopicCatalog(prefix=settings.topic_prefix, partitions=settings.partitions)
    outcomes = asyncio.run(
        ensure_topics(
            catalog,
            bootstrap_servers=checked_bootstrap(settings),
            replication_factor=settings.replication_factor,
            client_options=client_options(settings),
        )
    )
    table = Table("topic", "partitions", "status")
    for outcome in outcomes:
        style = "green" if outcome.status == "created" else "dim"
        table.add_row(outcome.name, str(outcome.partitions), f"[{style}]{outcome.status}[/]")
    console.print(table)


@topics_app.command("list")
def topics_list() -> None:
    """Show the catalog: names, partitions, retention, cleanup."""
    settings = _settings()
    catalog = TopicCatalog(prefix=settings.topic_prefix, partitions=settings.partitions)
    table = Table("topic", "partitions", "co-partitioned", "cleanup", "retention")
    for spec in catalog.specs():
        keep = "forever" if spec.retention_ms < 0 else f"{spec.retention_ms / 86_400_000:g} d"
        co = "yes" if spec.co_partitioned else ""
        table.add_row(spec.name, str(spec.partitions), co, spec.cleanup_policy, keep)
    console.print(table)


# --- schemas -----------------------------------------------------------------------------
@schemas_app.command("export")
def schemas_export(
    directory: Annotated[Path, typer.Argument(help="Where to write *.schema.json.")],
) -> None:
    """Write one JSON Schema per record into DIRECTORY."""
    from schemas.jsonschema import export_json_schemas

    for path in export_json_schemas(directory):
        console.print(f"wrote {path}")


# --- streams -----------------------------------------------------------------------------
@app.command("worker")
def worker(
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="Faust log level.")] = "info",
) -> None:
    """Run a streams worker (the Faust app; same as `faust -A streams.app worker`).
    Creates missing topics first. Start more workers to share the partitions."""
    from recq.topics import ensure_topics
    from streams.worker import create_app

    settings = load_settings(StreamsSettings)
    bootstrap = checked_bootstrap(settings)
    catalog = TopicCatalog(prefix=settings.topic_prefix, partitions=settings.partitions)
    asyncio.run(
        ensure_topics(
            catalog,
            bootstrap_servers=bootstrap,
            replication_factor=settings.replication_factor,
            client_options=client_options(settings),
        )
    )
    # Faust's worker command starts its web server on port 6066 unless told not to
    # (web_enabled=False is not enough): a second worker on the same host would fail.
    sys.argv = ["recq-worker", "worker", "--loglevel", loglevel, "--without-web"]
    create_app(settings, bootstrap=bootstrap).main()


S = TypeVar("S", bound=StageSettings)


def _run_stage(
    run: Callable[[S, str], Coroutine[Any, Any, None]], stage: type[S], loglevel: str
) -> None:
    """Logging, the stage's settings, missing topics created, then the stage until it stops."""
    import logging

    from recq.topics import ensure_topics

    logging.basicConfig(level=loglevel.upper(), format=LOG_FORMAT)
    settings = load_settings(stage)
    bootstrap = checked_bootstrap(settings)
    catalog = TopicCatalog(prefix=settings.topic_prefix, partitions=settings.partitions)

    async def main() -> None:
        await ensure_topics(
            catalog,
            bootstrap_servers=bootstrap,
            replication_factor=settings.replication_factor,
            client_options=client_options(settings),
        )
        await run(settings, bootstrap)

    asyncio.run(main())


# --- learner -----------------------------------------------------------------------------
@app.command("learner")
def learner(
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="Log level.")] = "info",
) -> None:
    """Run the learner: consume transitions into the replay store, train the DQN, write
    and announce ONNX snapshots. Creates missing topics first. Ctrl-C stops it after a
    final checkpoint."""

    from learner.service import run_learner

    _run_stage(run_learner, LearnerSettings, loglevel)


# --- serving -----------------------------------------------------------------------------
@app.command("serve")
def serve(
    loglevel: Annotated[str, typer.Option("--loglevel", "-l", help="Log level.")] = "info",
) -> None:
    """Run a serving member: answer rec-requests with the newest verified snapshot (or
    popularity before the first), publish to recommendations. Start more to scale out."""

    from inference.service import run_server

    _run_stage(run_server, ServingSettings, loglevel)


@snapshots_app.command("list")
def snapshots_list() -> None:
    """Snapshots in the model store, newest first, and which one is pinned."""
    from inference.registry import SnapshotRegistry
    from schemas.manifest import ManifestError

    settings = _settings()
    registry = SnapshotRegistry(settings.model_store_dir)
    pinned = registry.pinned()
    table = Table("version", "created", "step", "items", "L", "features", "parity top-K",
                  "gate", "sha256", "pinned")  # fmt: skip
    for version in sorted(registry.store.versions(), reverse=True):
        try:
            m = registry.store.manifest(version)
        except (OSError, ManifestError) as exc:
            table.add_row(str(version), f"[red]unreadable: {exc}[/red]", *[""] * 7,
                          "yes" if version == pinned else "")  # fmt: skip
            continue
        gate: str = "" if m.gate is None else m.gate.decision
        if m.gate is not None and m.gate.low is not None:
            gate += f" ({m.gate.low:+.3f}..{m.gate.high:+.3f} vs {m.gate.against})"
        table.add_row(
            str(version), m.created_at, str(m.step), str(m.n_items), str(m.history_length),
            str(m.feature_version), f"{m.parity.topk_equal:.3f}", gate, m.model_sha256[:12],
            "yes" if version == pinned else "",
        )  # fmt: skip
    console.print(table)
    if not registry.store.versions():
        console.print(f"no snapshots in {settings.model_store_dir}: is `recq learner` running?")


@snapshots_app.command("rollback")
def snapshots_rollback(
    version: Annotated[int | None, typer.Argument(help="Version to serve.")] = None,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the pin.")] = False,
) -> None:
    """Pin every serving member to VERSION (verified first); --clear follows the newest again."""
    from inference.registry import SnapshotRegistry, SnapshotRejected

    settings = _settings()
    registry = SnapshotRegistry(settings.model_store_dir)
    if clear:
        registry.store.unpin()
        console.print("pin removed: members serve the newest verified snapshot")
        return
    if version is None:
        raise RecqError("give a VERSION to pin (see `recq snapshots list`), or --clear")
    if version not in registry.store.versions():
        raise RecqError(
            f"no snapshot {version} in {settings.model_store_dir}: see `recq snapshots list`"
        )
    try:
        registry.verify(registry.store.path(version).name)
    except SnapshotRejected as exc:
        raise RecqError(f"snapshot {version} does not verify ({exc}); not pinned") from None
    registry.store.pin(version, by="operator", reason="recq snapshots rollback")
    console.print(f"pinned snapshot {version}: members swap to it within a second")


# --- simulator ---------------------------------------------------------------------------
@app.command("simulate")
def simulate(
    shoppers: Annotated[int, typer.Option(help="Shoppers (one session each).")] = 300,
    seed: Annotated[int, typer.Option(help="Seed of the shop and its shoppers.")] = 1,
    items: Annotated[int, typer.Option(help="Catalog size.")] = 2000,
    categories: Annotated[int, typer.Option(help="Item categories.")] = 20,
    concurrency: Annotated[int, typer.Option(help="Sessions running at once.")] = 16,
    misleading: Misleading = 0.0,
    log: Annotated[
        Path | None,
        typer.Option(help="Write an offline JSONL log here instead (no Kafka, no recq)."),
    ] = None,
    sessions_each: Annotated[int, typer.Option(help="With --log: sessions per shopper.")] = 5,
    forever: Annotated[
        bool,
        typer.Option(
            help="Keep the same shoppers coming back (live timestamps, 0.1 s think time) "
            "until stopped; reward per arm on RECQ_METRICS_PORT. What the compose stack's "
            "demo profile runs."
        ),
    ] = False,
) -> None:
    """Run simulated shoppers against recq: a fifth each ask `recq serve` (learned), see
    co-view, popularity, random slates, or the oracle's (hidden tastes; kept off Kafka);
    the others' events go to the event topics, the controls' slates to recommendations.
    Prints reward per session, CTR and objectives per arm.
    With --log, write returning shoppers' organic sessions to a JSONL log instead (for
    `recq evaluate` and `recq replay`)."""
    if log is not None:
        from simulator.offline import write_log

        with console.status(f"simulating {shoppers} shoppers..."):
            n = write_log(log, n_shoppers=shoppers, sessions_each=sessions_each, items=items,
                          categories=categories, seed=seed)  # fmt: skip
        console.print(f"wrote {n} events to {log}")
        return
    from recq.topics import ensure_topics
    from simulator.client import ShopClient
    from simulator.shop import Catalog
    from simulator.traffic import OBJECTIVES, Traffic

    settings = _settings()
    reward = load_settings(RewardSettings).reward()
    bootstrap = checked_bootstrap(settings)
    options = client_options(settings)
    catalog = TopicCatalog(prefix=settings.topic_prefix, partitions=settings.partitions)
    shop = Catalog.generate(items, categories, seed, misleading=misleading)
    if settings.metrics_port:
        from prometheus_client import start_http_server

        start_http_server(settings.metrics_port)

    async def main() -> dict[str, dict[str, float]]:
        await ensure_topics(catalog, bootstrap_servers=bootstrap,
                            replication_factor=settings.replication_factor,
                            client_options=options)  # fmt: skip
        async with ShopClient(bootstrap, catalog, options) as client:
            explicit = load_settings(StreamsSettings).impressions == "explicit"
            traffic = Traffic(catalog=shop, topics=catalog, producer=client.producer,
                              answers=client.answers, seed=seed, reward=reward,
                              impressions=explicit)  # fmt: skip
            await traffic.publish_catalog()  # item features for the learner
            rounds = 0
            while forever:  # returning shoppers until SIGTERM / Ctrl-C
                stats = await traffic.run(shoppers, concurrency, think_s=0.1, live=True)
                rounds += 1
                console.print(f"round {rounds}: " + ", ".join(
                    f"{arm} {s.summary()['reward_per_session']:.3f}/session"
                    for arm, s in sorted(stats.items())
                ))  # fmt: skip
            with console.status(f"{shoppers} shoppers shopping..."):
                stats = await traffic.run(shoppers, concurrency)
        return {arm: s.summary() for arm, s in stats.items()}

    summary = asyncio.run(main())
    oracle_reward = summary.get("oracle", {}).get("reward_per_session", 0.0)
    table = Table("arm", "sessions", "reward/session", "of oracle", "CTR", "unanswered",
                  *(f"{name}/session" for name in OBJECTIVES))  # fmt: skip
    for arm, row in sorted(summary.items()):
        share = row["reward_per_session"] / oracle_reward if oracle_reward else 0.0
        table.add_row(
            arm, str(int(row["sessions"])), f"{row['reward_per_session']:.3f}",
            f"{share:.0%}", f"{row['ctr']:.3f}", str(int(row["unanswered"])),
            *(f"{row[f'{name}_per_session']:.2f}" for name in OBJECTIVES),
        )  # fmt: skip
    console.print(table)


# --- health --------------------------------------------------------------------------
ROLE_METRICS = {"worker": "recq_streams_", "learner": "recq_learner_", "serve": "recq_serve_",
                "simulate": "recq_sim_"}  # fmt: skip


@app.command("health")
def health(
    role: Annotated[
        str, typer.Option(help="worker, learner, serve or simulate: whose metrics to expect.")
    ],
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the answer.")] = 3.0,
) -> None:
    """Exit 0 when this container's recq process answers its Prometheus endpoint
    (RECQ_METRICS_PORT) with its role's metrics; 1 otherwise (a container HEALTHCHECK)."""
    from recq import scrape

    prefix = ROLE_METRICS.get(role)
    if prefix is None:
        raise RecqError(f"--role must be one of {', '.join(ROLE_METRICS)}, not {role!r}")
    port = load_settings(StageSettings).metrics_port
    if not port:
        raise RecqError("RECQ_METRICS_PORT is 0: the process exports no metrics to check")
    url = f"http://127.0.0.1:{port}/metrics"
    try:
        names = scrape.names(scrape.families(port, timeout))
    except OSError as exc:
        err_console.print(f"unhealthy: no answer on {url}: {exc}")
        raise typer.Exit(1) from None
    if not any(name.startswith(prefix) for name in names):
        err_console.print(f"unhealthy: {url} answers without any {prefix}* metric")
        raise typer.Exit(1)
    console.print(f"healthy: {role} answers on {url}")


@config_app.command("docs")
def config_docs(
    check: Annotated[
        bool, typer.Option(help="Only check that the page matches the settings classes.")
    ] = False,
) -> None:
    """Write docs/configuration.md from the settings classes (every RECQ_* variable with
    its type, default and meaning)."""
    from recq.config_reference import PAGE, render

    page = render()
    if check:
        if not PAGE.is_file() or PAGE.read_text() != page:
            err_console.print(f"{PAGE} is out of date: run `recq config docs`")
            raise typer.Exit(1)
        console.print(f"{PAGE} matches the settings classes")
        return
    PAGE.write_text(page)
    console.print(f"wrote {PAGE}")


# --- offline evaluation and replay ------------------------------------------------------
@app.command("evaluate")
def evaluate(
    log: Annotated[Path, typer.Argument(help="RetailRocket events.csv or recq JSONL.")],
    updates: Annotated[int, typer.Option(help="Training updates of each neural model.")] = 2000,
    seed: Annotated[int, typer.Option(help="Seed of the random split and the models.")] = 0,
    split: Annotated[
        list[str] | None,
        typer.Option(help="time and/or random (default: time, the honest one)."),
    ] = None,
    out: Annotated[Path | None, typer.Option(help="Report folder.")] = None,
    knn_k: Annotated[int, typer.Option(min=1, help="session-kNN: neighbours.")] = 100,
    knn_sample: Annotated[
        int, typer.Option(min=1, help="session-kNN: most recent candidate sessions.")
    ] = 500,
) -> None:
    """Offline evaluation (docs/evaluation.md): HR and NDCG at 5/10/20 of S-POP, item-kNN,
    session-kNN, popularity, co-occurrence, a supervised sequence model, DQN, DQN+SQN and
    what a snapshot trained on the log with this environment's RECQ_* settings serves,
    each with a paired bootstrap interval of its difference from the best baseline; by
    target group (empty history, repeat, new item). Same log, seed and settings: the same
    figures."""
    from recq.evaluation.protocol import SPLITS
    from recq.evaluation.run import run_evaluation

    splits = split or ["time"]
    if unknown := set(splits) - set(SPLITS):
        raise typer.BadParameter(f"unknown split {sorted(unknown)}; use time or random")
    target = out or Path("reports") / f"evaluate-{time.strftime('%Y%m%d-%H%M%S')}"
    try:
        run_evaluation(log, updates=updates, seed=seed, splits=splits, out=target,
                       console=console, knn_k=knn_k, knn_sample=knn_sample)  # fmt: skip
    except (FileNotFoundError, ValueError) as exc:
        raise RecqError(str(exc)) from None


@app.command("ope")
def ope(
    source: Annotated[
        str,
        typer.Argument(
            help="A file/folder of slate transitions (JSON lines) or a topic (recq.transitions)."
        ),
    ],
    snapshot: Annotated[
        list[int] | None,
        typer.Option(help="Snapshot versions to score (default: every one in the model store)."),
    ] = None,
    limit: Annotated[int, typer.Option(help="Newest slate transitions used.")] = 20_000,
    json: Annotated[bool, typer.Option("--json", help="One JSON line per policy.")] = False,
) -> None:
    """Off-policy estimates of snapshots (reward per slate) from logged slates, with the
    gate's estimator and others, 90% bootstrap intervals, and each snapshot against the
    one serving (learner/gate.py, learner/ope.py)."""
    from recq.ope import read_source, run_ope
    from schemas.model_store import ModelStore

    settings = _settings()
    store = ModelStore(settings.model_store_dir)
    bootstrap: str | None = None
    if not Path(source).exists():
        bootstrap = checked_bootstrap(settings)
    try:
        with console.status(f"reading slate transitions from {source}..."):
            read = read_source(source, bootstrap_servers=bootstrap,
                               client_options=client_options(settings), limit=limit)  # fmt: skip
        if not read.slates:
            raise ValueError(f"no slate transitions in {source}")
        with console.status(f"scoring {len(read.slates)} logged slates..."):
            explore = load_settings(ExplorationSettings)
            rows, policy = run_ope(read.slates, store, snapshot, explore.exploration_policy())
    except (FileNotFoundError, ValueError) as exc:
        raise RecqError(str(exc)) from None
    if json:
        import orjson

        for row in rows:
            v = row.versus_serving
            print(orjson.dumps({
                "policy": row.name, "slates": len(read.slates), "exploration": policy,
                **{name: vars(i) for name, i in row.estimates.items()},
                "cascade_snips_vs_serving": vars(v) if v else None,
            }).decode())  # fmt: skip
        return
    names = list(rows[0].estimates)
    table = Table("policy", *names, "cascade_snips vs serving",
                  title=f"{len(read.slates)} logged slates; targets explore as {policy}; "
                  "reward per slate [90% interval]")  # fmt: skip
    for row in rows:
        cells = [f"{i.estimate:.4f} [{i.low:.4f}, {i.high:.4f}]" for i in row.estimates.values()]
        v = row.versus_serving
        table.add_row(row.name, *cells,
                      f"{v.estimate:+.4f} [{v.low:+.4f}, {v.high:+.4f}]" if v else "")  # fmt: skip
    console.print(table)
    if read.skipped:
        console.print(f"[yellow]{read.skipped} records were not valid transitions (skipped)[/]")


@app.command("replay")
def replay(
    log: Annotated[Path, typer.Argument(help="RetailRocket events.csv or recq JSONL.")],
    speed: Annotated[
        float, typer.Option(help="1 = real time, 60 = an hour a minute, 0 = flat out.")
    ] = 1.0,
    limit: Annotated[int | None, typer.Option(help="Replay only the first N events.")] = None,
) -> None:
    """Produce a log to the event topics (keyed by user_id) at its own pace x speed."""
    from recq.replay import replay as run_replay
    from recq.topics import ensure_topics

    settings = _settings()
    bootstrap = checked_bootstrap(settings)
    options = client_options(settings)
    catalog = TopicCatalog(prefix=settings.topic_prefix, partitions=settings.partitions)

    async def main() -> None:
        await ensure_topics(catalog, bootstrap_servers=bootstrap,
                            replication_factor=settings.replication_factor,
                            client_options=options)  # fmt: skip
        sent = await run_replay(log, bootstrap=bootstrap, catalog=catalog,
                                client_options=options, speed=speed, limit=limit,
                                console=console)  # fmt: skip
        console.print("replayed " + ", ".join(f"{n} {t}" for t, n in sorted(sent.items())))

    try:
        asyncio.run(main())
    except (FileNotFoundError, ValueError) as exc:
        raise RecqError(str(exc)) from None


# --- demo --------------------------------------------------------------------------------
@app.command("demo")
def demo(
    duration: Annotated[float, typer.Option(help="Seconds to run.")] = 240.0,
    seed: Annotated[int, typer.Option(help="Seed of the simulated shop and shoppers.")] = 1,
    reports: Annotated[Path, typer.Option(help="Where <run>/ is written.")] = Path("reports"),
    misleading: Misleading = 0.0,
    until_served: Annotated[
        int,
        typer.Option(
            min=0,
            help="Stop once the learned arm has been answered from model snapshots this many "
            "times (at most --duration): a smoke run of the whole loop. 0: run the duration.",
        ),
    ] = 0,
) -> None:
    """The closed loop live (what `make demo` runs): broker, worker, learner, serving
    member and simulated shoppers (learned vs co-view vs popularity vs random vs the
    oracle); writes
    reports/<run>/ with metrics.json and plots, and stops everything it started."""
    from recq.closed_loop import run_closed_loop

    settings, reward = _settings(), load_settings(RewardSettings).reward()
    console.print(f"scoring every arm with the configured reward (RECQ_REWARD_*): {reward}")
    run_closed_loop(settings, reward, duration_s=duration, seed=seed, console=console,
                    reports=reports, misleading=misleading, until_served=until_served)  # fmt: skip


@app.command("roundtrip")
def roundtrip(
    events: Annotated[int, typer.Option(help="Shoppers whose journeys are produced.")] = 5,
) -> None:
    """Check a broker: create topics, round-trip sample (and some invalid) events through
    the event contract and the dead-letter topic, stop."""
    from recq.roundtrip import run_roundtrip

    run_roundtrip(_settings(), shoppers=events, console=console)


def main() -> None:
    try:
        app()
    except (RecqError, SettingsError, BrokerNotConfigured, BrokerRefused) as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        raise SystemExit(2) from None
    except ModuleNotFoundError as exc:
        # A role's install (recq/roles.py) lacks what another role's command imports.
        command = command_in(sys.argv[1:])
        if command is None or exc.name is None or exc.name.split(".")[0] in FIRST_PARTY:
            raise
        role = role_of(command)
        err_console.print(
            f"[bold red]error:[/] `recq {command}` needs {exc.name}, which this install "
            f"lacks: it runs in the {role.name} role, installed with "
            + escape(f"pip install '{role.install()}' (or '{role.install('gpu')}' on GPUs)"),
        )
        raise SystemExit(2) from None


if __name__ == "__main__":
    main()
