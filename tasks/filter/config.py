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
from typing import Annotated, Any, Literal, Union

from pydantic import Field, PlainValidator, SerializeAsAny, field_validator, model_validator

from fineflow.languages import WordSplitters
from fineflow.stage_config import StageConfig
from fineflow.tasks.filter import rules
from fineflow.tasks.filter.rule import RuleOptions


def _rule_options(value: Any) -> RuleOptions:
    """A filter entry validated by its rule's options model (the rule looked up at validation
    time, so rules registered after this module was imported are accepted too)."""
    if isinstance(value, RuleOptions):
        return value
    if not isinstance(value, dict) or not isinstance(value.get("name"), str):
        raise ValueError("a filter is a mapping with a `name`")
    try:
        rule = rules.get(value["name"], value.get("module"))
    except rules.RuleError as error:
        raise ValueError(str(error)) from None
    return rule.options.model_validate(value)


# SerializeAsAny: a dump (what flows and run records receive) keeps every option of the rule's model.
# The JSON schema (the deployment form in the Prefect UI) offers the built-in rules' options.
_BUILTIN_OPTIONS = tuple(rule.options for rule in rules.registered().values())
FilterOptions = Annotated[
    SerializeAsAny[RuleOptions],
    PlainValidator(_rule_options, json_schema_input_type=Union[_BUILTIN_OPTIONS]),  # noqa: UP007 (built at run time)
]


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
        names = [f.name for f in filters]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"filter(s) listed twice: {', '.join(repeated)}")
        return filters

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
            setattr(options, key, resolve(getattr(options, key)))

    def named_files(self) -> list[str]:
        named = [self.language_configs] if self.language_configs not in (None, "builtin") else []
        return named + [getattr(options, key) for options, key in self._file_options()]
