"""What a filter rule is: one module declaring ``RULE = Rule(...)``.

The signals step calls a rule's ``measure`` on every document, the decide step its ``decide`` on
every row of signals, the planner its ``prepare``, the config its ``options`` model; nothing else
in the stage knows a rule by name (``rules.py`` lists the built-in modules). Rule modules are
imported to validate a configuration, so they import heavy libraries inside their functions.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field

from fineflow.tasks.common.condition import Condition
from fineflow.tasks.text.words import Splitter

Columns = Sequence[tuple[str, str]]  # (signal column, Arrow type name as pyarrow.type_for_alias reads it)


class RuleOptions(BaseModel):
    """A rule's options in a filter entry. Options listed in ``THRESHOLDS`` only enter the decide
    step; the others (signal parameters) also enter the signals step's fingerprint. ``where``, on
    every rule, limits the documents the rule judges; it enters only the decide step's fingerprint
    (every document is still measured, so changing it re-runs only the decision)."""

    model_config = ConfigDict(extra="forbid")

    THRESHOLDS: ClassVar[tuple[str, ...]] = ()

    name: str
    module: str | None = Field(
        default=None,
        exclude_if=lambda value: value is None,  # built-in rules' entries dump as they were written
        description="the module defining this rule's RULE, for a rule fineflow does not ship",
    )
    where: Condition | None = Field(
        default=None,
        exclude_if=lambda value: value is None,
        description="judge only documents meeting {column, op, value}; the others are kept by this rule",
    )

    def split(self) -> tuple[dict, dict]:
        """(signal parameters, thresholds) of this filter (``where`` is neither: the decide spec holds it)."""
        data = self.model_dump(mode="json", exclude={"name", "module", "where"})
        thresholds = {k: v for k, v in data.items() if k in self.THRESHOLDS}
        signals = {k: v for k, v in data.items() if k not in self.THRESHOLDS}
        return signals, thresholds

    def file_options(self) -> list[str]:
        """Options naming a local file or URL, resolved against the pipeline file and checked before a run."""
        return [key for key in type(self).model_fields if key.endswith("_file") and isinstance(getattr(self, key), str)]


class Document:
    """One document as the rules measure it, in the configured order: a rule that rewrites the
    text (C4) changes what the rules after it see. Words are split on first use and shared."""

    def __init__(self, text: str, url: str | None, language: str, language_score: float | None, splitter_for: Callable[[str], Splitter]):
        self.text = text
        self.url = url
        self.language = language
        self.language_score = language_score
        self._splitter_for = splitter_for
        self._split: Splitter | None = None
        self._words: list[str] | None = None
        self._word_count: int | None = None  # known without a split after a rewrite that counted them

    @property
    def split(self) -> Splitter:
        """The document language's word splitter."""
        if self._split is None:
            self._split = self._splitter_for(self.language)
        return self._split

    @property
    def words(self) -> list[str]:
        if self._words is None:
            self._words = self.split(self.text)
        return self._words

    @property
    def word_count(self) -> int:
        if self._words is None and self._word_count is not None:
            return self._word_count
        return len(self.words)

    def rewrite(self, text: str, word_count: int | None = None) -> None:
        """Replace the text for the rules that follow (``word_count``: its words, if counted)."""
        self.text, self._words, self._word_count = text, None, word_count

    def relabel(self, language: str, score: float | None) -> None:
        """A new language label (re-identification), before any rule splits words."""
        self.language, self.language_score = language, score
        self._split = self._words = self._word_count = None


def signal_parameters(options: RuleOptions, language_configs: dict[str, dict]) -> dict:
    return options.split()[0]


def merge_limits(spec: dict, overrides: dict) -> dict:
    return {**spec, **overrides}


def _no_signals(spec: Any, document: Document) -> dict:
    return {}


@dataclass(frozen=True)
class Rule:
    name: str  # the filter entry's ``name`` and the ``<name>:`` of its drop reasons
    options: type[RuleOptions]
    # (signal row, thresholds for the row's language) -> the failing rule's name, or None
    decide: Callable[[dict, dict], str | None]
    # the signal columns in order; a function of the signal spec where they depend on it
    signals: Columns | Callable[[dict], Columns] = ()
    # (what ``load`` made of the signal spec, the document) -> signal values (``document.rewrite`` to change the text)
    measure: Callable[[Any, Document], dict] = _no_signals
    # signal spec -> what ``measure`` reads (a blocklist, stop-word sets), built once per shard
    load: Callable[[dict], Any] = lambda spec: spec
    # a signal that is null when the rule left a document unmeasured; its decision is then skipped.
    # A rule declaring one is not measured for documents a screen turns away.
    measured_by: str | None = None
    # (loaded spec, document) -> whether any rule with ``measured_by`` measures it; runs before
    # every measurement and may relabel the document (the language filter's list and LID model)
    screen: Callable[[Any, Document], bool] | None = None
    # (an instance of ``options``, language configs) -> the signal spec, at planning time
    prepare: Callable[[Any, dict[str, dict]], dict] = signal_parameters
    # (the stage's thresholds, a language config's overrides) -> what ``decide`` reads; once per language
    limits: Callable[[dict, dict], dict] = merge_limits
    # FineWeb2 flat language-config keys -> this rule's option (a section named after the rule also works)
    language_keys: Mapping[str, str] = field(default_factory=dict)
    # (option, value as a language config writes it) -> the value as the options hold it
    language_value: Callable[[str, Any], Any] = lambda option, value: value
    # signal spec -> content hashes of the files it reads (lists, models), for the signals fingerprint
    resources: Callable[[dict], dict[str, str]] = lambda spec: {}
    # profile -> the options it fills in where an entry leaves them unset (None)
    profiles: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    # whether ``measure`` reads the document's words (the planner then has the word splitters of
    # the step's languages built before the workers fork; a rule that does not say loads them lazily)
    splits_words: bool = False
    # whether ``measure`` may rewrite the text (C4's line rules): the stage then reads its inputs without
    # the columns other stages derived from the old text (fineflow.registry.StageKind.rewrites_text)
    rewrites_text: bool = False
    # (signal spec, the stage's PlanContext, the signals step's parameters) -> (steps that build what
    # the rule reads, run before the signals step; the spec as the signals workers get it, naming
    # those steps' artifacts by URL). The planner chains the signals fingerprint on the steps'
    # fingerprints, never on the URLs (precision filtering's wordlists built from the run's documents)
    build: Callable[[dict, Any, dict], tuple[list[Any], dict]] | None = None
    module: str = field(default="", compare=False)  # where RULE was found (set on registration)

    def columns(self, spec: dict) -> list[tuple[str, str]]:
        return list(self.signals(spec) if callable(self.signals) else self.signals)
