"""One JSON line per figure, the shape every bench prints (docs/DESIGN.md):

    {"bench": "ingest", "metric": "events_per_s", "value": 1349.0, "unit": "1/s",
     "baseline": "faust_forward", "baseline_value": 3518.0, "ratio": 0.38, ...}

``ratio`` is value / baseline_value, computed here so no bench rounds it differently."""

from __future__ import annotations

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
    print(orjson.dumps(line).decode(), flush=True)
    return line
