"""What the bench's measurements share: the windows they time and the figures of a list of timings."""

from __future__ import annotations

import numpy as np

#: Timed calls left out of the figures at the start of a measurement (allocation, caches).
WARMUP = 20


def timing_stats(seconds: list[float]) -> dict:
    """``median_ms`` and ``p99_ms`` of timings in seconds, the first :data:`WARMUP` left out when there are enough."""
    values = np.asarray(seconds[WARMUP:] if len(seconds) > 2 * WARMUP else seconds) * 1e3
    return {"median_ms": round(float(np.median(values)), 4), "p99_ms": round(float(np.percentile(values, 99)), 4)}


def sample_windows(model, count: int) -> np.ndarray:
    """``count`` windows of the model's seed windows (random token windows when it has none), seeded."""
    rng = np.random.default_rng(0)
    if model.seed_windows:
        base = np.asarray(model.seed_windows)
        return base[rng.integers(len(base), size=count)]
    return rng.integers(0, len(model.vocabulary), (count, model.window))
