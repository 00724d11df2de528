"""Token-weighted percentiles and Nemotron-CC's ensemble, as pure functions.

A weighted percentile uses the inverted CDF (Nemotron-CC's helper): sort the scores, accumulate
the weights, and percentile q is the first score whose cumulative share reaches q. Calibration
stores each scorer's quantiles on a grid of ``GRID`` steps (0.01% apart), so thresholds at any
percentile or top share come from it without re-reading the scores.

Nemotron-CC: each scorer's score gets a bucket 0-19 from its 19 percentiles 5, 10, ..., 95
(``np.digitize``); the ensemble bucket is the maximum over scorers; five levels map buckets
0-6, 7-11, 12-17, 18 and 19 to 0 (low) .. 4 (high).
"""

from __future__ import annotations

import numpy as np

GRID = 10_000
BUCKET_PERCENTILES = tuple(range(5, 100, 5))  # 19 thresholds -> 20 buckets
LEVEL_NAMES = ("low", "medium-low", "medium", "medium-high", "high")
_LEVEL_OF_BUCKET = np.array([0] * 7 + [1] * 5 + [2] * 6 + [3] + [4], dtype=np.int8)


def weighted_quantiles(scores: np.ndarray, weights: np.ndarray, qs: np.ndarray) -> np.ndarray:
    """The inverted-CDF weighted quantile of ``scores`` at each q in ``qs`` (0..1)."""
    scores = np.asarray(scores, dtype=np.float64)
    weights = np.asarray(weights, dtype=np.float64)
    if scores.size == 0:
        return np.full(len(qs), np.nan)
    order = np.argsort(scores, kind="stable")
    sorted_scores, cumulative = scores[order], np.cumsum(weights[order])
    total = cumulative[-1]
    if total <= 0:  # every weight zero: count documents instead
        cumulative, total = np.arange(1, scores.size + 1, dtype=np.float64), float(scores.size)
    # (a relative tolerance: 0.55 * 100 is 55.000000000000007 in binary, which must not skip the 55th)
    targets = np.asarray(qs, dtype=np.float64) * total * (1 - 1e-12)
    index = np.searchsorted(cumulative, targets, side="left")
    return sorted_scores[np.minimum(index, scores.size - 1)]


def quantile_grid(scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    return weighted_quantiles(scores, weights, np.arange(GRID + 1) / GRID)


def at(grid: list[float] | np.ndarray, q: float) -> float:
    """The grid's quantile at q (the grid point at or below it)."""
    return float(np.asarray(grid)[int(np.floor(q * GRID + 1e-9))])


def bucket_thresholds(grid: list[float] | np.ndarray) -> np.ndarray:
    return np.array([at(grid, p / 100) for p in BUCKET_PERCENTILES])


def buckets(scores: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """0-19 per score (``np.digitize`` with the 19 thresholds, as Nemotron-CC)."""
    return np.digitize(np.asarray(scores, dtype=np.float64), thresholds).astype(np.int8)


def levels(ensemble_buckets: np.ndarray) -> np.ndarray:
    return _LEVEL_OF_BUCKET[np.asarray(ensemble_buckets, dtype=np.int64)]


def top_share_threshold(grid: list[float] | np.ndarray, share: float) -> float:
    """The score from which the best ``share`` of the weight is kept (keep score >= it)."""
    return at(grid, 1.0 - share)
