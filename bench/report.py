"""One JSON line per figure, the shape every bench prints (docs/DESIGN.md):

    {"bench": "ingest", "metric": "events_per_s", "value": 1349.0, "unit": "1/s",
     "baseline": "faust_forward", "baseline_value": 3518.0, "ratio": 0.38, ...}

``ratio`` is value / baseline_value, computed here so no bench rounds it differently;
``torch_threads`` is added wherever the bench computes with torch."""

from __future__ import annotations

import sys

import orjson


def figure(
    bench: str,
    metric: str,
    value: float,
    unit: str,
    *,
    baseline: str | None = None,
    baseline_value: float | None = None,
    digits: int = 3,
    ratio: bool = True,
    **extra: object,
) -> dict[str, object]:
    """Print one figure as a JSON line (flushed) and return it. ``ratio=False`` where
    the value already is the comparison (a speed-up) and value / baseline means nothing."""
    line: dict[str, object] = {"bench": bench, "metric": metric, "value": round(value, digits),
                               "unit": unit}  # fmt: skip
    if baseline is not None and baseline_value is not None:
        line.update(baseline=baseline, baseline_value=round(baseline_value, digits))
        if ratio:
            line["ratio"] = round(value / baseline_value, 3) if baseline_value else None
    line.update(extra)
    # The compute threads the figure was measured with, where this process computes with
    # torch (on shared cores a thread count can move a figure 40x: docs/performance.md).
    if "torch" in sys.modules and "torch_threads" not in line:
        line["torch_threads"] = sys.modules["torch"].get_num_threads()
    print(orjson.dumps(line).decode(), flush=True)
    return line
