"""Configuration of the rebalance stage: cells, token targets, rehydration and quality weights.

    - stage: rebalance
      tokens: gpt2                    # the n_tokens_gpt2 column of a tokenize stage upstream
      cells: [language]               # a document's cell: these columns' values (outermost first)
      budget: 2000000                 # total tokens; default: every document at its weight ("natural")
      max_epochs: 4                   # no document appears more often (per cell: in targets)
      targets:                        # by value of the first cell column; `by` nests the next column
        en: {share: 0.6}
        "*": {share: 0.4, split: even}   # every other language: 40 % together, split evenly
      quality: {weights: {0: 1, 1: 1, 2: 2, 3: 3, 4: 3}}   # more epochs for higher quality_level
      rehydration: {kept: filter, max_weight: 10}          # FineWeb2's weights from this run's filter
      solve: {mode: auto, memory_mb: 4096}                # past it, a group of cells at a time (same repeats)

A document's preference is its rehydration weight times its quality weight; the solver gives
each cell its target in tokens by repeating documents in proportion to their preference, never
more than ``max_epochs`` times each (``tasks/rebalance/solver.py``).
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BeforeValidator, Field, field_validator, model_validator

from fineflow.stage_config import StageConfig, Strict

REST = "*"  # in `targets`/`by`: every value not listed, as one group
SOURCE_COLUMN = "source_name"  # the column `sources:` adds (`source` is the crawl's record locator)
TOKENIZER_NAME = r"^[a-z0-9][a-z0-9_]*$"


# Token counts are int64 everywhere (Parquet, the mix): a budget or target beyond this could not be
# counted. Half of int64's range leaves room for the sums of cells and for rounding.
MAX_TOKENS = 2**62
MAX_EPOCHS = 1000  # repeats of one document (written as int32; far past where repeating helps)
MAX_WEIGHT = 1e6  # a quality weight or share: relative amounts, normalized before use
MAX_SEED = 2**63 - 1


def _string_keys(value: Any) -> Any:
    """YAML reads `3:` as an int; cell values are compared as strings (``str(value)``)."""
    return {str(key): item for key, item in value.items()} if isinstance(value, dict) else value


def _number_from_text(value: Any) -> Any:
    """YAML 1.1 loads `1e30` (no dot) as a string: read it as the number it spells, so the range
    check below names the key rather than a parse failure."""
    if isinstance(value, str):
        try:
            number = float(value.replace("_", ""))
        except ValueError:
            return value
        return int(number) if number.is_integer() else number
    return value


def _whole(value: Any) -> Any:
    """A float written where a count is meant (``2.5e6``): whole numbers only."""
    if isinstance(value, float) and value == value and abs(value) != float("inf"):
        if not value.is_integer():
            raise ValueError(f"{value} is not a whole number")
        return int(value)
    return value


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value} is not a finite number")
    return value


def _countable(value: int) -> int:
    if value > MAX_TOKENS:
        raise ValueError(f"{value:.3g} tokens is more than int64 token counts can hold (at most {MAX_TOKENS:,})")
    return value


def _no_negative_zero(value: float) -> float:
    return value + 0.0  # -0.0 + 0.0 is 0.0: a weight of -0.0 must not show as one


# Before-validators run last-listed first: text to a number, then a whole number.
TokenCount = Annotated[int, BeforeValidator(_whole), BeforeValidator(_number_from_text), AfterValidator(_countable)]
Epochs = Annotated[int, BeforeValidator(_whole), BeforeValidator(_number_from_text), Field(le=MAX_EPOCHS)]
Weight = Annotated[float, BeforeValidator(_finite), BeforeValidator(_number_from_text), Field(ge=0, le=MAX_WEIGHT, allow_inf_nan=False),
                   AfterValidator(_no_negative_zero)]


class TargetNode(Strict):
    """The target of one value of a cell column (or of every value not listed, under ``*``)."""

    share: Weight | None = Field(default=None, gt=0, description="a share of the parent's tokens, normalized among siblings")
    tokens: TokenCount | None = Field(default=None, ge=0, description="absolute tokens (taken before the siblings' shares)")
    max_epochs: Epochs | None = Field(default=None, ge=1, description="cap on any document's repeats (default: the parent's)")
    min_epochs: Epochs | None = Field(default=None, ge=0, description="every document appears at least this often")
    split: Literal["natural", "even"] | None = Field(
        default=None,
        description="how values not listed under `by` divide this node's tokens: natural (by their weighted tokens) "
        "or even; under `*`: how the values it stands for divide its share (default: natural)",
    )
    by: dict[str, TargetNode] | None = Field(default=None, description="targets by value of the next cell column")

    _keys = field_validator("by", mode="before")(classmethod(lambda cls, value: _string_keys(value)))

    @model_validator(mode="after")
    def _one_amount(self) -> TargetNode:
        if self.share is not None and self.tokens is not None:
            raise ValueError("give share or tokens, not both")
        return self


class Rehydration(Strict):
    """FineWeb2's rehydration (papers.md (f)): weights by duplicate-cluster size, from the filter
    removal rate per size in this run (``data``), a fixed table (``readme``) or a weights file."""

    weights: str = Field(
        default="data",
        description="data (this run's filter removal rates), readme (FineWeb2's fixed table), or a weights file in "
        "FineWeb2's format ({language: {start_size: weight}})",
    )
    kept: str | None = Field(default=None, description="data: the filter stage whose documents passed (its name)")
    removed: str | None = Field(default=None, description="data: the documents it removed (default: <kept>.rejects)")
    column: str = Field(default="dup_cluster_size", description="the duplicate-cluster size (dedup adds it)")
    max_weight: int = Field(default=10, ge=1, le=1000, description="the weight of the size with the lowest removal rate")
    window: int = Field(default=5, ge=1, le=1001, description="the moving average over the weights (edges unsmoothed)")
    min_docs: int = Field(
        default=10, ge=1, le=MAX_TOKENS, description="a cluster size with fewer documents is merged into the nearest populated size or the tail",
    )
    min_language_docs: int = Field(default=100, ge=1, le=MAX_TOKENS, description="a language with fewer documents uses the fallback")
    fallback: str = Field(default="readme", description="for languages without enough data: readme, or a weights file")

    @model_validator(mode="after")
    def _sources(self) -> Rehydration:
        if self.weights == "data" and self.kept is None:
            raise ValueError("rehydration from data needs `kept`: the filter stage's name (dedup must run before it)")
        if self.weights != "data" and (self.kept or self.removed):
            raise ValueError("kept and removed are read only with weights: data")
        if self.window % 2 == 0:
            raise ValueError("window must be odd (a centred moving average)")
        return self

    @property
    def removed_stage(self) -> str | None:
        if self.weights != "data":
            return None
        return self.removed or f"{self.kept}.rejects"


class QualityWeights(Strict):
    """Quality upsampling (Nemotron-CC-style): a weight per value of a level column."""

    column: str = "quality_level"
    weights: dict[str, Weight] = Field(min_length=1, description="level -> weight (0: never selected)")
    default: Weight | None = Field(default=None, description="for levels not listed or missing (default: an error)")

    _keys = field_validator("weights", mode="before")(classmethod(lambda cls, value: _string_keys(value)))


MAX_SOLVE_MEMORY_MB = 1 << 20  # 1 TiB: past any one worker


class SolveSettings(Strict):
    """How the ``solve`` step holds the documents: all at once (``exact``), or a group of cells at a
    time within ``memory_mb`` (``bounded``); ``auto`` picks bounded when all of them would not fit.
    Both give the same repeats (docs/rebalance.md, "Solving in bounded memory")."""

    mode: Literal["auto", "exact", "bounded"] = "auto"
    memory_mb: int = Field(default=4096, ge=1, le=MAX_SOLVE_MEMORY_MB,
                           description="the documents the solve step holds at once (about 640 bytes each, measured)")


class RebalanceStage(StageConfig):
    stage: Literal["rebalance"]
    tokens: str = Field(description="the tokenizer whose n_tokens_<name> column counts (a tokenize stage upstream)")
    cells: list[str] = Field(default_factory=list, description="columns whose values make a document's cell")
    sources: dict[str, str] | None = Field(
        default=None,
        description=f"source name -> URL regular expression (first match; else `other`): adds the `{SOURCE_COLUMN}` column",
    )
    budget: TokenCount | None = Field(default=None, ge=1, description="total tokens; default: the natural size")
    max_epochs: Epochs = Field(default=4, ge=1, description="no document appears more often (Muennighoff: little gain past ~4)")
    min_epochs: Epochs = Field(default=0, ge=0)
    split: Literal["natural", "even"] = Field(default="natural", description="how values without a target divide the budget")
    targets: dict[str, TargetNode] | None = Field(default=None, description="by value of the first cell column")
    quality: QualityWeights | None = None
    rehydration: Rehydration | None = None
    on_shortfall: Literal["error", "report"] = Field(
        default="error", description="a target no document set can meet: an error naming the cells, or report it and fill what can be",
    )
    seed: int = Field(default=0, ge=0, le=MAX_SEED)
    solve: SolveSettings = Field(default_factory=SolveSettings, description="memory of the solve step (not its result)")

    _keys = field_validator("targets", mode="before")(classmethod(lambda cls, value: _string_keys(value)))

    @field_validator("tokens")
    @classmethod
    def _tokenizer_name(cls, value: str) -> str:
        value = value.removeprefix("n_tokens_")
        if not re.match(TOKENIZER_NAME, value):
            raise ValueError(f"{value!r} is not a tokenizer name (a tokenize stage's key: lower-case letters, digits, _)")
        return value

    @field_validator("sources")
    @classmethod
    def _patterns(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        for name, pattern in (value or {}).items():
            try:
                re.compile(pattern)
            except re.error as error:
                raise ValueError(f"sources: {name}: {pattern!r} is not a regular expression ({error})") from None
        return value

    @model_validator(mode="after")
    def _consistent(self) -> RebalanceStage:
        if self.min_epochs > self.max_epochs:
            raise ValueError("min_epochs is above max_epochs")
        _check_epochs(self.targets, self.max_epochs, self.min_epochs, "targets")
        if len(set(self.cells)) != len(self.cells):
            raise ValueError("cells: a column is listed twice")
        if self.sources is not None and SOURCE_COLUMN not in self.cells:
            raise ValueError(f"sources adds the {SOURCE_COLUMN} column: list it in cells")
        depth = _depth(self.targets)
        if depth > len(self.cells):
            raise ValueError(f"targets nest {depth} levels deep but there are {len(self.cells)} cell columns")
        return self

    @property
    def count_column(self) -> str:
        return f"n_tokens_{self.tokens}"

    def references(self) -> list[str]:
        if self.rehydration is None or self.rehydration.weights != "data":
            return []
        return sorted({self.rehydration.kept, self.rehydration.removed_stage})

    def path_fields(self) -> list[tuple[object, str]]:
        found: list[tuple[object, str]] = []
        if self.rehydration is not None:
            for key in ("weights", "fallback"):
                if getattr(self.rehydration, key) not in ("data", "readme"):
                    found.append((self.rehydration, key))
        return found


def _check_epochs(nodes: dict[str, TargetNode] | None, high: int, low: int, where: str) -> None:
    """Every node's epochs, its own or inherited (the deepest setting wins): a cap below the floor
    would make the solver write more copies than the cap."""
    for value, node in (nodes or {}).items():
        path = f"{where}.{value}"
        own_high = node.max_epochs if node.max_epochs is not None else high
        own_low = node.min_epochs if node.min_epochs is not None else low
        if own_low > own_high:
            high_from = "" if node.max_epochs is not None else " (inherited)"
            low_from = "" if node.min_epochs is not None else " (inherited)"
            raise ValueError(f"{path}: max_epochs {own_high}{high_from} is below min_epochs {own_low}{low_from}")
        _check_epochs(node.by, own_high, own_low, f"{path}.by")


def _depth(nodes: dict[str, TargetNode] | None) -> int:
    if not nodes:
        return 0
    return 1 + max(_depth(node.by) for node in nodes.values())
