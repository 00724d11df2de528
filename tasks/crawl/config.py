"""Configuration of the crawl stage: which WARC/WET files to read and how to extract them."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from fineflow.stage_config import StageConfig, Strict


class CommonCrawlListing(Strict):
    """A Common Crawl ``warc.paths.gz``/``wet.paths.gz`` listing and which of its files to read."""

    path: str
    base_url: str = "s3://commoncrawl"
    limit: int | None = Field(default=None, gt=0)
    sample: float | None = Field(default=None, gt=0, le=1)
    seed: int = 0


class CrawlStage(StageConfig):
    stage: Literal["crawl"]
    inputs: list[str] = Field(default_factory=list, description="paths or globs of WARC/WET files")
    listing: CommonCrawlListing | None = None
    extractor: Literal["trafilatura", "resiliparse", "justext"] = "trafilatura"
    extraction_timeout_s: float = Field(
        default=10.0, gt=0, description="per-document limit in CPU seconds of the extraction process"
    )
    include_text_plain: bool = False
    keep_truncated: bool = Field(default=False, description="keep records marked WARC-Truncated")
    max_record_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    langid_model: str = Field(default="lid.176", description="'lid.176' (packaged) or a fastText model path")
    url_filter: str | None = Field(default=None, description="'package.module:factory' pre-extraction hook")
    url_filter_options: dict[str, Any] = Field(default_factory=dict)
    shard_bytes: int = Field(default=64 * 1024 * 1024, gt=0, description="target compressed bytes per shard")

    @model_validator(mode="after")
    def _has_inputs(self) -> CrawlStage:
        if not self.inputs and self.listing is None:
            raise ValueError("crawl needs 'inputs' (paths or globs) or a 'listing'")
        return self

    @field_validator("url_filter")
    @classmethod
    def _hook_spec(cls, value: str | None) -> str | None:
        if value is not None and ":" not in value:
            raise ValueError("must look like 'package.module:factory'")
        return value

    def resolve_paths(self, resolve: Callable[[str], str]) -> None:
        self.inputs = [resolve(p) for p in self.inputs]
        self.url_filter_options = {
            k: resolve(v) if k.endswith("_file") and isinstance(v, str) else v for k, v in self.url_filter_options.items()
        }
        if self.listing is not None:
            self.listing.path = resolve(self.listing.path)

    def input_patterns(self) -> list[str]:
        return list(self.inputs)

    def named_files(self) -> list[str]:
        named = [v for k, v in self.url_filter_options.items() if k.endswith("_file") and isinstance(v, str)]
        return named + ([self.listing.path] if self.listing is not None else [])
