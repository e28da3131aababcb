"""``recq ope SOURCE``: off-policy estimates of snapshots from logged slates.

SOURCE is a file or folder of JSON lines (slate transitions as the transitions topic
carries them; other lines are skipped and counted) or, when no such path exists, a topic
(the transitions topic, read committed, its newest ``limit`` records). Each snapshot in
the model store (or those named) is scored as the gate scores a candidate
(``learner.gate``): its ONNX top-K drawn from with serving's exploration (the
``RECQ_EXPLORATION`` settings), every estimator of ``learner.ope`` with a bootstrap
interval, and its difference from the snapshot members serve now.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition

from learner.gate import (
    CLIP,
    LEVEL,
    LoggedSlate,
    SlateWindow,
    SnapshotPolicy,
    logged,
    with_target,
)
from learner.ope import (
    Interval,
    LoggedSlates,
    bootstrap,
    cascade_ips,
    cascade_snips,
    cascade_snips_terms,
    paired_snips_bootstrap,
    slate_snips,
    slot_snips,
)
from schemas.codec import decode_transitions
from schemas.exploration import Policy
from schemas.manifest import MODEL_FILE
from schemas.model_store import ModelStore
from schemas.records import DeadLetter, SlateTransition, Transition

ESTIMATORS = {"cascade_snips": cascade_snips, "cascade_ips": cascade_ips,
              "slot_snips": slot_snips, "slate_snips": slate_snips}  # fmt: skip


@dataclass
class Read:
    slates: list[SlateTransition]
    skipped: int = 0  # lines or records that are not valid transitions

    def add(self, decoded: list[Transition | SlateTransition] | DeadLetter) -> None:
        """One line or message (a transition or a batch of them): keep its slates."""
        if isinstance(decoded, DeadLetter):
            self.skipped += 1
        else:
            self.slates += [t for t in decoded if isinstance(t, SlateTransition)]


def read_files(path: Path, limit: int) -> Read:
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    out = Read([])
    for file in files:
        with open(file, "rb") as f:
            for line in f:
                if not line.strip():
                    continue
                out.add(decode_transitions(line.strip()))
    out.slates = out.slates[-limit:]
    return out


async def read_topic(topic: str, *, bootstrap_servers: str, client_options: dict[str, object],
                     limit: int) -> Read:  # fmt: skip
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False,
                                isolation_level="read_committed", **client_options)  # fmt: skip
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer._client.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            raise ValueError(f"{topic} is neither a path nor a topic on the broker")
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        begin, end = await consumer.beginning_offsets(tps), await consumer.end_offsets(tps)
        share = max(1, limit // len(tps))
        for tp in tps:
            consumer.seek(tp, max(begin[tp], end[tp] - share))
        out = Read([])
        left = {tp for tp in tps if end[tp] > max(begin[tp], end[tp] - share)}
        while left:
            batches = await consumer.getmany(timeout_ms=1_000, max_records=5_000)
            for messages in batches.values():
                for m in messages:
                    out.add(decode_transitions(m.value))
            # Transaction markers take offsets too: done when the position reaches the end.
            left = {tp for tp in left if await consumer.position(tp) < end[tp]}
        out.slates = out.slates[-limit:]  # a batch message holds many: the newest ``limit``
        return out
    finally:
        await consumer.stop()


@dataclass(frozen=True)
class Row:
    name: str
    estimates: dict[str, Interval]
    versus_serving: Interval | None  # cascade_snips(candidate - serving), paired


def evaluate(slates: list[SlateTransition], store: ModelStore, versions: list[int],
             policy: Policy, resamples: int = 300) -> tuple[list[Row], str]:  # fmt: skip
    """One row for the logging policies (on-policy: their mean reward per slate) and one
    per snapshot; and the exploration the targets were given."""
    window = SlateWindow(len(slates) or 1)
    window.add(slates)
    rows_in: list[LoggedSlate] = window.recent()
    if not rows_in:
        raise ValueError("no slate transitions to evaluate on")
    slots = max(len(s.slate) for s in rows_in)
    base = logged(rows_in, slots)

    def intervals(data: LoggedSlates) -> dict[str, Interval]:
        return {name: bootstrap(fn, data, resamples=resamples, level=LEVEL, seed=1)
                for name, fn in ESTIMATORS.items()}  # fmt: skip

    targets: dict[int, LoggedSlates] = {}
    for version in versions:
        manifest = store.manifest(version)
        model = (store.path(version) / MODEL_FILE).read_bytes()
        snapshot = SnapshotPolicy(model, manifest.n_items, manifest.history_length, str(version))
        targets[version] = with_target(base, *snapshot.probabilities(rows_in, policy, slots))
    serving = store.serving_version()
    reference = targets.get(serving) if serving is not None else None
    out = [Row("logging policies", intervals(base), None)]
    for version, data in targets.items():
        versus = (  # the gate's own interval (learner.gate), all slots
            paired_snips_bootstrap(
                cascade_snips_terms(data),
                cascade_snips_terms(reference),
                resamples=resamples,
                level=LEVEL,
            )
            if reference is not None and version != serving
            else None
        )
        label = f"snapshot {version}" + (" (serving)" if version == serving else "")
        out.append(Row(label, intervals(data), versus))
    return out, f"{policy.name}, clip {CLIP:g}"


def run_ope(slates: list[SlateTransition], store: ModelStore, versions: list[int] | None,
            policy: Policy) -> tuple[list[Row], str]:  # fmt: skip
    chosen = versions if versions else store.versions()
    missing = [v for v in chosen if v not in store.versions()]
    if missing:
        raise ValueError(f"no snapshot {missing} in {store.root}: see `recq snapshots list`")
    return evaluate(slates, store, chosen, policy)


def read_source(source: str, *, bootstrap_servers: str | None,
                client_options: dict[str, object], limit: int) -> Read:  # fmt: skip
    path = Path(source)
    if path.exists():
        return read_files(path, limit)
    if bootstrap_servers is None:
        raise ValueError(f"{source} is not a path, and no broker is configured to read it from")
    return asyncio.run(read_topic(source, bootstrap_servers=bootstrap_servers,
                                  client_options=client_options, limit=limit))  # fmt: skip
