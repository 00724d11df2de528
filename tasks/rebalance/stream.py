"""The solver's sums and its cut over one cell's documents fed in canonical order, a part at a
time: the same bits as ``solver.py`` on the whole cell in memory.

``solver.py`` sums in three orders, each replayed here: numpy's pairwise sum over a whole array
(``PairwiseSum``: with the array's length known, its tree of halves is fixed, so the leaves are
summed by numpy as they arrive and the tree is added up at the end), ``math.fsum`` over chunks of
65,536 (``ChunkedFsum``), and sequential cumulative sums (``cumulative``: continued from where
the last part stopped). The pivotal tournament (``CutStream``) reduces aligned blocks of the
leaves with numpy and the blocks' roots in a binary counter, one pending node per level: the same
tree, the same coins, the same arithmetic.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fineflow.tasks.rebalance import solver

LEAF = 1 << 16  # numpy sums subtrees this large itself (above 128: numpy splits no subtree of 128 or fewer)


def _leaves(n: int) -> list[int]:
    """The sizes of numpy's pairwise subtrees of at most ``LEAF`` values, in order."""
    found: list[int] = []
    pending = [n] if n else []
    while pending:
        m = pending.pop()
        if m <= LEAF:
            found.append(m)
        else:
            half = m // 2
            half -= half % 8  # numpy keeps the halves multiples of its unroll
            pending += [m - half, half]
    return found


def _combine(sums: Iterator[float], m: int) -> float:
    if m <= LEAF:
        return next(sums)
    half = m // 2
    half -= half % 8
    return _combine(sums, half) + _combine(sums, m - half)


class PairwiseSum:
    """``float(a.sum())`` of a float64 array of ``n`` values pushed in order, in parts."""

    def __init__(self, n: int) -> None:
        self.n, self.sizes, self.sums, self.buffer = n, _leaves(n), [], np.zeros(0)

    def push(self, values: np.ndarray) -> None:
        self.buffer = np.concatenate([self.buffer, values.astype(np.float64, copy=False)])
        while len(self.sums) < len(self.sizes) and len(self.buffer) >= self.sizes[len(self.sums)]:
            size = self.sizes[len(self.sums)]
            self.sums.append(float(self.buffer[:size].sum()))
            self.buffer = self.buffer[size:]

    def result(self) -> float:
        if len(self.sums) != len(self.sizes) or len(self.buffer):
            raise RuntimeError(f"pairwise sum: {self.n} values announced, others pushed")
        return _combine(iter(self.sums), self.n) if self.n else 0.0


class ChunkedFsum:
    """``solver._ideal_total``'s sum: ``fsum`` of each 65,536 values, then ``fsum`` of those."""

    CHUNK = 65536

    def __init__(self) -> None:
        self.chunks: list[float] = []
        self.buffer = np.zeros(0)

    def push(self, values: np.ndarray) -> None:
        self.buffer = np.concatenate([self.buffer, values])
        while len(self.buffer) >= self.CHUNK:
            self.chunks.append(math.fsum(self.buffer[: self.CHUNK].tolist()))
            self.buffer = self.buffer[self.CHUNK :]

    def result(self) -> float:
        tail = [math.fsum(self.buffer.tolist())] if len(self.buffer) else []
        return math.fsum(self.chunks + tail)


def cumulative(start: float, values: np.ndarray) -> float:
    """``start`` plus each value in turn (as ``np.cumsum`` adds)."""
    if not len(values):
        return start
    return float(np.cumsum(np.concatenate([[start], values]))[-1])


@dataclass
class _Node:
    who: int  # a pending unit (its number in key order), or -1
    prob: float
    tokens: float
    flip: float  # the coin of the node's first leaf
    payload: np.ndarray | None = None  # what the caller needs of the pending unit


def _meet(a: _Node, b: _Node, settled: list) -> _Node:
    """One node of ``solver.cut``'s tree, for two children (scalar: the same IEEE operations)."""
    if a.who < 0 or b.who < 0:
        up = b if a.who < 0 else a
        return _Node(up.who, up.prob, up.tokens, a.flip, up.payload)
    pa, pb, ta, tb = a.prob, b.prob, a.tokens, b.tokens
    up = min((1.0 - pa) * ta, pb * tb)
    down = min(pa * ta, (1.0 - pb) * tb)
    towards = b.flip * (up + down) < down
    step = up if towards else -down
    na = min(max(pa + step / ta, 0.0), 1.0)
    nb = min(max(pb - step / tb, 0.0), 1.0)
    a_first = (1.0 - pa) * ta <= pb * tb if towards else pa * ta <= (1.0 - pb) * tb
    if a_first:
        na = 1.0 if towards else 0.0
    else:
        nb = 0.0 if towards else 1.0
    if na == 1.0:
        settled.append(a.payload)
    if nb == 1.0:
        settled.append(b.payload)
    if 0.0 < na < 1.0:
        return _Node(a.who, na, ta, a.flip, a.payload)
    if 0.0 < nb < 1.0:
        return _Node(b.who, nb, tb, a.flip, b.payload)
    return _Node(-1, 0.0, 0.0, a.flip)


def _reduce(t: np.ndarray, prob: np.ndarray, flips: np.ndarray) -> tuple[np.ndarray, _Node]:
    """``solver.cut``'s levels over one aligned block of leaves: the leaves settled at 1 inside it,
    and its root (still pending, or none)."""
    chosen = np.zeros(len(t), dtype=bool)
    who, first = np.arange(len(t)), np.arange(len(t))
    while len(who) > 1:
        if len(who) % 2:
            who, prob, first = np.append(who, -1), np.append(prob, 0.0), np.append(first, first[-1])
        a, b, pa, pb = who[0::2], who[1::2], prob[0::2], prob[1::2]
        meet = (a >= 0) & (b >= 0)
        ta, tb = t[np.where(meet, a, 0)], t[np.where(meet, b, 0)]
        up = np.minimum((1.0 - pa) * ta, pb * tb)
        down = np.minimum(pa * ta, (1.0 - pb) * tb)
        towards = flips[first[1::2]] * (up + down) < down
        step = np.where(towards, up, -down)
        with np.errstate(divide="ignore", invalid="ignore"):
            na = np.clip(pa + step / ta, 0.0, 1.0)
            nb = np.clip(pb - step / tb, 0.0, 1.0)
        a_first = np.where(towards, (1.0 - pa) * ta <= pb * tb, pa * ta <= (1.0 - pb) * tb)
        na = np.where(a_first, np.where(towards, 1.0, 0.0), na)
        nb = np.where(a_first, nb, np.where(towards, 0.0, 1.0))
        chosen[a[meet & (na == 1.0)]] = True
        chosen[b[meet & (nb == 1.0)]] = True
        a_open, b_open = (na > 0.0) & (na < 1.0), (nb > 0.0) & (nb < 1.0)
        go = np.where(meet, np.where(a_open, a, np.where(b_open, b, -1)), np.maximum(a, b))
        goes = np.where(meet, np.where(a_open, na, np.where(b_open, nb, 0.0)), np.where(a >= 0, pa, pb))
        who, prob, first = go, goes, first[0::2]
    root = int(who[0]) if len(who) else -1
    return chosen, _Node(root, float(prob[0]) if root >= 0 else 0.0, float(t[root]) if root >= 0 else 0.0,
                         float(flips[0]) if len(flips) else 0.0)


class CutStream:
    """``solver.cut`` over units (documents with a share and tokens) pushed in key order.

    ``push`` takes the next units (any number) with a payload row each (what the caller needs to
    write a unit later) and says which of them are taken now; a unit still pending when its block
    closes may be taken later: ``finish`` returns the payloads of those."""

    def __init__(self, block: int = 1 << 16, width: int = 1) -> None:
        if block < 1 or block & (block - 1):
            raise ValueError("the block must be a power of two")
        self.block, self.levels, self.count = block, [], 0
        self.pending = (np.zeros(0), np.zeros(0), np.zeros(0), np.zeros((0, width), dtype=np.int64))
        self.first_flip: float | None = None
        self.late: list = []

    def push(self, t: np.ndarray, prob: np.ndarray, flips: np.ndarray, payload: np.ndarray) -> np.ndarray:
        """Which of these units are taken now (the others: not yet, or never)."""
        if self.first_flip is None and len(flips):
            self.first_flip = float(flips[0])
        earlier = len(self.pending[0])  # units returned (as not taken) by earlier pushes, their block still open
        start = self.count - earlier  # the unit number of the buffer's first
        new = (t.astype(np.float64), prob.astype(np.float64), flips, payload)
        bt, bp, bf, bl = (np.concatenate([old, part]) for old, part in zip(self.pending, new))
        full = len(bt) // self.block * self.block
        chosen = np.zeros(len(bt), dtype=bool)
        for offset in range(0, full, self.block):
            part = slice(offset, offset + self.block)
            chosen[part], root = _reduce(bt[part], bp[part], bf[part])
            if root.who >= 0:
                root.payload = bl[offset + root.who]
                root.who += start + offset
            self._add(root, 0)
        self.late += list(bl[np.flatnonzero(chosen[: min(earlier, full)])])
        taken = np.zeros(len(t), dtype=bool)
        taken[: max(0, full - earlier)] = chosen[earlier:full]
        self.pending = (bt[full:], bp[full:], bf[full:], bl[full:])
        self.count += len(t)
        return taken

    def _add(self, node: _Node, level: int) -> None:
        while True:
            if level == len(self.levels):
                self.levels.append(None)
            left = self.levels[level]
            if left is None:
                self.levels[level] = node
                return
            self.levels[level] = None
            node = _meet(left, node, self.late)
            level += 1

    def drain(self) -> list:
        """The payloads of the units taken since the last drain, after their push returned (so the
        caller can write them now: a stream holds no more than its open block and tree)."""
        late, self.late = self.late, []
        return late

    def finish(self) -> list:
        """The payloads of the units taken after their push returned (since the last drain)."""
        bt, bp, bf, bl = self.pending
        carry = None
        if len(bt):
            inside, carry = _reduce(bt, bp, bf)
            self.late += list(bl[np.flatnonzero(inside)])
            if carry.who >= 0:
                carry.payload = bl[carry.who]
        for left in self.levels:
            if left is not None and carry is not None:
                carry = _meet(left, carry, self.late)
            elif left is not None:
                carry = left
        if carry is not None and carry.who >= 0 and self.first_flip is not None and self.first_flip < carry.prob:
            self.late.append(carry.payload)
        return self.late


def cut_in_parts(tokens: np.ndarray, shares: np.ndarray, keys: np.ndarray, sizes: list[int], block: int) -> np.ndarray:
    """``solver.cut`` with the documents (in key order) pushed in parts of these sizes: for tests
    and for the bounded solve's one-cell groups."""
    taken = np.zeros(len(tokens), dtype=bool)
    empty = np.flatnonzero((shares > 0) & (tokens == 0))
    taken[empty] = solver.uniform(solver.mix(keys[empty], 2)) < shares[empty]
    units = np.flatnonzero((shares > 0) & (tokens > 0))
    stream = CutStream(block)
    bounds = np.cumsum([0, *sizes, len(tokens)])
    for at, end in zip(bounds[:-1], bounds[1:]):
        part = units[(units >= at) & (units < end)]
        taken[part] = stream.push(tokens[part], shares[part], solver.uniform(solver.mix(keys[part], 1)), part[:, None])
    late = stream.finish()
    if late:
        taken[np.concatenate(late)] = True
    return taken


class _Groups:
    """Values of the positive documents by group (a breakpoint), each group's in canonical order,
    in a local folder: ``solver.solve_lambda``'s cumulative sums run over the groups in order."""

    CHUNK = 1 << 20

    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.name, self.numbers, self.counts = folder, name, {}, {}

    def add(self, keys: np.ndarray, t: np.ndarray, tw: np.ndarray) -> None:
        for value in np.unique(keys):
            chosen = keys == value
            number = self.numbers.setdefault(float(value), len(self.numbers))
            self.counts[float(value)] = self.counts.get(float(value), 0) + int(chosen.sum())
            with open(self.folder / f"{self.name}-{number}.bin", "ab") as handle:
                np.stack([t[chosen], tw[chosen]], axis=1).tofile(handle)

    def cumulative(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The groups' values (ascending) and, at the end of each, the sums of t and of t*w so far."""
        values = np.array(sorted(self.numbers), dtype=np.float64)
        t_sums, tw_sums = np.zeros(len(values)), np.zeros(len(values))
        acc_t = acc_tw = 0.0
        for index, value in enumerate(values.tolist()):
            with open(self.folder / f"{self.name}-{self.numbers[value]}.bin", "rb") as handle:
                while len(chunk := np.fromfile(handle, dtype=np.float64, count=2 * self.CHUNK)):
                    pairs = chunk.reshape(-1, 2)
                    acc_t, acc_tw = cumulative(acc_t, pairs[:, 0]), cumulative(acc_tw, pairs[:, 1])
            t_sums[index], tw_sums[index] = acc_t, acc_tw
        return values, t_sums, tw_sums


def _at(values: np.ndarray, sums: np.ndarray, points: np.ndarray) -> np.ndarray:
    """The sums over the groups at or below each point (0 below the first)."""
    index = np.searchsorted(values, points, side="right") - 1
    return np.where(index >= 0, sums[np.maximum(index, 0)], 0.0)


def solve_lambda_in_parts(parts: Callable[[], Iterator[tuple[np.ndarray, np.ndarray]]], positive: int, target: int,
                          lo: int, hi: int, folder: Path) -> float:
    """``solver.solve_lambda`` over a cell whose (tokens, weights) come in parts in canonical order
    (two passes): the same float operations in the same orders, so the same bits."""
    starts, ends = _Groups(folder, "start"), _Groups(folder, "end")
    counts: dict[float, int] = {}
    base_sum = PairwiseSum(positive)
    for tokens, weights in parts():
        chosen = weights > 0
        t, w = tokens[chosen].astype(np.float64), weights[chosen]
        base_sum.push(t)
        tw = t * w
        starts.add(lo / w, t, tw)
        ends.add(hi / w, t, tw)
        for value, count in zip(*np.unique(w, return_counts=True)):
            counts[float(value)] = counts.get(float(value), 0) + int(count)
    base = base_sum.result() * lo
    start_values, t_start, tw_start = starts.cumulative()
    end_values, t_end, tw_end = ends.cumulative()
    points = np.unique(np.concatenate([start_values, end_values]))
    slope = _at(start_values, tw_start, points) - _at(end_values, tw_end, points)
    values = base + points * slope - lo * _at(start_values, t_start, points) + hi * _at(end_values, t_end, points)
    k = int(np.searchsorted(values, target, side="right")) - 1
    if k < 0:
        return float(points[0])
    if slope[k] <= 0:
        return float(points[k])
    scale = float(points[k] + (target - values[k]) / slope[k])
    # solver._ideal_total, in parts: the Newton step on the exactly summed total.
    distinct = np.array(sorted(counts), dtype=np.float64)
    raw = scale * distinct
    rising_count = sum(counts[v] for v, r in zip(distinct.tolist(), ((raw > lo) & (raw < hi)).tolist()) if r)
    total, gradient = ChunkedFsum(), PairwiseSum(rising_count)
    for tokens, weights in parts():
        chosen = weights > 0
        raw = scale * weights
        rising = chosen & (raw > lo) & (raw < hi)
        total.push(tokens * np.where(chosen, np.clip(raw, lo, hi), 0.0))
        gradient.push(tokens[rising] * weights[rising])
    slope_here = gradient.result()
    if slope_here > 0:
        scale += (target - total.result()) / slope_here
    return scale
