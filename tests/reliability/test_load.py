"""The loop under load, stages as processes on the real broker (`make reliability`):

- the learner stopped (SIGSTOP) for 60 s while events and requests keep coming, then
  resumed: the worker writes every transition the log determines (as a multiset), serving
  answers every request, the learner's consumer lag returns to zero and its memory does
  not grow with what piled up (its replay store is bounded);
- a burst of 10x the demo's event rate (~100 events/s) for 60 s, with 10x the requests:
  nothing lost or duplicated, every request answered, the lag drains afterwards, and each
  stage's resident memory stays bounded (peaks reported).

Figures are printed (and recorded in docs/reliability.md); what is asserted is counts."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import pytest

from recq import scrape
from recq.topics import ensure_topics
from schemas.topics import TopicCatalog, TopicRole
from tests.kafka_clients import kafka_options
from tests.reliability.load_harness import (
    MemorySampler,
    Requests,
    exited,
    group_lag,
    produce_paced,
    stage_envs,
    start_stages,
    stop_all,
    tails,
    wait_for_group_caught_up,
)
from tests.streams_harness import (
    actual_multiset,
    assert_same_transitions,
    expected_transitions,
    read_committed,
    scripted_log,
)

pytestmark = [pytest.mark.integration, pytest.mark.reliability, pytest.mark.extended]

DEMO_EVENTS_PER_S = 100  # recq demo's shoppers on this machine (recq/closed_loop.py)


def lag(port: int, name: str) -> float | None:
    """A stage's summed consumer lag, None if it does not answer (or has not measured)."""
    try:
        found = scrape.values(scrape.families(port, timeout_s=2))
    except OSError:
        return None
    return found.get(name)


async def wait_for_lag_zero(port: int, name: str, timeout_s: float) -> float | None:
    """Seconds until the stage reports zero lag (None: not within the timeout)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if await asyncio.to_thread(lag, port, name) == 0:
            return time.monotonic() - start
        await asyncio.sleep(1.0)
    return None


@pytest.mark.timeout(900)
async def test_learner_paused_60_s_under_load(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"p{unique}."
    catalog = TopicCatalog(prefix=prefix, partitions=4)
    await ensure_topics(catalog, bootstrap_servers=kafka_bootstrap, client_options=kafka_options())
    log = scripted_log(users=600, events_per_user=25, seed=41)
    expected = expected_transitions(log)
    envs = stage_envs(kafka_bootstrap, prefix, tmp_path, RECQ_REPLAY_CAPACITY=5000)
    worker_port = int(envs["worker"]["RECQ_METRICS_PORT"])
    learner_group = envs["learner"]["RECQ_LEARNER_GROUP_ID"]
    transitions = catalog.name(TopicRole.TRANSITIONS)
    stages = start_stages(envs, tmp_path)
    memory = MemorySampler({n: s.proc.pid for n, s in stages.items() if s.proc}).start()
    requests = await Requests(kafka_bootstrap, catalog, rate=20).start()
    worker_lag_during_pause: list[float] = []
    try:
        production = asyncio.create_task(
            produce_paced(kafka_bootstrap, catalog, log, rate=DEMO_EVENTS_PER_S)
        )
        await asyncio.sleep(40)
        learner = stages["learner"].proc
        assert learner is not None and learner.poll() is None, stages["learner"].log_tail()
        before = dict(memory.peak)
        os.killpg(learner.pid, signal.SIGSTOP)
        paused = time.monotonic()
        while time.monotonic() - paused < 60:
            worker_lag = await asyncio.to_thread(lag, worker_port, "recq_streams_consumer_lag")
            if worker_lag is not None:
                worker_lag_during_pause.append(worker_lag)
            await asyncio.sleep(2)
        lag_at_resume = await group_lag(kafka_bootstrap, learner_group, transitions)
        os.killpg(learner.pid, signal.SIGCONT)
        memory.reset_peaks()
        recovered_s = await wait_for_group_caught_up(kafka_bootstrap, learner_group,
                                                     transitions, 180)  # fmt: skip
        after = dict(memory.peak)
        await production
        got = await read_committed(kafka_bootstrap, catalog, want=sum(expected.values()),
                                   timeout_s=300, settle_s=10)  # fmt: skip
        await requests.stop_sending()
        unanswered = await requests.all_answered(120)
        gone = exited(stages)
        logs = tails(stages, 30)
    finally:
        with contextlib.suppress(ProcessLookupError):
            if stages["learner"].proc:
                os.killpg(stages["learner"].proc.pid, signal.SIGCONT)
        stop_all(stages)
        await memory.stop()
        await requests.close()

    actual = await actual_multiset(kafka_bootstrap, catalog, got.transitions)
    print(f"learner paused 60 s: worker lag during the pause max "
          f"{max(worker_lag_during_pause, default=float('nan')):.0f}; learner behind by "
          f"{lag_at_resume} transitions at resume, caught up {recovered_s} s after; "
          f"learner RSS peak {before['learner']:.0f} MB "
          f"before, {after['learner']:.0f} MB after; requests {len(requests.acked)}, "
          f"{len(unanswered)} unanswered, {requests.twice()} twice")  # fmt: skip
    assert not gone, f"stages exited: {gone}\n{logs}"
    assert_same_transitions(expected, actual, "learner paused; ", logs)
    assert not unanswered, f"{len(unanswered)} requests never answered\n{logs}"
    assert recovered_s is not None, f"the learner's lag did not return to 0\n{logs}"
    # Bounded: what piled up during the pause went through a fixed-size replay store.
    assert after["learner"] <= 1.25 * before["learner"] + 150, (before, after)


@pytest.mark.timeout(900)
async def test_a_burst_of_10x_the_demo_rate_for_60_s(
    kafka_bootstrap: str, unique: str, tmp_path: Path
) -> None:
    prefix = f"u{unique}."
    catalog = TopicCatalog(prefix=prefix, partitions=4)
    await ensure_topics(catalog, bootstrap_servers=kafka_bootstrap, client_options=kafka_options())
    steady = scripted_log(users=160, events_per_user=25, seed=51)  # ~40 s at the demo rate
    burst = scripted_log(users=2400, events_per_user=25, seed=52)  # ~60 s at 10x
    expected = expected_transitions(steady + burst)
    envs = stage_envs(kafka_bootstrap, prefix, tmp_path)
    worker_port = int(envs["worker"]["RECQ_METRICS_PORT"])
    learner_group = envs["learner"]["RECQ_LEARNER_GROUP_ID"]
    transitions = catalog.name(TopicRole.TRANSITIONS)
    stages = start_stages(envs, tmp_path)
    memory = MemorySampler({n: s.proc.pid for n, s in stages.items() if s.proc}).start()
    requests = await Requests(kafka_bootstrap, catalog, rate=10).start()
    try:
        await produce_paced(kafka_bootstrap, catalog, steady, rate=DEMO_EVENTS_PER_S)
        baseline = dict(memory.peak)
        memory.reset_peaks()
        requests.rate = 100
        burst_start = time.monotonic()
        await produce_paced(kafka_bootstrap, catalog, burst, rate=10 * DEMO_EVENTS_PER_S)
        burst_s = time.monotonic() - burst_start
        requests.rate = 10
        drained_s = await wait_for_lag_zero(worker_port, "recq_streams_consumer_lag", 300)
        learner_drained_s = await wait_for_group_caught_up(kafka_bootstrap, learner_group,
                                                           transitions, 300)  # fmt: skip
        peaks = dict(memory.peak)
        got = await read_committed(kafka_bootstrap, catalog, want=sum(expected.values()),
                                   timeout_s=300, settle_s=10)  # fmt: skip
        await requests.stop_sending()
        unanswered = await requests.all_answered(180)
        gone = exited(stages)
        logs = tails(stages, 30)
    finally:
        stop_all(stages)
        await memory.stop()
        await requests.close()

    actual = await actual_multiset(kafka_bootstrap, catalog, got.transitions)
    print(f"burst: {len(burst)} records in {burst_s:.0f} s; worker lag drained "
          f"{drained_s} s after it, learner's {learner_drained_s} s; RSS MB baseline "
          f"{ {n: round(v) for n, v in baseline.items()} } peak "
          f"{ {n: round(v) for n, v in peaks.items()} }; requests {len(requests.acked)}, "
          f"{len(unanswered)} unanswered, {requests.twice()} twice")  # fmt: skip
    assert not gone, f"stages exited: {gone}\n{logs}"
    assert_same_transitions(expected, actual, "burst; ", logs)
    assert not unanswered, f"{len(unanswered)} requests never answered\n{logs}"
    assert drained_s is not None and learner_drained_s is not None, logs
    for name, peak in peaks.items():  # bounded: not growing with the backlog
        assert peak <= 2 * baseline[name] + 300, (name, baseline, peaks)
