"""What the contender scripts share."""

from __future__ import annotations

import statistics


def summarize(latencies_ms: list[float]) -> dict[str, float]:
    cuts = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    return {
        "p50_ms": round(cuts[49], 3),
        "p95_ms": round(cuts[94], 3),
        "min_ms": round(min(latencies_ms), 3),
        "max_ms": round(max(latencies_ms), 3),
        "mean_ms": round(statistics.fmean(latencies_ms), 3),
    }
