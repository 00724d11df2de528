"""Gopher repetition (Rae et al. 2021, Table A1) as FineWeb applies it.

Signals are fractions of the document (``len(text)`` in code points); every rule drops a
document when its fraction is strictly greater than the threshold; a threshold of 0 or None
switches the rule off (FineWeb2 turns the paragraph rules off this way).

N-grams are counted on integer word ids with numpy: a 64-bit polynomial hash per window, so a
document costs a few array passes per n instead of building every n-gram string.
"""

from __future__ import annotations

import numpy as np

from fineflow.tasks.filter.text import LINE_BREAK_RUN, PARAGRAPH_BREAK, duplicate_stats

NAME = "gopher_repetition"
PREFIX = "gopher_rep_"

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


def signals(text: str, words: list[str], line_split: str, top_ns: list[int], dup_ns: list[int]) -> dict:
    length = max(len(text), 1)
    out: dict[str, float] = {}
    paragraphs = PARAGRAPH_BREAK.split(text.strip())
    count, chars = duplicate_stats(paragraphs)
    out["dup_para_frac"] = count / len(paragraphs)
    out["dup_para_char_frac"] = chars / length
    lines = text.splitlines() if line_split == "splitlines" else LINE_BREAK_RUN.split(text)
    count, chars = duplicate_stats(lines)
    out["dup_line_frac"] = count / max(len(lines), 1)
    out["dup_line_char_frac"] = chars / length

    vocabulary: dict[str, int] = {}
    ids = np.fromiter((vocabulary.setdefault(w, len(vocabulary)) for w in words), dtype=np.uint64, count=len(words))
    prefix_len = np.zeros(len(words) + 1, dtype=np.int64)
    np.cumsum(np.fromiter(map(len, words), dtype=np.int64, count=len(words)), out=prefix_len[1:])
    for n in top_ns:
        value = 0.0
        if len(words) >= n:
            value = _top_ngram_chars(_ngram_keys(ids, n), prefix_len, n) / length
        out[f"top_{n}_gram_frac"] = value
    for n in dup_ns:
        value = 0.0
        if len(words) >= n:
            value = _repeated_ngram_chars(_ngram_keys(ids, n), prefix_len, n) / length
        out[f"dup_{n}_gram_frac"] = value
    return {PREFIX + key: value for key, value in out.items()}


def decide(values: dict, thresholds: dict, strict: bool = True) -> str | None:
    def over(value: float, limit: float | None) -> bool:
        return bool(limit) and (value > limit if strict else value >= limit)

    for rule in ("dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac"):
        if over(values[PREFIX + rule], thresholds.get(rule)):
            return rule
    for n, limit in sorted(thresholds.get("top_n_grams", {}).items()):
        if over(values[f"{PREFIX}top_{n}_gram_frac"], limit):
            return f"top_{n}_gram"
    for n, limit in sorted(thresholds.get("dup_n_grams", {}).items()):
        if over(values[f"{PREFIX}dup_{n}_gram_frac"], limit):
            return f"duplicated_{n}_n_grams"
    return None
