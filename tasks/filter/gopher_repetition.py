"""Gopher repetition (Rae et al. 2021, Table A1) as FineWeb applies it.

Signals are fractions of the document (``len(text)`` in code points); every rule drops a
document when its fraction is strictly greater than the threshold; a threshold of 0 or None
switches the rule off (FineWeb2 turns the paragraph rules off this way).

The n-gram sizes measured are the option's and every language config's (planning unions them),
so a language's own table needs no second pass; n-grams are counted in ``ngrams.py``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator

from fineflow.tasks.filter.rule import Document, Rule, RuleOptions
from fineflow.tasks.filter.text import LINE_BREAK_RUN, PARAGRAPH_BREAK, duplicate_stats

PREFIX = "gopher_rep_"
N_GRAM_TABLES = ("top_n_grams", "dup_n_grams")


class GopherRepetitionOptions(RuleOptions):
    dup_line_frac: float | None = 0.3
    dup_para_frac: float | None = 0.3
    dup_line_char_frac: float | None = 0.2
    dup_para_char_frac: float | None = 0.2
    top_n_grams: dict[int, float] = Field(default_factory=lambda: {2: 0.2, 3: 0.18, 4: 0.16})
    dup_n_grams: dict[int, float] = Field(
        default_factory=lambda: {5: 0.15, 6: 0.14, 7: 0.13, 8: 0.12, 9: 0.11, 10: 0.10}
    )
    line_split: Literal["newlines", "splitlines"] | None = Field(default=None, description="None: the profile's")
    THRESHOLDS = ("dup_line_frac", "dup_para_frac", "dup_line_char_frac", "dup_para_char_frac", "top_n_grams", "dup_n_grams")

    @field_validator("top_n_grams", "dup_n_grams")
    @classmethod
    def _sizes(cls, value: dict[int, float]) -> dict[int, float]:
        if any(n < 1 or n > 50 for n in value):
            raise ValueError("n-gram sizes must be between 1 and 50")
        return value


def signals(text: str, words: list[str], line_split: str, top_ns: list[int], dup_ns: list[int]) -> dict:
    from fineflow.tasks.filter.ngrams import ngram_chars  # numpy, loaded by the workers only

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

    top, dup = ngram_chars(words, top_ns, dup_ns)
    for n in top_ns:
        out[f"top_{n}_gram_frac"] = top[n] / length
    for n in dup_ns:
        out[f"dup_{n}_gram_frac"] = dup[n] / length
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


def prepare(options: GopherRepetitionOptions, language_configs: dict[str, dict]) -> dict:
    top, dup = set(options.top_n_grams), set(options.dup_n_grams)
    for settings in language_configs.values():
        section = settings.get("gopher_repetition", {})
        top |= set(section.get("top_n_grams", {}))
        dup |= set(section.get("dup_n_grams", {}))
    return {**options.split()[0], "top_ns": sorted(top), "dup_ns": sorted(dup)}


def columns(spec: dict) -> list[tuple[str, str]]:
    names = [PREFIX + n for n in ("dup_para_frac", "dup_para_char_frac", "dup_line_frac", "dup_line_char_frac")]
    names += [f"{PREFIX}top_{n}_gram_frac" for n in spec["top_ns"]]
    names += [f"{PREFIX}dup_{n}_gram_frac" for n in spec["dup_ns"]]
    return [(name, "float64") for name in names]


def measure(spec: dict, document: Document) -> dict:
    return signals(document.text, document.words, spec["line_split"], spec["top_ns"], spec["dup_ns"])


def limits(spec: dict, overrides: dict) -> dict:
    merged = {**spec, **overrides}
    for name in N_GRAM_TABLES:  # JSON made the n-gram sizes strings; decide sorts them as numbers
        if name in merged:
            merged[name] = {int(n): v for n, v in merged[name].items()}
    return merged


def language_value(option: str, value: Any) -> Any:
    """FineWeb2 writes n-gram tables as ``[[2, 0.184], ...]``."""
    if option not in N_GRAM_TABLES:
        return value
    if isinstance(value, list) and all(isinstance(p, list) and len(p) == 2 for p in value):
        return {int(n): float(v) for n, v in value}
    if isinstance(value, dict):
        return {int(n): float(v) for n, v in value.items()}
    return value


RULE = Rule(
    name="gopher_repetition",
    options=GopherRepetitionOptions,
    splits_words=True,
    signals=columns,
    measure=measure,
    decide=decide,
    measured_by=PREFIX + "dup_line_frac",
    prepare=prepare,
    limits=limits,
    language_keys={name: name for name in ("dup_line_frac", "dup_para_frac", "dup_line_char_frac", "dup_para_char_frac", *N_GRAM_TABLES)},
    language_value=language_value,
    profiles={"datatrove-0.10": {"line_split": "newlines"}, "fineweb-2024-04": {"line_split": "splitlines"}},
)
