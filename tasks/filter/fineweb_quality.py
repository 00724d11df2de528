"""FineWeb's own quality rules (Penedo et al. 2024): line punctuation, short lines,
duplicated-line characters, list-like documents.

Current datatrove ratios are over non-empty lines with strict comparisons and every
Unicode sentence terminal as a stop character; FineWeb's April-2024 run used all lines,
``. ' " ! ?`` and non-strict comparisons (the ``fineweb-2024-04`` profile).
"""

from __future__ import annotations

from pydantic import Field

from fineflow.tasks.filter.rule import Document, Rule, RuleOptions
from fineflow.tasks.filter.text import LEGACY_STOP_CHARS, duplicate_stats, terminal_punctuation

PREFIX = "fineweb_"


class FineWebQualityOptions(RuleOptions):
    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3
    legacy_lines: bool | None = Field(default=None, description="FineWeb-2024 stop characters and all lines; None: the profile's")
    strict: bool | None = Field(default=None, description="strict comparisons; None: the profile's")
    THRESHOLDS = ("line_punct_thr", "line_punct_exclude_zero", "short_line_thr", "char_duplicates_ratio", "new_line_ratio", "strict")


def signals(text: str, n_words: int, short_line_length: int, legacy: bool) -> dict:
    all_lines = text.split("\n")
    lines = all_lines if legacy else [line for line in all_lines if line.strip()]
    non_empty = sum(1 for line in all_lines if line.strip())
    count = max(len(lines), 1)
    if legacy:
        punct = sum(line.endswith(LEGACY_STOP_CHARS) for line in lines)
    else:
        terminal = terminal_punctuation()
        punct = sum(line[-1] in terminal for line in lines)
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


def measure(spec: dict, document: Document) -> dict:
    # the word count only: after C4's rewrite it is known without a split
    return signals(document.text, document.word_count, spec["short_line_length"], spec["legacy_lines"])


RULE = Rule(
    name="fineweb_quality",
    options=FineWebQualityOptions,
    signals=[
        (PREFIX + "non_empty_lines", "int64"),
        (PREFIX + "line_punct_ratio", "float64"),
        (PREFIX + "short_line_ratio", "float64"),
        (PREFIX + "char_dup_ratio", "float64"),
        (PREFIX + "list_ratio", "float64"),
    ],
    measure=measure,
    decide=lambda row, limits: decide(row, limits, strict=limits.get("strict", True)),
    measured_by=PREFIX + "non_empty_lines",
    language_keys={name: name for name in ("line_punct_thr", "new_line_ratio", "char_duplicates_ratio", "short_line_thr")},
    profiles={"datatrove-0.10": {"legacy_lines": False, "strict": True}, "fineweb-2024-04": {"legacy_lines": True, "strict": False}},
)
