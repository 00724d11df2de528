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


def _top_ngram_chars(keys: np.ndarray, prefix_len: np.ndarray, n: int) -> tuple[int, np.ndarray]:
    """Characters of the most frequent n-gram (space-joined) times its count, ties going to the
    first seen; and the starts whose n-gram occurs more than once."""
    _, first, inverse, counts = np.unique(keys, return_index=True, return_inverse=True, return_counts=True)
    best = counts.max()
    start = int(first[counts == best].min())
    chars = int(prefix_len[start + n] - prefix_len[start]) + (n - 1)
    return chars * int(best), np.flatnonzero(counts[inverse] > 1)


def _ngram_keys_at(ids: np.ndarray, starts: np.ndarray, n: int) -> np.ndarray:
    """``_ngram_keys(ids, n)[starts]``, computed for those starts only."""
    keys = ids[starts]
    with np.errstate(over="ignore"):
        for k in range(1, n):
            keys = keys * _MULTIPLIER + ids[starts + k]
    return keys


def _repeated_ngram_chars(ids: np.ndarray, prefix_len: np.ndarray, n: int, starts: np.ndarray) -> tuple[int, np.ndarray]:
    """Characters covered by repeated n-grams, scanning left to right and skipping n words after
    each repeat; and the starts whose n-gram occurs more than once.

    ``starts`` (ascending) holds every start whose n-gram may occur twice: an n-gram that occurs
    twice begins with an (n-1)-gram that does, so each size only looks where the one below
    repeated. An n-gram seen once matters to no later window, so the scan visits the others only.
    (With hashed keys the step from n-1 to n could differ from hashing every start only where two
    different n-grams share a 64-bit key: about 1e-12 for a 10,000-word document.)
    """
    starts = starts[starts <= len(ids) - n]
    if len(starts) < 2:
        return 0, starts[:0]
    _, inverse, counts = np.unique(_ngram_keys_at(ids, starts, n), return_inverse=True, return_counts=True)
    twice = counts[inverse] > 1
    starts, keys = starts[twice], inverse[twice]
    seen: set[int] = set()
    repeated = index = 0
    for position, key in zip(starts.tolist(), keys.tolist()):
        if position < index:
            continue  # inside the n words skipped after a repeat
        if key in seen:
            repeated += int(prefix_len[position + n] - prefix_len[position])
            index = position + n
        else:
            seen.add(key)
            index = position + 1
    return repeated, starts


def ngram_chars(words: list[str], top_ns: list[int], dup_ns: list[int]) -> tuple[dict[int, int], dict[int, int]]:
    """Characters of the most frequent n-gram per n in ``top_ns`` and of repeated n-grams per n in ``dup_ns``."""
    # word ids in order of first appearance (as a setdefault loop would number them), with the
    # per-word work in C: dict.fromkeys keeps first appearances, map looks each word up
    vocabulary = {word: index for index, word in enumerate(dict.fromkeys(words))}
    ids = np.fromiter(map(vocabulary.__getitem__, words), dtype=np.uint64, count=len(words))
    prefix_len = np.zeros(len(words) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, words), dtype=np.int64, count=len(words)), out=prefix_len[1:])
    starts = np.arange(len(words), dtype=np.int64)  # where a repeated n-gram may start
    top: dict[int, int] = {}
    for n in sorted(top_ns):
        top[n], repeated_starts = _top_ngram_chars(_ngram_keys(ids, n), prefix_len, n) if len(words) >= n else (0, starts[:0])
        if dup_ns and n < min(dup_ns):
            starts = repeated_starts  # a repeated larger n-gram begins with this repeated one
    dup: dict[int, int] = {}
    for n in sorted(dup_ns):
        dup[n], starts = _repeated_ngram_chars(ids, prefix_len, n, starts)
    return {n: top[n] for n in top_ns}, {n: dup[n] for n in dup_ns}
