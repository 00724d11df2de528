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
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from fineflow.tasks.rebalance import solver

LEAF = 1 << 16  # numpy sums subtrees this large itself (above 128: numpy splits no subtree of 128 or fewer)


def _leaves(n: int) -> list[int]:
    """The sizes of numpy's pairwise subtrees of at most ``LEAF`` values, in order."""
    found: list[int] = []
    pending = [n]
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


def _meet(a: _Node, b: _Node, settled: list[int]) -> _Node:
    """One node of ``solver.cut``'s tree, for two children (scalar: the same IEEE operations)."""
    if a.who < 0 or b.who < 0:
        up = b if a.who < 0 else a
        return _Node(up.who, up.prob, up.tokens, a.flip)
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
        settled.append(a.who)
    if nb == 1.0:
        settled.append(b.who)
    if 0.0 < na < 1.0:
        return _Node(a.who, na, ta, a.flip)
    if 0.0 < nb < 1.0:
        return _Node(b.who, nb, tb, a.flip)
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

    ``push`` takes the next units (any number) and returns which of them are taken now; a unit
    still pending when its block closes is decided later: ``late`` lists the units (numbers in key
    order) taken after their block was returned, ``finish`` the last of them."""

    def __init__(self, block: int = 1 << 16) -> None:
        if block & (block - 1):
            raise ValueError("the block must be a power of two")
        self.block, self.levels, self.count = block, [], 0
        self.pending = (np.zeros(0), np.zeros(0), np.zeros(0))
        self.first_flip: float | None = None
        self.late: list[int] = []

    def push(self, t: np.ndarray, prob: np.ndarray, flips: np.ndarray) -> np.ndarray:
        """Which of these units are taken now (the others: not yet, or never)."""
        if self.first_flip is None and len(flips):
            self.first_flip = float(flips[0])
        earlier = len(self.pending[0])  # units returned (as not taken) by earlier pushes, their block still open
        start = self.count - earlier  # the unit number of the buffer's first
        bt, bp, bf = (np.concatenate([old, new]) for old, new in zip(self.pending, (t.astype(np.float64), prob, flips)))
        full = len(bt) // self.block * self.block
        chosen = np.zeros(len(bt), dtype=bool)
        for offset in range(0, full, self.block):
            part = slice(offset, offset + self.block)
            chosen[part], root = _reduce(bt[part], bp[part], bf[part])
            if root.who >= 0:
                root.who += start + offset
            self._add(root, 0)
        self.late += [start + int(i) for i in np.flatnonzero(chosen[: min(earlier, full)])]
        taken = np.zeros(len(t), dtype=bool)
        taken[: max(0, full - earlier)] = chosen[earlier:full]
        self.pending = (bt[full:], bp[full:], bf[full:])
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

    def finish(self) -> list[int]:
        """The units taken after they were returned (numbers in key order), all of them now."""
        bt, bp, bf = self.pending
        carry = None
        if len(bt):
            inside, carry = _reduce(bt, bp, bf)
            start = self.count - len(bt)
            self.late += [start + int(i) for i in np.flatnonzero(inside)]
            if carry.who >= 0:
                carry.who += start
        for level in range(len(self.levels)):
            left = self.levels[level]
            if left is not None and carry is not None:
                carry = _meet(left, carry, self.late)
            elif left is not None:
                carry = left
        if carry is not None and carry.who >= 0 and self.first_flip is not None and self.first_flip < carry.prob:
            self.late.append(carry.who)
        return self.late


def cut_in_parts(tokens: np.ndarray, shares: np.ndarray, keys: np.ndarray, sizes: list[int], block: int) -> np.ndarray:
    """``solver.cut`` with the documents (in key order) pushed in parts of these sizes: for tests
    and for the bounded solve's one-cell groups."""
    taken = np.zeros(len(tokens), dtype=bool)
    empty = np.flatnonzero((shares > 0) & (tokens == 0))
    taken[empty] = solver.uniform(solver.mix(keys[empty], 2)) < shares[empty]
    units = np.flatnonzero((shares > 0) & (tokens > 0))
    stream = CutStream(block)
    at = 0
    for size in sizes:
        part = units[(units >= at) & (units < at + size)]
        taken[part] = stream.push(tokens[part], shares[part].astype(np.float64), solver.uniform(solver.mix(keys[part], 1)))
        at += size
    part = units[units >= at]
    taken[part] = stream.push(tokens[part], shares[part].astype(np.float64), solver.uniform(solver.mix(keys[part], 1)))
    taken[units[stream.finish()]] = True
    return taken
