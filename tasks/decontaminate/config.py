"""Configuration of the decontaminate stage: which benchmarks, n, and what to do with a match."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import Field, field_validator, model_validator

from fineflow import storage
from fineflow.languages import WordSplitters, canonical_language
from fineflow.stage_config import NAME_PATTERN, StageConfig, Strict
from fineflow.tasks.decontaminate.ngrams import MAX_N

# The built-in example benchmarks (tests, demo): cloze items from the Debian handbook, en and fr.
EXAMPLES = storage.package_url(__package__, "benchmarks")
BUILTIN = "builtin:"
BUILTIN_NAMES = ("handbook-cloze-en", "handbook-cloze-fr")


class Benchmark(Strict):
    name: str = Field(pattern=NAME_PATTERN, max_length=64, description="names the benchmark in columns, reasons and reports")
    path: str = Field(
        min_length=1,
        description="a file, a folder of files or a glob (local, s3://, pkg://): JSON Lines (.jsonl, .json), Parquet or CSV; "
        f"{BUILTIN}<name> for a built-in example ({', '.join(BUILTIN_NAMES)})",
    )
    columns: list[str] = Field(
        default_factory=lambda: ["text"], min_length=1,
        description="the columns whose values make an item's text (joined in this order; lists of strings joined too)",
    )
    language: str = Field(default="en", min_length=2, max_length=16, description="selects the benchmark's word splitter")

    @field_validator("path")
    @classmethod
    def _builtin(cls, value: str) -> str:
        """``builtin:<name>``: the packaged file, as a pkg:// URL every worker resolves in its own installation."""
        if not value.startswith(BUILTIN):
            return value
        name = value.removeprefix(BUILTIN)
        if name not in BUILTIN_NAMES:
            raise ValueError(f"no built-in benchmark {name!r}: the built-in ones are {', '.join(BUILTIN_NAMES)}")
        return f"{EXAMPLES}/{name}.jsonl"

    @field_validator("language")
    @classmethod
    def _canonical(cls, value: str) -> str:
        return canonical_language(value)
    format: Literal["auto", "jsonl", "parquet", "csv"] = Field(default="auto", description="auto: from each file's extension")

    @field_validator("columns")
    @classmethod
    def _distinct(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value) or not all(value):
            raise ValueError("columns: give each column once, by a non-empty name")
        return value


class DecontaminateStage(StageConfig):
    stage: Literal["decontaminate"]
    benchmarks: list[Benchmark] = Field(min_length=1, max_length=1000)
    n: int = Field(default=13, ge=3, le=MAX_N, description="words per n-gram (Dolma, GPT-3: 13)")
    mode: Literal["drop", "remove_paragraphs", "audit"] = "drop"
    min_ngrams: int = Field(default=1, ge=1, le=1_000_000, description="matched n-grams that make a document contaminated")
    min_overlap: float = Field(
        default=0.0, ge=0, le=1, allow_inf_nan=False,
        description="share of the document's words inside matched n-grams that makes it contaminated (with min_ngrams)",
    )
    word_splitters: WordSplitters = Field(default_factory=dict, description="language -> word splitter override")

    @model_validator(mode="after")
    def _unique_names(self) -> DecontaminateStage:
        names = [benchmark.name for benchmark in self.benchmarks]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"benchmarks: name {', '.join(repeated)} more than once (each names one benchmark)")
        return self

    def resolve_paths(self, resolve: Callable[[str], str]) -> None:
        for benchmark in self.benchmarks:
            benchmark.path = resolve(benchmark.path)

    def input_patterns(self) -> list[str]:
        """The benchmark files or globs it reads: a local one is refused on a cluster of other machines."""
        return [benchmark.path for benchmark in self.benchmarks]

