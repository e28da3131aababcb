"""Serving latency: end-to-end (request produced -> recommendation consumed) p50/p99 at
fixed offered rates through one `recq serve` process with a 50,000-item snapshot (served
through its candidate index; `--exact`: by the in-graph top-K), and in
the same run the model-only latency of onnxruntime vs torch `inference_mode` on the same
policy at batch 1 and 64. Each rate is also offered, in the same run, to a bare
transport member (bench/kafka_echo.py: answers at once, no state or model), the floor
that Kafka and the Python clients set here; the e2e lines give it as the baseline. Prints
JSON lines (bench/report.py). Run after `make test`:

    .venv/bin/python bench/serve.py [--rates 200,500,1000] [--seconds 10] [--profile DIR]

Each e2e line also carries the member's own CPU time per request (user + system of the
`recq serve` process over the rate's run, all threads) beside the bare member's.

Starts the embedded broker unless RECQ_BOOTSTRAP_SERVERS is set. The broker, the server
and this load generator share the machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import torch
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.ingest import broker, cpu_seconds, setting, start_py_spy, top_of_profile
from bench.report import figure
from bench.serve_catalog import catalog_net
from learner.export import SnapshotExporter, check_parity, io_spec, sample_states
from learner.qnet import QNetwork
from learner.retrieval import RetrievalExporter
from recq.processes import StageProcess, recq_command
from recq.topics import ensure_topics
from schemas.codec import decode, encode
from schemas.manifest import OUTPUT_NAMES
from schemas.model_store import ModelStore
from schemas.records import ClickEvent, Recommendation, RecRequest
from schemas.reward import Reward
from schemas.topics import EVENT_ROLES, TopicCatalog, TopicRole
from tests.streams_harness import worker_env

ITEMS, L, K, USERS = 50_000, 10, 50, 2_000


def line(metric: str, value: float, unit: str, **extra: Any) -> None:
    figure("serve", metric, value, unit, **extra)


def model_only(model: bytes, net: QNetwork) -> None:
    """onnxruntime vs torch inference_mode on the same top-K policy."""
    from learner.export import TopKPolicy

    policy = TopKPolicy(net, K).eval()
    session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
    for batch in (1, 64):
        items, events, ages = sample_states(batch, L, ITEMS, seed=batch)
        exclude = torch.full((batch, 4), -1, dtype=torch.int64)
        feeds = {"items": items.numpy(), "events": events.numpy(), "ages": ages.numpy(),
                 "exclude": exclude.numpy()}  # fmt: skip

        def run_ort(feeds: dict[str, np.ndarray] = feeds) -> None:
            session.run(list(OUTPUT_NAMES), feeds)

        def run_torch(inputs: tuple[torch.Tensor, ...] = (items, events, ages, exclude)) -> None:
            with torch.inference_mode():
                policy(*inputs)

        times = {}
        for name, fn in (("onnxruntime", run_ort), ("torch", run_torch)):
            for _ in range(20):
                fn()
            samples = []
            for _ in range(200 if batch == 1 else 60):
                start = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - start)
            times[name] = float(np.median(samples)) * 1000
        line(f"model_speedup_b{batch}", times["torch"] / times["onnxruntime"], "x",
             baseline="torch_inference_mode", baseline_value=round(times["torch"], 3),
             ratio=False, onnxruntime_ms=round(times["onnxruntime"], 3))  # fmt: skip


@dataclass
class Load:
    """One member under test: its topics, the client reading its answers, its process."""

    catalog: TopicCatalog
    consumer: AIOKafkaConsumer
    process: StageProcess


async def offered_load(load: Load, rate: int, seconds: float, producer: AIOKafkaProducer
                       ) -> tuple[float, float, dict[str, object]]:  # fmt: skip
    """Offer ``rate`` requests/s for ``seconds``: (p50, p99, details) of end to end ms."""
    consumer = load.consumer
    sent: dict[str, float] = {}
    latencies: list[float] = []
    # Where the time goes, from the recommendation's own stamps (ms, one machine's clock):
    # request produced -> consumed by the server, server (batching, model, policy), and
    # recommendation produced -> consumed here.
    stages: dict[str, list[int]] = {"to_server": [], "in_server": [], "to_client": []}
    topic = load.catalog.name(TopicRole.REC_REQUESTS)
    tag = uuid.uuid4().hex[:6]
    done = asyncio.Event()

    async def receive() -> None:
        while not (done.is_set() and not sent):  # answered requests leave ``sent``
            for messages in (await consumer.getmany(timeout_ms=50)).values():
                now = time.perf_counter()
                now_ms = int(time.time() * 1000)
                for m in messages:
                    r = decode(m.value, Recommendation)
                    if isinstance(r, Recommendation) and r.request_id in sent:
                        latencies.append((now - sent.pop(r.request_id)) * 1000)
                        stages["to_server"].append(r.received_ts_ms - r.requested_ts_ms)
                        stages["in_server"].append(r.served_ts_ms - r.received_ts_ms)
                        stages["to_client"].append(now_ms - r.served_ts_ms)

    receiver = asyncio.create_task(receive())
    assert load.process.proc is not None
    cpu_start = cpu_seconds(load.process.proc.pid)
    start = time.perf_counter()
    n = int(rate * seconds)
    for i in range(n):
        due = start + i / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        user = f"user-{i % USERS}"
        r = RecRequest(request_id=f"{tag}-{i}", user_id=user, k=10, ts_ms=int(time.time() * 1000))
        sent[r.request_id] = time.perf_counter()
        await producer.send(topic, encode(r), key=user.encode())
    done.set()
    try:
        await asyncio.wait_for(receiver, 30)
    except TimeoutError:
        receiver.cancel()
    achieved = n / (time.perf_counter() - start)
    cpu_us = (cpu_seconds(load.process.proc.pid) - cpu_start) * 1e6 / max(1, len(latencies))
    p50, p99 = np.percentile(latencies, [50, 99]) if latencies else (float("nan"),) * 2
    extra: dict[str, object] = {"offered": rate, "answered": len(latencies), "requests": n,
                                "achieved_rate": round(achieved, 1),
                                "cpu_us_per_request": round(cpu_us, 1)}  # fmt: skip
    for stage, values in stages.items():
        if values:
            extra[f"{stage}_p50_ms"], extra[f"{stage}_p99_ms"] = (
                float(v) for v in np.percentile(values, [50, 99])
            )
    return float(p50), float(p99), extra


async def main_async(args: argparse.Namespace, bootstrap: str, root: Path) -> None:
    net = catalog_net(ITEMS)
    model, policy = SnapshotExporter(K, "response").export(net, ITEMS)
    model_only(model, net)
    # Served through its candidate index (as the learner writes a catalog this large by
    # default), or with --exact by the in-graph top-K over all 50,000 items.
    index = None if args.exact else RetrievalExporter(
        "response", candidates=256, min_recall=0.95).export(net, ITEMS)  # fmt: skip
    ModelStore(root / "models").write(
        model=model, item_ids=[f"sku-{i}" for i in range(ITEMS)], step=0,
        k=policy.k, history_length=L, encoder="gru", reward=Reward(), ranking="response",
        io_spec=io_spec(L, policy.k), parity=check_parity(model, policy), metrics={},
        retrieval=(index.retrieval, index.files) if index else None,
    )  # fmt: skip
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    catalog = TopicCatalog(prefix=prefix, partitions=4)
    echo_catalog = TopicCatalog(prefix=f"{prefix}echo.", partitions=4)
    for c in (catalog, echo_catalog):
        await ensure_topics(c, bootstrap_servers=bootstrap)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    await producer.start()
    now = int(time.time() * 1000)
    clicks = catalog.name(EVENT_ROLES["click"])
    rng = np.random.default_rng(0)
    for u in range(USERS):
        for j in range(5):
            e = ClickEvent(event_id=f"e{u}-{j}", user_id=f"user-{u}", ts_ms=now,
                           item_id=f"sku-{int(rng.integers(ITEMS))}")  # fmt: skip
            await producer.send(clicks, encode(e), key=e.user_id.encode())
    await producer.flush()
    env = worker_env(bootstrap, prefix, root, RECQ_MODEL_STORE=str(root / "models"),
                     RECQ_SERVE_GROUP_ID=f"{prefix}serve", **dict(args.serve_env))  # fmt: skip
    server = StageProcess(env, root / "serve.log", recq_command("serve", "warning")).start()
    echo_script = str(Path(__file__).with_name("kafka_echo.py"))
    echo_cmd = [sys.executable, echo_script, bootstrap, echo_catalog.prefix]
    echo = StageProcess(env, root / "echo.log", echo_cmd).start()
    spy = start_py_spy(server.proc.pid, args.profile / "serve-profile.txt") if (
        args.profile and server.proc) else None  # fmt: skip
    loads = {}
    for name, c, process in (("recq", catalog, server), ("echo", echo_catalog, echo)):
        consumer = AIOKafkaConsumer(c.name(TopicRole.RECOMMENDATIONS),
                                    bootstrap_servers=bootstrap, auto_offset_reset="latest",
                                    fetch_max_wait_ms=100)  # fmt: skip
        await consumer.start()
        loads[name] = Load(c, consumer, process)
    try:
        for load in loads.values():
            await offered_load(load, 50, 4, producer)  # warm-up (and the members' assignment)
        # Side by side per rate: recq serve, then the bare transport (bench/kafka_echo.py).
        for rate in args.rates:
            p50, p99, extra = await offered_load(loads["recq"], rate, args.seconds, producer)
            e50, e99, echo_extra = await offered_load(loads["echo"], rate, args.seconds, producer)
            extra["scoring"] = "exact" if args.exact else "index"
            extra["echo_achieved_rate"] = echo_extra["achieved_rate"]
            extra["echo_cpu_us_per_request"] = echo_extra["cpu_us_per_request"]
            for metric, value, floor in (("p50", p50, e50), ("p99", p99, e99)):
                line(f"e2e_{metric}_ms_at_{rate}", value, "ms", baseline="kafka_echo",
                     baseline_value=floor, **extra)  # fmt: skip
    finally:
        server.stop()
        echo.stop()
        if spy is not None:
            spy.wait(timeout=60)
            profile = args.profile / "serve-profile.txt"
            print(f"serve profile (py-spy; % of samples in / under each function): {profile}")
            for share, inclusive, frame in top_of_profile(profile, 25):
                print(f"  {share:5.1f}% {inclusive:5.1f}%  {frame}")
        for load in loads.values():
            await load.consumer.stop()
        await producer.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rates", type=lambda s: [int(x) for x in s.split(",")],
                        default=[200, 500, 1000])  # fmt: skip
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--serve-env", action="append", default=[], metavar="RECQ_X=VALUE",
                        type=setting,
                        help="a setting for the measured `recq serve` (repeatable)")  # fmt: skip
    parser.add_argument(
        "--exact",
        action="store_true",
        help="serve by the in-graph top-K over the whole catalog, no index",
    )
    parser.add_argument("--profile", type=Path, metavar="DIR",
                        help="sample the serving member with py-spy (on PATH) into DIR and "
                        "print the top of the profile")  # fmt: skip
    args = parser.parse_args()
    if args.profile:
        args.profile.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="recq-serve-bench-") as tmp, broker() as bootstrap:
        asyncio.run(main_async(args, bootstrap, Path(tmp)))


if __name__ == "__main__":
    main()
