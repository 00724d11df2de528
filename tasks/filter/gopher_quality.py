"""Gopher quality rules (Rae et al. 2021) with FineWeb's thresholds.

The stop-word rule counts *distinct* stop words present (datatrove 0.10); FineWeb's April-2024
run counted occurrences. Both counts are stored, and the profile picks which one the decision
reads, so switching profile never recomputes signals.

Stop words are a signal parameter: the option's list (Gopher's English one by default) and,
per language, the language configs' lists, which planning puts in the signal spec.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Literal

from pydantic import Field

from fineflow.tasks.filter.rule import Document, Rule, RuleOptions
from fineflow.tasks.filter.text import is_symbol_word

PREFIX = "gopher_qual_"
ENGLISH_STOP_WORDS = ("the", "be", "to", "of", "and", "that", "have", "with")


class GopherQualityOptions(RuleOptions):
    min_doc_words: int | None = 50
    max_doc_words: int | None = 100_000
    min_avg_word_length: float | None = 3
    max_avg_word_length: float | None = 10
    max_symbol_word_ratio: float | None = 0.1
    max_bullet_lines_ratio: float | None = 0.9
    max_ellipsis_lines_ratio: float | None = 0.3
    max_non_alpha_words_ratio: float | None = Field(default=0.8, description="minimum share of words with a letter")
    min_stop_words: int | None = 2
    stop_word_mode: Literal["distinct", "occurrences"] | None = Field(default=None, description="None: the profile's")
    stop_words: list[str] | None = Field(default=None, description="None: Gopher's English list or the language config's")
    THRESHOLDS = (
        "min_doc_words",
        "max_doc_words",
        "min_avg_word_length",
        "max_avg_word_length",
        "max_symbol_word_ratio",
        "max_bullet_lines_ratio",
        "max_ellipsis_lines_ratio",
        "max_non_alpha_words_ratio",
        "min_stop_words",
        "stop_word_mode",
    )


def signals(text: str, words: list[str], stop_words: frozenset[str]) -> dict:
    n_words = len(words)
    denominator = max(n_words, 1)
    counts = Counter(words)  # each distinct word is classified once
    non_symbol = chars = alpha = 0
    for word, count in counts.items():
        letters_or_digits = word.isalnum()  # most words: no symbol in them, so the per-character checks are skipped
        if letters_or_digits or not is_symbol_word(word):
            non_symbol += count
            chars += count * len(word)
        if word.isalpha() or any(c.isalpha() for c in word):
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


def prepare(options: GopherQualityOptions, language_configs: dict[str, dict]) -> dict:
    by_language = {
        lang: sorted(settings["gopher_quality"]["stop_words"])
        for lang, settings in sorted(language_configs.items())
        if "stop_words" in settings.get("gopher_quality", {})
    }
    return {**options.split()[0], "stop_words_by_language": by_language}


@dataclass(frozen=True)
class StopWords:
    by_language: dict[str, frozenset[str]]
    default: frozenset[str]

    def of(self, language: str) -> frozenset[str]:
        return self.by_language.get(language) or self.by_language.get(language.split("-")[0]) or self.default


def load(spec: dict) -> StopWords:
    default = spec["stop_words"] if spec.get("stop_words") is not None else ENGLISH_STOP_WORDS
    by_language = {lang: frozenset(words) for lang, words in spec["stop_words_by_language"].items()}
    return StopWords(by_language, frozenset(default))


def measure(stop_words: StopWords, document: Document) -> dict:
    return signals(document.text, document.words, stop_words.of(document.language))


RULE = Rule(
    name="gopher_quality",
    options=GopherQualityOptions,
    splits_words=True,
    signals=[
        (PREFIX + "words", "int64"),
        (PREFIX + "non_symbol_words", "int64"),
        (PREFIX + "mean_word_length", "float64"),
        (PREFIX + "hash_ratio", "float64"),
        (PREFIX + "ellipsis_ratio", "float64"),
        (PREFIX + "bullet_lines_ratio", "float64"),
        (PREFIX + "ellipsis_lines_ratio", "float64"),
        (PREFIX + "alpha_words_ratio", "float64"),
        (PREFIX + "stop_words_distinct", "int64"),
        (PREFIX + "stop_words_count", "int64"),
    ],
    measure=measure,
    load=load,
    prepare=prepare,
    decide=lambda row, limits: decide(row, limits, limits.get("stop_word_mode") or "distinct"),
    measured_by=PREFIX + "words",
    language_keys={
        "min_doc_words": "min_doc_words",
        "max_doc_words": "max_doc_words",
        "min_avg_word_length": "min_avg_word_length",
        "max_avg_word_length": "max_avg_word_length",
        "max_non_alpha_words_ratio": "max_non_alpha_words_ratio",
        "min_stop_words": "min_stop_words",
        "stopwords": "stop_words",
        "stop_words": "stop_words",
    },
    profiles={"datatrove-0.10": {"stop_word_mode": "distinct"}, "fineweb-2024-04": {"stop_word_mode": "occurrences"}},
)
