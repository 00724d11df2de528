"""Mergeable weighted histograms of scores: calibration in memory bounded by scorers x languages x bins.

A summary bins one scorer's scores (of one language, or all) into bins of width ``2**exponent``
(bin k holds [k * 2**e, (k + 1) * 2**e)), the smallest power of two whose bins span the scores in
at most ``bins`` bins, so no score range has to be known first (a probability in [0, 1] and a raw
regression score alike). Each bin keeps the weight of every unit (tokens, bytes, characters,
documents) and its smallest and largest score. Power-of-two bins nest, so two summaries merge
exactly: both are re-binned to the wider width (widened once more while they span over ``bins``).

Quantile q is the smallest score of the first bin whose cumulative weight reaches q (the inverted
CDF of ``buckets.weighted_quantiles``, at bin resolution). The exact quantile lies in that same bin
and at or above the answer, so a threshold moves only the documents of that one bin between
buckets: the rank error (in weight share) is below that bin's share, and zero where the bin holds
one distinct score (ties). ``rank_error`` gives the bound for every quantile at once: the largest
share of any bin holding more than one distinct score.

Non-finite scores sort as the exact quantiles sort them: -inf first, then +inf, then NaN (one bin
each, with sentinel indices).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

UNITS = ("tokens", "bytes", "chars", "docs")
DOCS = UNITS.index("docs")
NEG_INF, POS_INF, NAN = np.iinfo(np.int64).min, np.iinfo(np.int64).max - 1, np.iinfo(np.int64).max
MANTISSA = 52  # a finite score's bin index stays below 2**52 in magnitude (exact as float64 and int64)
EMPTY = -1100  # the exponent of a summary with no finite score (any other summary's is larger)
MIN_BINS, MAX_BINS = 256, 1 << 20


@dataclass
class Summary:
    exponent: int
    index: np.ndarray  # int64, ascending, unique: the non-empty bins
    weights: np.ndarray  # float64 (bins, len(UNITS))
    low: np.ndarray  # float64: the smallest score in each bin
    high: np.ndarray  # float64: the largest
    distinct: np.ndarray  # the smallest distinct scores, at most the cap given when built (the per-language floor)
    total: float  # sum of the scores (the mean score)

    @property
    def documents(self) -> int:
        return int(round(self.weights[:, DOCS].sum()))

    @property
    def bins(self) -> int:
        return int(self.index.size)


def empty() -> Summary:
    return Summary(EMPTY, np.zeros(0, np.int64), np.zeros((0, len(UNITS))), np.zeros(0), np.zeros(0), np.zeros(0), 0.0)


def _finite(index: np.ndarray) -> np.ndarray:
    return (index != NEG_INF) & (index < POS_INF)


def _span(index: np.ndarray, exponent_shift: int = 0) -> int:
    finite = index[_finite(index)]
    if finite.size == 0:
        return 0
    return int((finite[-1] >> exponent_shift) - (finite[0] >> exponent_shift)) + 1


def _exponent(low: float, high: float, bins: int) -> int:
    """The smallest exponent whose bins span [low, high] in at most ``bins`` bins."""
    exponent = int(np.frexp(max(abs(low), abs(high)))[1]) - MANTISSA
    if high > low and np.isfinite(high - low):
        exponent = max(exponent, int(np.floor(np.log2((high - low) / bins))) - 1)
    while int(np.floor(np.ldexp(high, -exponent))) - int(np.floor(np.ldexp(low, -exponent))) + 1 > bins:
        exponent += 1
    return exponent


def _aggregate(exponent: int, index: np.ndarray, weights: np.ndarray, low: np.ndarray, high: np.ndarray,
               distinct: np.ndarray, total: float) -> Summary:
    """One bin per index: weights summed, lowest and highest scores kept."""
    order = np.argsort(index, kind="stable")
    index, weights, low, high = index[order], weights[order], low[order], high[order]
    if index.size == 0:
        return Summary(exponent, index, weights.reshape(0, len(UNITS)), low, high, distinct, total)
    starts = np.flatnonzero(np.r_[True, index[1:] != index[:-1]])
    return Summary(exponent, index[starts], np.add.reduceat(weights, starts, axis=0), np.fmin.reduceat(low, starts),
                   np.fmax.reduceat(high, starts), distinct, total)


def build(scores: np.ndarray, weights: np.ndarray, bins: int, distinct_cap: int = 0) -> Summary:
    """A summary of ``scores`` (float64) with ``weights`` (one column per unit of ``UNITS``)."""
    scores = np.asarray(scores, dtype=np.float64)
    finite = np.isfinite(scores)
    exponent = _exponent(float(scores[finite].min()), float(scores[finite].max()), bins) if finite.any() else EMPTY
    index = np.full(scores.size, NAN, dtype=np.int64)
    index[finite] = np.floor(np.ldexp(scores[finite], -exponent)).astype(np.int64)
    index[scores == -np.inf] = NEG_INF
    index[scores == np.inf] = POS_INF
    distinct = np.unique(scores)[:distinct_cap]
    with np.errstate(invalid="ignore"):  # -inf + inf: a NaN mean, as the exact path's
        total = float(scores.sum())
    return _aggregate(exponent, index, np.asarray(weights, dtype=np.float64), scores, scores, distinct, total)


def widen(summary: Summary, exponent: int) -> Summary:
    """The same scores in bins of width ``2**exponent`` (at least the summary's own width)."""
    shift = exponent - summary.exponent
    if shift <= 0:
        return summary
    if summary.exponent == EMPTY:  # no finite score: only the width changes
        return replace(summary, exponent=exponent)
    index = summary.index.copy()
    finite = _finite(index)
    index[finite] >>= shift  # an arithmetic shift: floor division by 2**shift, negative indices too
    return _aggregate(exponent, index, summary.weights, summary.low, summary.high, summary.distinct, summary.total)


def merge(found: list[Summary], bins: int, distinct_cap: int = 0) -> Summary:
    """One summary of all of ``found`` (re-binned to the widest width, widened while they span over ``bins``)."""
    if not found:
        return empty()
    exponent = max(s.exponent for s in found)
    found = [widen(s, exponent) for s in found]
    distinct = np.unique(np.concatenate([s.distinct for s in found]))[:distinct_cap]
    merged = _aggregate(exponent, *(np.concatenate([getattr(s, f) for s in found]) for f in ("index", "weights", "low", "high")),
                        distinct, float(sum(s.total for s in found)))
    shift = 0
    while _span(merged.index, shift) > bins:
        shift += 1
    return widen(merged, exponent + shift) if shift else merged


def heavy(summary: Summary, target: float) -> np.ndarray:
    """The bins holding more than one distinct score and over ``target`` of some unit's weight (those that
    bound the rank error above it)."""
    if summary.bins == 0:
        return np.zeros(0, np.int64)
    totals = summary.weights.sum(axis=0)
    shares = np.max(summary.weights / np.where(totals > 0, totals, 1.0), axis=1)
    return np.flatnonzero((summary.low < summary.high) & (shares > target))


def splice(summary: Summary, positions: np.ndarray, parts: list[Summary]) -> Summary:
    """The summary with the bin at each of ``positions`` replaced by the finer bins of its part (the same
    scores, summarized again): still bins in ascending order, now of unequal widths, so only ``quantiles``,
    ``rank_error`` and ``heavy`` read it, never ``merge``."""
    pieces, start = [], 0
    for position, part in zip(positions.tolist(), parts):
        pieces += [(summary.weights[start:position], summary.low[start:position], summary.high[start:position]),
                   (part.weights, part.low, part.high)]
        start = position + 1
    pieces.append((summary.weights[start:], summary.low[start:], summary.high[start:]))
    weights, low, high = (np.concatenate([piece[n] for piece in pieces]) for n in range(3))
    return Summary(summary.exponent, np.arange(low.size, dtype=np.int64), weights.reshape(-1, len(UNITS)), low, high,
                   summary.distinct, summary.total)


def _cumulative(summary: Summary, unit: str) -> np.ndarray:
    cumulative = np.cumsum(summary.weights[:, UNITS.index(unit)])
    if cumulative[-1] <= 0:  # every weight zero: count documents instead (as the exact quantiles do)
        cumulative = np.cumsum(summary.weights[:, DOCS])
    return cumulative


def quantiles(summary: Summary, unit: str, qs: np.ndarray) -> np.ndarray:
    """Quantile q of ``unit``'s weight for each q in ``qs`` (0..1): the lowest score of the bin reaching it."""
    if summary.bins == 0:
        return np.full(len(qs), np.nan)
    cumulative = _cumulative(summary, unit)
    targets = np.asarray(qs, dtype=np.float64) * cumulative[-1] * (1 - 1e-12)  # the tolerance of the exact ones
    return summary.low[np.minimum(np.searchsorted(cumulative, targets, side="left"), summary.bins - 1)]


def rank_error(summary: Summary, unit: str) -> float:
    """The bound on every quantile's rank error, as a share of ``unit``'s weight: the largest share of a
    bin holding more than one distinct score (0: every quantile exact)."""
    if summary.bins == 0:
        return 0.0
    cumulative = _cumulative(summary, unit)
    shares = np.diff(cumulative, prepend=0.0) / cumulative[-1]
    spread = summary.low < summary.high
    return float(shares[spread].max()) if spread.any() else 0.0


def report_histogram(summary: Summary, bins: int) -> dict | None:
    """The report's distribution (``calibrate.histogram``'s form) from the summary: each fine bin's documents
    counted in the equal bin of its lowest score (a fine bin across an edge counts on its lower side)."""
    finite = np.isfinite(summary.low) & np.isfinite(summary.high) & (summary.weights[:, DOCS] > 0)
    if not finite.any():
        return None
    low, high = float(summary.low[finite].min()), float(summary.high[finite].max())
    width = (high - low) / bins
    lows, counts = summary.low[finite], summary.weights[finite, DOCS]
    index = np.minimum(((lows - low) / width).astype(np.int64), bins - 1) if width > 0 else np.zeros(lows.size, np.int64)
    totals = np.bincount(index, weights=counts, minlength=bins)
    return {"low": round(low, 9), "width": round(width, 12),
            "counts": {f"{i:03d}": int(round(n)) for i, n in enumerate(totals.tolist()) if n > 0}}
