"""Configuration of the filter stage: which filters run, in which order, with which thresholds.

Each filter's options split in two: parameters that change the text or the signals (C4's line
rules, the stop-word lists, the n-gram sizes, word splitting) and pure thresholds. The first
kind enters the ``signals`` step's fingerprint, the second only the ``decide`` step's, so
re-tuning a threshold re-runs only the cheap decision.

Defaults are datatrove 0.10's (FineWeb's thresholds). ``profile: fineweb-2024-04`` switches the
few behaviours that differed in FineWeb's April-2024 run (see docs/filters.md).
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fineflow.languages import WordSplitters, canonical_language

PROFILES = ("datatrove-0.10", "fineweb-2024-04")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")

    THRESHOLDS: ClassVar[tuple[str, ...]] = ()  # option names that are pure thresholds

    def split(self) -> tuple[dict, dict]:
        """(signal parameters, thresholds) of this filter."""
        data = self.model_dump(mode="json", exclude={"name"})
        thresholds = {k: v for k, v in data.items() if k in self.THRESHOLDS}
        signals = {k: v for k, v in data.items() if k not in self.THRESHOLDS}
        return signals, thresholds


_DEFAULT_LISTS = "default"


class UrlFilterOptions(_Strict):
    name: Literal["url"]
    domains_file: str | None = _DEFAULT_LISTS
    urls_file: str | None = _DEFAULT_LISTS
    banned_words_file: str | None = _DEFAULT_LISTS
    soft_banned_words_file: str | None = _DEFAULT_LISTS
    banned_subwords_file: str | None = _DEFAULT_LISTS
    soft_word_threshold: int = Field(default=2, ge=0)
    THRESHOLDS = ("soft_word_threshold",)


class LanguageFilterOptions(_Strict):
    name: Literal["language"]
    languages: list[str] | None = Field(default=None, description="keep only these (None: any language)")
    min_score: float = Field(default=0.65, ge=0, le=1)
    inclusive: bool = Field(default=False, description="keep a score equal to the threshold (FineWeb2: >=)")
    per_language_scores: bool = Field(default=True, description="use language_score from the language configs")
    model: str | None = Field(default=None, description="re-identify with 'lid.176' or a fastText model path (GlotLID)")
    THRESHOLDS = ("languages", "min_score", "inclusive", "per_language_scores")

    @field_validator("languages")
    @classmethod
    def _canonical(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else sorted({canonical_language(code) for code in value})


class GopherRepetitionOptions(_Strict):
    name: Literal["gopher_repetition"]
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


class GopherQualityOptions(_Strict):
    name: Literal["gopher_quality"]
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


class C4Options(_Strict):
    name: Literal["c4"]
    remove_citations: bool = True
    filter_no_terminal_punct: bool = Field(default=False, description="off in FineWeb")
    min_words_per_line: int = 3
    max_word_length: int = 1000
    filter_javascript: bool = True
    filter_policy: bool = True
    filter_lorem_ipsum: bool = True
    filter_curly_bracket: bool = True
    min_num_sentences: int = 5
    THRESHOLDS = ("filter_lorem_ipsum", "filter_curly_bracket", "min_num_sentences")


class FineWebQualityOptions(_Strict):
    name: Literal["fineweb_quality"]
    line_punct_thr: float = 0.12
    line_punct_exclude_zero: bool = False
    short_line_thr: float = 0.67
    short_line_length: int = 30
    char_duplicates_ratio: float = 0.01
    new_line_ratio: float = 0.3
    legacy_lines: bool | None = Field(default=None, description="FineWeb-2024 stop characters and all lines; None: the profile's")
    strict: bool | None = Field(default=None, description="strict comparisons; None: the profile's")
    THRESHOLDS = ("line_punct_thr", "line_punct_exclude_zero", "short_line_thr", "char_duplicates_ratio", "new_line_ratio", "strict")


class ZhHantOptions(_Strict):
    name: Literal["zh_hant"]
    languages: list[str] = Field(default_factory=lambda: ["zh"], description="documents this rule applies to")
    THRESHOLDS = ()


FilterOptions = Annotated[
    UrlFilterOptions
    | LanguageFilterOptions
    | GopherRepetitionOptions
    | GopherQualityOptions
    | C4Options
    | FineWebQualityOptions
    | ZhHantOptions,
    Field(discriminator="name"),
]

# What each profile fills in where an option is left unset (None).
PROFILE_DEFAULTS: dict[str, dict[str, dict]] = {
    "datatrove-0.10": {
        "gopher_repetition": {"line_split": "newlines"},
        "gopher_quality": {"stop_word_mode": "distinct"},
        "fineweb_quality": {"legacy_lines": False, "strict": True},
    },
    "fineweb-2024-04": {
        "gopher_repetition": {"line_split": "splitlines"},
        "gopher_quality": {"stop_word_mode": "occurrences"},
        "fineweb_quality": {"legacy_lines": True, "strict": False},
    },
}


class FilterStage(_Strict):
    stage: Literal["filter"]
    profile: Literal["datatrove-0.10", "fineweb-2024-04"] = "datatrove-0.10"
    filters: list[FilterOptions] = Field(min_length=1)
    language_configs: str | None = Field(
        default=None,
        description="'builtin' (FineWeb2's thresholds for the languages fineflow ships), a folder of "
        "<lang>.yaml files (FineWeb2's configs/ work as they are), or None for FineWeb's defaults everywhere",
    )
    word_splitters: WordSplitters = Field(default_factory=dict, description="language -> splitter override")
    max_text_chars: int = Field(default=2_000_000, gt=0, description="longer documents are dropped before splitting")

    @field_validator("filters")
    @classmethod
    def _unique(cls, filters: list) -> list:
        names = [f.name for f in filters]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"filter(s) listed twice: {', '.join(repeated)}")
        return filters

    @model_validator(mode="after")
    def _apply_profile(self) -> FilterStage:
        defaults = PROFILE_DEFAULTS[self.profile]
        for options in self.filters:
            for key, value in defaults.get(options.name, {}).items():
                if getattr(options, key) is None:
                    setattr(options, key, value)
        return self
