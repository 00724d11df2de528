"""FineWeb's own quality rules (Penedo et al. 2024): line punctuation, short lines,
duplicated-line characters, list-like documents.

Current datatrove ratios are over non-empty lines with strict comparisons and every
Unicode sentence terminal as a stop character; FineWeb's April-2024 run used all lines,
``. ' " ! ?`` and non-strict comparisons (the ``fineweb-2024-04`` profile).
"""

from __future__ import annotations

from fineflow.tasks.filter.text import LEGACY_STOP_CHARS, TERMINAL_PUNCTUATION, duplicate_stats

NAME = "fineweb_quality"
PREFIX = "fineweb_"


def signals(text: str, n_words: int, short_line_length: int, legacy: bool) -> dict:
    all_lines = text.split("\n")
    lines = all_lines if legacy else [line for line in all_lines if line.strip()]
    non_empty = sum(1 for line in all_lines if line.strip())
    count = max(len(lines), 1)
    if legacy:
        punct = sum(line.endswith(LEGACY_STOP_CHARS) for line in lines)
    else:
        punct = sum(line[-1] in TERMINAL_PUNCTUATION for line in lines)
    values = {
        "non_empty_lines": non_empty,
        "line_punct_ratio": punct / count,
        "short_line_ratio": sum(len(line) <= short_line_length for line in lines) / count,
        "char_dup_ratio": duplicate_stats(lines)[1] / max(len(text.replace("\n", "")), 1),
        "list_ratio": text.count("\n") / max(n_words, 1),
    }
    return {PREFIX + key: value for key, value in values.items()}


def decide(values: dict, thresholds: dict, strict: bool = True) -> str | None:
    def get(name: str) -> float:
        return values[PREFIX + name]

    def below(value: float, limit: float) -> bool:
        return value < limit if strict else value <= limit

    def above(value: float, limit: float) -> bool:
        return value > limit if strict else value >= limit

    if get("non_empty_lines") == 0:
        return "empty"
    ratio = get("line_punct_ratio")
    if below(ratio, thresholds["line_punct_thr"]) and not (ratio == 0 and thresholds.get("line_punct_exclude_zero")):
        return "line_punct_ratio"
    if above(get("short_line_ratio"), thresholds["short_line_thr"]):
        return "short_line_ratio"
    if above(get("char_dup_ratio"), thresholds["char_duplicates_ratio"]):
        return "char_dup_ratio"
    if above(get("list_ratio"), thresholds["new_line_ratio"]):
        return "list_ratio"
    return None
