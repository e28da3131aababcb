"""Reading a recq process's Prometheus endpoint: for `recq health`, the demo's live
table and the tests that check what a running stage exports."""

from __future__ import annotations

import urllib.request

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families


def families(port: int, timeout_s: float) -> list[Metric]:
    """The metric families at 127.0.0.1:``port``/metrics; OSError when it does not answer."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s) as r:
        return list(text_string_to_metric_families(r.read().decode()))


def names(found: list[Metric]) -> set[str]:
    """Every exported name as a query writes it (a counter's with ``_total``), also for
    labelled families that have no sample yet."""
    return {f.name + ("_total" if f.type == "counter" else "") for f in found}


def values(found: list[Metric]) -> dict[str, float]:
    """Each sample name summed over its labels, and each labelled sample on its own as
    ``name{label="value",...}``."""
    out: dict[str, float] = {}
    for family in found:
        for sample in family.samples:
            out[sample.name] = out.get(sample.name, 0.0) + float(sample.value)
            if sample.labels:
                labels = ",".join(f'{k}="{v}"' for k, v in sorted(sample.labels.items()))
                out[f"{sample.name}{{{labels}}}"] = float(sample.value)
    return out


def histogram_quantile(scraped: dict[str, float], name: str, q: float) -> float | None:
    """The q-quantile of histogram ``name`` from ``values()`` output, interpolated
    linearly inside its bucket as Prometheus' ``histogram_quantile`` does (None when it
    has no observations; the largest finite bound when q falls in the +Inf bucket)."""
    prefix = f'{name}_bucket{{le="'
    buckets = sorted(
        (float(key[len(prefix) : -2]), count)
        for key, count in scraped.items()
        if key.startswith(prefix)
    )
    if not buckets or buckets[-1][1] <= 0:
        return None
    rank = q * buckets[-1][1]
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in buckets:
        if count >= rank:
            if bound == float("inf"):
                return lower_bound
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (
                count - lower_count
            )
        lower_bound, lower_count = bound, count
    return lower_bound
