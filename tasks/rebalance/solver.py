"""The budget solver: how many times each document of one cell is written.

Each document has a token count ``t`` and a preference ``w`` (rehydration x quality weight);
the cell has a target ``T`` in tokens and bounds ``lo <= repeats <= hi`` (min/max epochs).
Every document's ideal share is ``v = clamp(lambda * w, lo, hi)`` (``lo`` where ``w`` is 0) with
``lambda`` solved exactly so that ``sum(t * v) = T`` (a piecewise-linear equation); a cell
without a target of its own takes ``lambda = 1``: every document at its weight, as FineWeb2
rehydrates. Whole epochs first: each document gets ``floor(v)``. Then the cut: the documents
that may take one more copy are ordered by an Efraimidis-Spirakis key ``log(u) / frac(v)``
(``u`` uniform from a hash of the seed and the id, so a larger fraction comes earlier and the
order of a cell's downsampling is a weighted sample without replacement) and take one copy each
until the budget: the cell lands within one document's tokens of ``T``.

Everything depends only on the documents (ids, counts, weights), the target and the seed: the
caller hands each cell's documents in a canonical order (by key, then id), never shard order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Bounds:
    low: int  # tokens when every document is at min_epochs
    high: int  # tokens when every document with a positive weight is at max_epochs


def bounds(tokens: np.ndarray, weights: np.ndarray, lo: int, hi: int) -> Bounds:
    positive = weights > 0
    low = int(tokens.sum()) * lo
    return Bounds(low, int(tokens[positive].sum()) * hi + int(tokens[~positive].sum()) * lo)


def uniform(keys: np.ndarray) -> np.ndarray:
    """uint64 hashes as floats in (0, 1)."""
    return (keys.astype(np.float64) + 0.5) / 2.0**64


def solve_lambda(tokens: np.ndarray, weights: np.ndarray, target: int, lo: int, hi: int) -> float:
    """``lambda`` with ``sum(t * clamp(lambda * w, lo, hi)) = target`` (for ``low < target < high``).

    ``f(lambda)`` is continuous, non-decreasing and linear between the breakpoints ``lo / w`` and
    ``hi / w``: evaluate it at every breakpoint from cumulative sums, find the segment holding the
    target and solve the line there."""
    positive = weights > 0
    t, w = tokens[positive].astype(np.float64), weights[positive]
    base = float(tokens.sum()) * lo  # f at lambda = 0: everything at lo
    starts, ends = lo / w, hi / w  # where each document leaves lo, and reaches hi
    by_start, by_end = np.argsort(starts, kind="stable"), np.argsort(ends, kind="stable")
    points = np.unique(np.concatenate([starts, ends]))
    # Documents rising at or before a point, and those already capped at it.
    rising = np.searchsorted(starts[by_start], points, side="right")
    capped = np.searchsorted(ends[by_end], points, side="right")
    tw_start = np.concatenate([[0.0], np.cumsum((t * w)[by_start])])
    t_start = np.concatenate([[0.0], np.cumsum(t[by_start])])
    tw_end = np.concatenate([[0.0], np.cumsum((t * w)[by_end])])
    t_end = np.concatenate([[0.0], np.cumsum(t[by_end])])
    slope = tw_start[rising] - tw_end[capped]
    values = base + points * slope - lo * t_start[rising] + hi * t_end[capped]
    k = int(np.searchsorted(values, target, side="right")) - 1
    if k < 0:
        return float(points[0])
    if slope[k] <= 0:
        return float(points[k])
    return float(points[k] + (target - values[k]) / slope[k])


def solve_cell(tokens: np.ndarray, weights: np.ndarray, keys: np.ndarray, target: int, lo: int, hi: int,
               natural: bool = False) -> tuple[np.ndarray, float]:
    """Each document's repeats (int64) and the scale ``lambda``.

    ``tokens``, ``weights`` and ``keys`` (uint64 seeded hashes) are in the cell's canonical order.
    Outside ``[low, high]`` the cell is infeasible: every document at its bound (the caller has
    decided to report it rather than fail)."""
    positive = weights > 0
    limit = bounds(tokens, weights, lo, hi)
    if target <= limit.low:
        return np.full(len(tokens), lo, dtype=np.int64), 0.0
    if target >= limit.high and not natural:
        return np.where(positive, hi, lo).astype(np.int64), float("inf")
    scale = 1.0 if natural else solve_lambda(tokens, weights, target, lo, hi)
    ideal = np.where(positive, np.clip(scale * weights, lo, hi), lo)
    whole = np.floor(ideal).astype(np.int64)
    left = target - int((whole * tokens).sum())
    repeats = whole
    if left > 0:
        can_grow = positive & (whole < hi)
        fraction = ideal - whole
        log_u = np.log(uniform(keys))
        # Documents with a fractional share first, by their weighted-sampling key; then (rarely,
        # where rounding left a few tokens) the others that may grow, by their weight.
        group = np.where(fraction > 0, 0, 1)
        key = np.where(fraction > 0, log_u / np.where(fraction > 0, fraction, 1.0), log_u / np.where(positive, weights, 1.0))
        candidates = np.flatnonzero(can_grow)
        order = candidates[np.lexsort((candidates, -key[candidates], group[candidates]))]
        running = np.cumsum(tokens[order])
        fits = int(np.searchsorted(running, left, side="right"))
        take = order[:fits]
        if fits < len(order):  # the document crossing the budget: in when that lands closer to it
            below = int(running[fits - 1]) if fits else 0
            if int(running[fits]) - left < left - below:
                take = order[: fits + 1]
        repeats = whole.copy()
        repeats[take] += 1
    return repeats, scale
