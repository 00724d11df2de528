"""Configuration of the dedup stage (FineWeb's MinHash defaults: 5-grams, 14 bands x 8 rows)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import Field, model_validator

from fineflow.languages import WordSplitters
from fineflow.stage_config import StageConfig
from fineflow.tasks.dedup.substring import SubstringDedup


class DedupStage(StageConfig):
    stage: Literal["dedup"]
    exact: bool = Field(default=True, description="remove documents whose normalized text is identical")
    url: bool = Field(default=True, description="remove documents whose normalized URL is identical")
    near: bool = Field(default=True, description="MinHash-LSH near-duplicates")
    n_grams: int = Field(default=5, ge=1, le=50)
    bands: int = Field(default=14, ge=1, le=512)
    rows: int = Field(default=8, ge=1, le=64)
    threshold: float | None = Field(
        default=None, gt=0, lt=1, description="Jaccard threshold: bands x rows chosen for it (datasketch), replacing bands/rows"
    )
    num_perm: int = Field(default=112, ge=2, le=1024, description="permutations when `threshold` picks bands x rows")
    seed: int = Field(default=1, ge=0)
    hash_function: Literal["xxhash", "sha1"] = "xxhash"
    word_splitters: WordSplitters = Field(default_factory=dict, description="language -> word splitter override")
    word_splitter: str | None = Field(
        default=None, description="one splitter for every document, e.g. 'spacy:en' as FineWeb's English dedup did"
    )
    max_text_chars: int = Field(default=2_000_000, gt=0, description="longer texts are shingled on this prefix")
    substring: SubstringDedup | None = Field(
        default=None, description="exact-substring dedup after the document dedup (docs/dedup.md); off unless given"
    )
    previous: str | None = Field(
        default=None, description="a previous run's dedup/signatures folder: dedup new documents against it"
    )

    @model_validator(mode="after")
    def _bands_from_threshold(self) -> DedupStage:
        if not (self.exact or self.url or self.near or self.substring):
            raise ValueError("enable at least one of exact, url, near, substring")
        if self.threshold is not None:
            if {"bands", "rows"} & self.model_fields_set:
                raise ValueError("give either threshold or bands/rows, not both")
            from fineflow.tasks.dedup.minhash import bands_for_threshold

            self.bands, self.rows = bands_for_threshold(self.threshold, self.num_perm)
            self.threshold = None  # resolved: the plan (and its fingerprint) sees bands and rows
        return self

    def resolve_paths(self, resolve: Callable[[str], str]) -> None:
        if self.previous:
            self.previous = resolve(self.previous)

    def external_steps(self) -> list[str]:
        return [self.previous] if self.previous else []
