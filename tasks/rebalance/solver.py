"""The budget solver: how many times each document of one cell is written.

Each document has a token count ``t`` and a preference ``w`` (rehydration x quality weight);
the cell has a target ``T`` in tokens and bounds ``lo <= repeats <= hi`` (min/max epochs).
Every document's ideal share is ``v = clamp(lambda * w, lo, hi)`` (0 where ``w`` is 0: never
selected) with ``lambda`` solved exactly so that ``sum(t * v) = T`` (a piecewise-linear
equation); a cell without a target of its own takes ``lambda = 1``: every document at its weight,
as FineWeb2 rehydrates. Whole epochs first: each document gets ``floor(v)``. Then the cut
(``cut``): each document with a fractional share ``frac(v)`` takes one more copy with exactly
that probability, and the copies added weigh ``sum(t * frac(v))`` tokens to within one document,
so the cell lands within one document's tokens of ``T``.

Everything depends only on the documents (ids, counts, weights), the target and the seed: the
caller hands each cell's documents in a canonical order (by key, then id), never shard order.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Bounds:
    low: int  # tokens when every document with a positive weight is at min_epochs
    high: int  # tokens when every document with a positive weight is at max_epochs


def bounds(tokens: np.ndarray, weights: np.ndarray, lo: int, hi: int) -> Bounds:
    counted = int(tokens[weights > 0].sum())
    return Bounds(counted * lo, counted * hi)


def uniform(keys: np.ndarray) -> np.ndarray:
    """uint64 hashes as floats in (0, 1)."""
    return (keys.astype(np.float64) + 0.5) / 2.0**64


def mix(keys: np.ndarray, stream: int) -> np.ndarray:
    """A second hash of each key (splitmix64's finalizer of ``key + stream * golden``): the cut
    takes its documents in key order, so its coin flips must not be the keys themselves."""
    with np.errstate(over="ignore"):
        z = keys.astype(np.uint64) + np.uint64(stream) * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def _ideal_total(tokens: np.ndarray, weights: np.ndarray, scale: float, lo: int, hi: int) -> tuple[float, float]:
    """``f(scale) = sum(t * v)`` (exactly rounded, in chunks: bounded memory) and its slope there."""
    positive = weights > 0
    raw = scale * weights
    rising = positive & (raw > lo) & (raw < hi)
    v = np.where(positive, np.clip(raw, lo, hi), 0.0)
    products = tokens * v
    total = math.fsum(math.fsum(products[i : i + 65536].tolist()) for i in range(0, len(products), 65536))
    return total, float((tokens[rising] * weights[rising]).sum())


def solve_lambda(tokens: np.ndarray, weights: np.ndarray, target: int, lo: int, hi: int) -> float:
    """``lambda`` with ``sum(t * clamp(lambda * w, lo, hi)) = target`` (for ``low < target < high``).

    ``f(lambda)`` is continuous, non-decreasing and linear between the breakpoints ``lo / w`` and
    ``hi / w``: evaluate it at every breakpoint from cumulative sums, find the segment holding the
    target and solve the line there; then one Newton step on the exactly summed ``f`` takes out the
    cumulative sums' rounding (so ``sum(t * v)`` is ``T`` to well under a token)."""
    positive = weights > 0
    t, w = tokens[positive].astype(np.float64), weights[positive]
    base = float(t.sum()) * lo  # f at lambda = 0: every counted document at lo
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
    scale = float(points[k] + (target - values[k]) / slope[k])
    total, gradient = _ideal_total(tokens, weights, scale, lo, hi)
    if gradient > 0:
        scale += (target - total) / gradient
    return scale


def cut(tokens: np.ndarray, shares: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """Which documents take one more copy: document ``i`` with probability ``shares[i]`` (in
    [0, 1)), and ``sum(t * taken)`` within one document's tokens of ``sum(t * shares)``.

    A pivotal tournament on tokens (the cube method's flight phase for one balancing variable):
    the documents with a share, in key order, are the leaves of a complete binary tree; at each
    node the pending documents of its two children meet, and their probabilities move along
    ``t_a * da + t_b * db = 0`` (the expected tokens stay put) to the nearest corner in one of the
    two directions, drawn with the probabilities that keep each one's expectation (a martingale):
    one of them is settled at 0 or 1, the other goes up pending. The root's pending document is
    kept with its probability, the only step that moves the tokens (by less than its own count).
    A node's coin is a hash of the key of its right child's first leaf (each leaf is that of one
    node at most; the root's is leaf 0's). Computed a level at a time here; a stream in key order
    computes the same tree holding one pending document per level."""
    taken = np.zeros(len(tokens), dtype=bool)
    # A document of 0 tokens cannot move the total: its own coin, with its probability.
    empty = np.flatnonzero((shares > 0) & (tokens == 0))
    taken[empty] = uniform(mix(keys[empty], 2)) < shares[empty]
    units = np.flatnonzero((shares > 0) & (tokens > 0))
    if not len(units):
        return taken
    units = units[np.argsort(keys[units], kind="stable")]
    t = tokens[units].astype(np.float64)
    flips = uniform(mix(keys[units], 1))
    chosen = np.zeros(len(units), dtype=bool)
    who = np.arange(len(units))  # each node's pending document (-1: none), its probability, its first leaf
    prob = shares[units].astype(np.float64)
    first = np.arange(len(units))
    while len(who) > 1:
        if len(who) % 2:  # a missing right child: an empty node
            who, prob, first = np.append(who, -1), np.append(prob, 0.0), np.append(first, first[-1])
        a, b, pa, pb = who[0::2], who[1::2], prob[0::2], prob[1::2]
        meet = (a >= 0) & (b >= 0)
        ta, tb = t[np.where(meet, a, 0)], t[np.where(meet, b, 0)]
        up = np.minimum((1.0 - pa) * ta, pb * tb)  # tokens that can move to a, and from a
        down = np.minimum(pa * ta, (1.0 - pb) * tb)
        towards = flips[first[1::2]] * (up + down) < down  # probability down / (up + down)
        step = np.where(towards, up, -down)
        with np.errstate(divide="ignore", invalid="ignore"):
            na = np.clip(pa + step / ta, 0.0, 1.0)
            nb = np.clip(pb - step / tb, 0.0, 1.0)
        # The one that reaches its corner first lands on it exactly.
        a_first = np.where(towards, (1.0 - pa) * ta <= pb * tb, pa * ta <= (1.0 - pb) * tb)
        na = np.where(a_first, np.where(towards, 1.0, 0.0), na)
        nb = np.where(a_first, nb, np.where(towards, 0.0, 1.0))
        chosen[a[meet & (na == 1.0)]] = True
        chosen[b[meet & (nb == 1.0)]] = True
        a_open, b_open = (na > 0.0) & (na < 1.0), (nb > 0.0) & (nb < 1.0)
        go = np.where(meet, np.where(a_open, a, np.where(b_open, b, -1)), np.maximum(a, b))
        goes = np.where(meet, np.where(a_open, na, np.where(b_open, nb, 0.0)), np.where(a >= 0, pa, pb))
        who, prob, first = go, goes, first[0::2]
    if who[0] >= 0 and flips[0] < prob[0]:
        chosen[who[0]] = True
    taken[units[chosen]] = True
    return taken


def solve_cell(tokens: np.ndarray, weights: np.ndarray, keys: np.ndarray, target: int, lo: int, hi: int,
               natural: bool = False) -> tuple[np.ndarray, float]:
    """Each document's repeats (int64) and the scale ``lambda``.

    ``tokens``, ``weights`` and ``keys`` (uint64 seeded hashes) are in the cell's canonical order.
    A document of weight 0 gets 0 copies (the caller refuses a ``min_epochs`` on one). Outside
    ``[low, high]`` the cell is infeasible: every document at its bound (the caller has decided to
    report it rather than fail)."""
    positive = weights > 0
    limit = bounds(tokens, weights, lo, hi)
    if target <= limit.low:
        return np.where(positive, lo, 0).astype(np.int64), 0.0
    if target >= limit.high and not natural:
        return np.where(positive, hi, 0).astype(np.int64), float("inf")
    scale = 1.0 if natural else solve_lambda(tokens, weights, target, lo, hi)
    ideal = np.where(positive, np.clip(scale * weights, lo, hi), 0.0)
    whole = np.floor(ideal).astype(np.int64)
    return whole + cut(tokens, ideal - whole, keys), scale
