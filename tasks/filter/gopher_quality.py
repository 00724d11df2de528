"""Gopher quality rules (Rae et al. 2021) with FineWeb's thresholds.

The stop-word rule counts *distinct* stop words present (datatrove 0.10); FineWeb's April-2024
run counted occurrences. Both counts are stored, and the profile picks which one the decision
reads, so switching profile never recomputes signals.
"""

from __future__ import annotations

from collections import Counter

from fineflow.tasks.filter.text import is_symbol_word

NAME = "gopher_quality"
PREFIX = "gopher_qual_"
ENGLISH_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


def signals(text: str, words: list[str], stop_words: frozenset[str]) -> dict:
    n_words = len(words)
    denominator = max(n_words, 1)
    counts = Counter(words)  # each distinct word is classified once
    non_symbol = chars = alpha = 0
    for word, count in counts.items():
        if not is_symbol_word(word):
            non_symbol += count
            chars += count * len(word)
        if any(c.isalpha() for c in word):
            alpha += count
    lines = text.splitlines() or [""]
    present = [w for w in words if w in stop_words]
    values = {
        "words": n_words,
        "non_symbol_words": non_symbol,
        "mean_word_length": chars / non_symbol if non_symbol else 0.0,
        "hash_ratio": text.count("#") / denominator,
        "ellipsis_ratio": (text.count("...") + text.count("…")) / denominator,
        "bullet_lines_ratio": sum(line.lstrip().startswith(("•", "-")) for line in lines) / len(lines),
        "ellipsis_lines_ratio": sum(line.rstrip().endswith(("...", "…")) for line in lines) / len(lines),
        "alpha_words_ratio": alpha / denominator,
        "stop_words_distinct": len(set(present)),
        "stop_words_count": len(present),
    }
    return {PREFIX + key: value for key, value in values.items()}


def decide(values: dict, thresholds: dict, stop_word_mode: str = "distinct") -> str | None:
    def get(name: str):
        return values[PREFIX + name]

    limit = thresholds.get
    if limit("min_doc_words") and get("non_symbol_words") < limit("min_doc_words"):
        return "short_doc"
    if limit("max_doc_words") and get("non_symbol_words") > limit("max_doc_words"):
        return "long_doc"
    if limit("min_avg_word_length") and get("mean_word_length") < limit("min_avg_word_length"):
        return "below_avg_word_length"
    if limit("max_avg_word_length") and get("mean_word_length") > limit("max_avg_word_length"):
        return "above_avg_word_length"
    if limit("max_symbol_word_ratio") and get("hash_ratio") > limit("max_symbol_word_ratio"):
        return "too_many_hashes"
    if limit("max_symbol_word_ratio") and get("ellipsis_ratio") > limit("max_symbol_word_ratio"):
        return "too_many_ellipsis"
    if limit("max_bullet_lines_ratio") and get("bullet_lines_ratio") > limit("max_bullet_lines_ratio"):
        return "too_many_bullets"
    if limit("max_ellipsis_lines_ratio") and get("ellipsis_lines_ratio") > limit("max_ellipsis_lines_ratio"):
        return "too_many_end_ellipsis"
    # datatrove names this one max_non_alpha_words_ratio; it is a minimum share of alphabetic words.
    if limit("max_non_alpha_words_ratio") and get("alpha_words_ratio") < limit("max_non_alpha_words_ratio"):
        return "below_alpha_words_ratio"
    stop_words = get("stop_words_distinct") if stop_word_mode == "distinct" else get("stop_words_count")
    if limit("min_stop_words") and stop_words < limit("min_stop_words"):
        return "stop_words"
    return None
