"""Gopher repetition's n-gram measures on integer word ids with numpy: a 64-bit polynomial hash
per window, so a document costs a few array passes per n instead of building every n-gram string."""

from __future__ import annotations

import numpy as np

_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)


def _ngram_keys(ids: np.ndarray, n: int) -> np.ndarray:
    keys = ids[: len(ids) - n + 1].copy()
    with np.errstate(over="ignore"):
        for k in range(1, n):
            keys = keys * _MULTIPLIER + ids[k : len(ids) - n + 1 + k]
    return keys


def _top_ngram_chars(keys: np.ndarray, prefix_len: np.ndarray, n: int) -> int:
    """Characters of the most frequent n-gram (space-joined) times its count; ties go to the first seen."""
    _, first, counts = np.unique(keys, return_index=True, return_counts=True)
    best = counts.max()
    start = int(first[counts == best].min())
    chars = int(prefix_len[start + n] - prefix_len[start]) + (n - 1)
    return chars * int(best)


def _repeated_ngram_chars(keys: np.ndarray, prefix_len: np.ndarray, n: int) -> int:
    """Characters covered by repeated n-grams, scanning left to right and skipping n words after each repeat."""
    _, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
    if counts.max() == 1:
        return 0
    # Only positions whose n-gram occurred earlier can be repeats; runs of first occurrences
    # between them are added to ``seen`` in one C-level update instead of one step each.
    candidates = np.flatnonzero(first[inverse] < np.arange(len(inverse))).tolist()
    ids = inverse.tolist()
    seen: set[int] = set()
    repeated = 0
    index = 0
    for position in candidates:
        if position < index:
            continue  # inside the n words skipped after a repeat
        seen.update(ids[index:position])
        key = ids[position]
        if key in seen:
            repeated += int(prefix_len[position + n] - prefix_len[position])
            index = position + n
        else:
            seen.add(key)
            index = position + 1
    return repeated


def ngram_chars(words: list[str], top_ns: list[int], dup_ns: list[int]) -> tuple[dict[int, int], dict[int, int]]:
    """Characters of the most frequent n-gram per n in ``top_ns`` and of repeated n-grams per n in ``dup_ns``."""
    # word ids in order of first appearance (as a setdefault loop would number them), with the
    # per-word work in C: dict.fromkeys keeps first appearances, map looks each word up
    vocabulary = {word: index for index, word in enumerate(dict.fromkeys(words))}
    ids = np.fromiter(map(vocabulary.__getitem__, words), dtype=np.uint64, count=len(words))
    prefix_len = np.zeros(len(words) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, words), dtype=np.int64, count=len(words)), out=prefix_len[1:])
    top = {n: _top_ngram_chars(_ngram_keys(ids, n), prefix_len, n) if len(words) >= n else 0 for n in top_ns}
    dup: dict[int, int] = {}
    for n in sorted(dup_ns):
        # A repeated n-gram contains a repeated (n-1)-gram at the same place: once a size has no
        # repeat (its count is 0 exactly then), no larger size has one.
        if len(words) < n or any(dup[m] == 0 for m in dup if m < n):
            dup[n] = 0
        else:
            dup[n] = _repeated_ngram_chars(_ngram_keys(ids, n), prefix_len, n)
    return top, {n: dup[n] for n in dup_ns}
