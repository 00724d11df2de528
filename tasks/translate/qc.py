"""Quality checks of a translated document, measured per segment and summed per document
(stored as columns by the translate step; thresholds applied by ``decide``, so a changed
threshold never translates again).

- coverage: the share of source segments with a non-empty translation (and, for windows or
  whole lines, with at least as many sentences as their source): released translations drop
  sentences silently;
- runaway: segments far longer than their source (a model that does not stop);
- repetition: the share of the translation's word 3-grams that are repeats (degenerate loops);
- copy: the share of segments returned unchanged, among those with words;
- language: lid.176 on the translation, the target's score;
- length ratio: translated / source characters over the translated segments.
"""

from __future__ import annotations

import re
import unicodedata
from collections import Counter

from sentencex import segment as split_sentences

_WORDS = re.compile(r"[^\W\d_]{2,}")

CHECKS = ("coverage", "runaway", "repetition", "copy", "language", "length_ratio")


def _normal(text: str) -> str:
    return " ".join(unicodedata.normalize("NFC", text).casefold().split())


def repetition(text: str) -> float:
    words = text.split()
    grams = [tuple(words[i : i + 3]) for i in range(len(words) - 2)]
    if len(grams) < 4:
        return 0.0
    counts = Counter(grams)
    return sum(n - 1 for n in counts.values()) / len(grams)


def measure(sources: list[str], translations: list[str], target: str, count_sentences: bool, runaway_ratio: float) -> dict:
    """Per-document measures from its segments (in order) and their translations."""
    covered = copies = wordy = runaway = 0
    source_chars = target_chars = 0
    for source, translation in zip(sources, translations):
        source_chars += len(source)
        target_chars += len(translation)
        ok = bool(translation.strip())
        if ok and count_sentences:
            ok = len(list(split_sentences(target, translation))) >= len(list(split_sentences("en", source))) or len(source) < 40
        covered += ok
        if _WORDS.search(source) and len(source) >= 20:
            wordy += 1
            copies += _normal(source) == _normal(translation)
        runaway += len(translation) > runaway_ratio * len(source) + 20
    n = len(sources)
    return {
        "translate_segments": n,
        "translate_coverage": covered / n if n else 1.0,
        "translate_runaway": runaway,
        "translate_copy": copies / wordy if wordy else 0.0,
        "translate_length_ratio": target_chars / source_chars if source_chars else 1.0,
    }


def fails(check: str, row: dict, language_score: float, qc: dict, pair: str) -> bool:
    """Whether a translated document (its measure columns) fails one check."""
    if check == "coverage":
        return row["translate_coverage"] < 1.0
    if check == "runaway":
        return row["translate_runaway"] > 0
    if check == "repetition":
        return row["translate_repetition"] > qc["max_repetition"]
    if check == "copy":
        return row["translate_copy"] > qc["max_copy_share"]
    if check == "language":
        return row["language_score"] < language_score
    low, high = qc["length_ratios"].get(pair, qc["length_ratio"])
    return not low <= row["translate_length_ratio"] <= high
