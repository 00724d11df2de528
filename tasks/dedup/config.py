"""Configuration of the dedup stage (FineWeb's MinHash defaults: 5-grams, 14 bands x 8 rows)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

from pydantic import Field, model_validator

from fineflow.languages import WordSplitters
from fineflow.stage_config import StageConfig, Strict
from fineflow.tasks.dedup.substring import SubstringDedup

WORD_GRAMS_MAX = 50
CHAR_GRAMS_MIN = 5  # shorter character shingles are shared by almost every pair of texts
CHAR_GRAMS_MAX = 200
CHAR_GRAMS_DEFAULT = 24  # Nemotron-CC's (NeMo Curator's char_ngrams)


class ClusterMemory(Strict):
    """How the ``cluster`` step runs: in memory, or partitioned on storage within ``memory_mb``
    (docs/dedup.md, "Bounded memory"). An execution detail: the outputs, and so the fingerprints,
    are the same either way."""

    mode: Literal["auto", "memory", "partitioned"] = Field(
        default="auto", description="auto: in memory when the edges fit memory_mb, else partitioned"
    )
    memory_mb: int = Field(default=2048, ge=1, le=1_048_576, description="what one cluster task may hold, in MiB")
    partitions: int | Literal["auto"] = Field(
        default="auto", description="node partitions of the partitioned path; auto: from the edges and memory_mb"
    )

    @model_validator(mode="after")
    def _partitions_in_range(self) -> ClusterMemory:
        if self.partitions != "auto" and not 1 <= self.partitions <= 65_536:
            raise ValueError(f"cluster.partitions: between 1 and 65536, or auto (got {self.partitions})")
        return self


class DedupStage(StageConfig):
    stage: Literal["dedup"]
    exact: bool = Field(default=True, description="remove documents whose normalized text is identical")
    url: bool = Field(default=True, description="remove documents whose normalized URL is identical")
    near: bool = Field(default=True, description="MinHash-LSH near-duplicates")
    shingles: Literal["words", "chars"] = Field(
        default="words", description="MinHash shingles: word n-grams (FineWeb) or character n-grams (Nemotron-CC)"
    )
    n_grams: int = Field(
        default=5, ge=1, le=CHAR_GRAMS_MAX, description="words per shingle, or characters with `shingles: chars` (24 unless set)"
    )
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
    index: str | None = Field(
        default=None,
        description="a persistent dedup index folder (local or s3://): dedup against every run it holds, then append this run's kept documents",
    )
    cluster: ClusterMemory = Field(
        default_factory=ClusterMemory, description="the cluster step's memory bound (docs/dedup.md, Bounded memory)"
    )

    @model_validator(mode="after")
    def _bands_from_threshold(self) -> DedupStage:
        if not (self.exact or self.url or self.near or self.substring):
            raise ValueError("enable at least one of exact, url, near, substring")
        self._check_shingles()
        if self.index is not None and self.previous is not None:
            raise ValueError("give either index or previous, not both: the index holds every earlier run's kept documents (docs/dedup.md)")
        if self.index is not None and not (self.exact or self.url or self.near):
            raise ValueError("index: needs exact, url or near dedup (substring dedup alone compares no keys)")
        if self.threshold is not None:
            if {"bands", "rows"} & self.model_fields_set:
                raise ValueError("give either threshold or bands/rows, not both")
            from fineflow.tasks.dedup.minhash import bands_for_threshold

            self.bands, self.rows = bands_for_threshold(self.threshold, self.num_perm)
            self.threshold = None  # resolved: the plan (and its fingerprint) sees bands and rows
        return self

    def _check_shingles(self) -> None:
        if self.shingles == "chars" and "n_grams" not in self.model_fields_set:
            self.n_grams = CHAR_GRAMS_DEFAULT
        if self.shingles == "words" and self.n_grams > WORD_GRAMS_MAX:
            raise ValueError(f"n_grams: at most {WORD_GRAMS_MAX} words per shingle (got {self.n_grams})")
        if self.shingles == "chars" and self.n_grams < CHAR_GRAMS_MIN:
            raise ValueError(f"n_grams: at least {CHAR_GRAMS_MIN} characters per shingle with shingles: chars (got {self.n_grams})")

    def resolve_paths(self, resolve: Callable[[str], str]) -> None:
        if self.previous:
            self.previous = resolve(self.previous)
        if self.index:
            self.index = resolve(self.index)

    def external_steps(self) -> list[str]:
        return [self.previous] if self.previous else []
