"""Latency summaries shared by bench/sse.py and its subscriber processes (no gevent here)."""


def percentile(values, fraction):
    """Nearest-rank percentile of sorted ``values``."""
    if not values:
        return None
    index = min(len(values) - 1, max(0, int(round(fraction * len(values) + 0.5)) - 1))
    return values[index]


def summarize(latencies):
    latencies = sorted(latencies)
    return {"count": len(latencies), "min": latencies[0] if latencies else None,
            "p50": percentile(latencies, 0.50), "p99": percentile(latencies, 0.99),
            "max": latencies[-1] if latencies else None}
