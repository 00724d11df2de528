"""Configuration of the filter stage: which filters run, in which order, with which thresholds.

Each entry of ``filters`` is validated by its rule's options model, found by ``name`` in the rule
registry (``rules.py``); an entry naming ``module`` (a rule fineflow does not ship) imports that
module first. Each rule's options split in two: parameters that change the text or the signals
(C4's line rules, the stop-word lists, the n-gram sizes, word splitting) and pure thresholds. The
first kind enters the ``signals`` step's fingerprint, the second only the ``decide`` step's, so
re-tuning a threshold re-runs only the cheap decision.

Defaults are datatrove 0.10's (FineWeb's thresholds). ``profile: fineweb-2024-04`` switches the
few behaviours that differed in FineWeb's April-2024 run (each rule's ``profiles``; docs/filters.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import Field, field_validator, model_validator

from fineflow.languages import WordSplitters
from fineflow.stage_config import StageConfig
from fineflow.tasks.filter import rules
from fineflow.tasks.filter.rule import RuleOptions

FilterOptions = rules.options_entry(RuleOptions)


class FilterStage(StageConfig):
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
        return rules.check_unique(filters)

    @model_validator(mode="after")
    def _apply_profile(self) -> FilterStage:
        for options in self.filters:
            for key, value in rules.get(options.name).profiles.get(self.profile, {}).items():
                if getattr(options, key) is None:
                    setattr(options, key, value)
        return self

    def _file_options(self) -> list[tuple[RuleOptions, str]]:
        return [(options, key) for options in self.filters for key in options.file_options()]

    def resolve_paths(self, resolve: Callable[[str], str]) -> None:
        if self.language_configs not in (None, "builtin"):
            self.language_configs = resolve(self.language_configs)
        for options, key in self._file_options():
            value = getattr(options, key)  # a path, or {language: path} (the perplexity filter's models)
            setattr(options, key, {k: resolve(v) for k, v in value.items()} if isinstance(value, dict) else resolve(value))

    def named_files(self) -> list[str]:
        named = [self.language_configs] if self.language_configs not in (None, "builtin") else []
        for options, key in self._file_options():
            value = getattr(options, key)
            named += list(value.values()) if isinstance(value, dict) else [value]
        return named
