"""The streams worker's per-event logic alone (decode, vocabulary, sessionize, encode the
transitions and the session's Table value; no Kafka), and in the same run the decode
alone, on the same events: what the rules cost beyond parsing the contract.

    .venv/bin/python bench/assembler.py [--events 20000]

Runs against the recq checkout it sits in, or the one named by RECQ_BENCH_ROOT (to
compare two versions of the code on one machine, alternating runs).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, os.environ.get("RECQ_BENCH_ROOT") or str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # this bench/, for report.py

from report import figure
from workload import make_events

from schemas.codec import Limits, Source, decode
from schemas.records import Event
from schemas.topics import EVENT_ROLES, TopicCatalog
from streams.assembler import TransitionAssembler
from streams.session import Rules, Sessionizer
from streams.state import WriteThrough

CATALOG = TopicCatalog(prefix="b.", partitions=1)


class ListVocabulary:
    def __init__(self) -> None:
        self.index: dict[str, int] = {}

    async def indices(self, item_ids: Sequence[str]) -> list[int]:
        return [self.index.setdefault(i, len(self.index)) for i in item_ids]


async def assemble(batch: list[tuple[str, bytes, bytes]]) -> float:
    assembler = TransitionAssembler(
        catalog=CATALOG, sessionizer=Sessionizer(Rules(reorder_window_ms=0)),
        vocabulary=ListVocabulary(), limits=Limits(),
    )  # fmt: skip
    table: dict[bytes, bytes] = {}
    sessions = WriteThrough(table)  # the per-event writes, over plain bytes
    start = time.perf_counter()
    for n, (kind, key, value) in enumerate(batch):
        source = Source(CATALOG.name(EVENT_ROLES[kind]), 0, n)  # type: ignore[index]
        await assembler.handle(sessions, key=key, value=value, source=source,
                               wall_ms=int(time.time() * 1000))  # fmt: skip
    return len(batch) / (time.perf_counter() - start)


def decode_only(batch: list[tuple[str, bytes, bytes]]) -> float:
    start = time.perf_counter()
    for _, _, value in batch:
        decode(value, Event)
    return len(batch) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--users", type=int, default=500)
    args = parser.parse_args()
    batch, _ = make_events(args.events, args.users, 2_000)
    asyncio.run(assemble(batch[:2_000]))  # warm-up
    rate, baseline = asyncio.run(assemble(batch)), decode_only(batch)
    figure("assembler", "events_per_s", rate, "1/s", baseline="decode_only",
           baseline_value=baseline, digits=1, events=args.events,
           root=os.environ.get("RECQ_BENCH_ROOT", "this checkout"))  # fmt: skip


if __name__ == "__main__":
    main()
