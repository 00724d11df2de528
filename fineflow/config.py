"""Pipeline configuration: a YAML file validated with pydantic before any work starts.

Unknown keys are errors (a typo must not silently fall back to a default). Input paths are
resolved relative to the YAML file, so a pipeline runs the same from any working directory;
the storage root is resolved relative to the working directory (it is where *you* keep runs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from fineflow import storage
from fineflow.dedup_config import DedupStage
from fineflow.filter_config import FilterStage

DEFAULT_STORAGE = "./fineflow-data"
# pydantic's discriminated-union tags and filter names, left out of error locations
STAGE_TAGS = ("crawl", "filter", "dedup", "url", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb_quality", "zh_hant")


class ConfigError(ValueError):
    """An invalid pipeline file; the message names each offending key and why."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CommonCrawlListing(_Strict):
    """A Common Crawl ``warc.paths.gz``/``wet.paths.gz`` listing and which of its files to read."""

    path: str
    base_url: str = "s3://commoncrawl"
    limit: int | None = Field(default=None, gt=0)
    sample: float | None = Field(default=None, gt=0, le=1)
    seed: int = 0


class CrawlStage(_Strict):
    stage: Literal["crawl"]
    inputs: list[str] = Field(default_factory=list, description="paths or globs of WARC/WET files")
    listing: CommonCrawlListing | None = None
    extractor: Literal["trafilatura", "resiliparse"] = "trafilatura"
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


StageConfig = Annotated[CrawlStage | FilterStage | DedupStage, Field(discriminator="stage")]


class DaskConfig(_Strict):
    address: str | None = Field(default=None, description="existing scheduler; None starts a LocalCluster")
    n_workers: int = Field(default=2, gt=0)
    threads_per_worker: int = Field(default=1, gt=0)
    memory_limit: str = "auto"


class PipelineConfig(_Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    storage: str = DEFAULT_STORAGE
    storage_credentials: str | None = Field(
        default=None, description="name of a prefect-aws AwsCredentials block for s3:// (default: AWS_* environment)"
    )
    dask: DaskConfig = Field(default_factory=DaskConfig)
    strict: bool = Field(default=False, description="warnings (an empty input file, a glob matching nothing, ...) fail the run")
    stages: list[StageConfig] = Field(min_length=1)

    @field_validator("stages")
    @classmethod
    def _unique(cls, stages: list) -> list:
        names = [s.stage for s in stages]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"stage(s) listed twice: {', '.join(duplicates)}")
        return stages


def _format_errors(error: ValidationError, source: str) -> str:
    lines = [f"invalid pipeline configuration{' ' + source if source else ''}:"]
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"] if part not in STAGE_TAGS) or "(top level)"
        lines.append(f"  - {location}: {item['msg']}")
    return "\n".join(lines)


def _resolve_input(pattern: str, base: Path) -> str:
    if storage.protocol_of(pattern) != "file":
        return pattern
    path = Path(pattern.removeprefix("file://")).expanduser()
    return str(path if path.is_absolute() else (base / path).resolve())


def parse_config(data: Any, source: str = "", base_dir: Path | None = None) -> PipelineConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"invalid pipeline configuration {source}: expected a mapping at the top level")
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None
    base = base_dir or Path.cwd()
    if config.stages[0].stage != "crawl":
        raise ConfigError(f"invalid pipeline configuration {source}: the first stage must be crawl (it reads the inputs)")
    for stage in config.stages:
        resolve_stage_paths(stage, base)
    missing = [path for stage in config.stages for path in local_files(stage) if not Path(path).exists()]
    if missing:
        raise ConfigError(f"invalid pipeline configuration {source}: missing file(s) or folder(s): {', '.join(missing)}")
    return config


def local_files(stage: CrawlStage | FilterStage | DedupStage) -> list[str]:
    """The local files and folders a stage names (blocklists, language configs, listings), once resolved."""
    named: list[str] = []
    if isinstance(stage, FilterStage):
        if stage.language_configs not in (None, "builtin"):
            named.append(stage.language_configs)
        for options in stage.filters:
            named += [
                getattr(options, key) for key in type(options).model_fields
                if key.endswith("_file") and isinstance(getattr(options, key), str) and getattr(options, key) != "default"
            ]
    if isinstance(stage, CrawlStage):
        named += [v for k, v in stage.url_filter_options.items() if k.endswith("_file") and isinstance(v, str)]
        if stage.listing is not None:
            named.append(stage.listing.path)
    return [path for path in named if storage.protocol_of(path) == "file"]


def resolve_stage_paths(stage: CrawlStage | FilterStage | DedupStage, base: Path) -> None:
    """Make the stage's local file paths absolute, relative to ``base`` (in place)."""
    if isinstance(stage, DedupStage) and stage.previous:
        stage.previous = _resolve_input(stage.previous, base)
    if isinstance(stage, FilterStage):
        if stage.language_configs not in (None, "builtin"):
            stage.language_configs = _resolve_input(stage.language_configs, base)
        for options in stage.filters:
            for key in type(options).model_fields:
                value = getattr(options, key)
                if key.endswith("_file") and isinstance(value, str) and value != "default":
                    setattr(options, key, _resolve_input(value, base))
    if isinstance(stage, CrawlStage):
        stage.inputs = [_resolve_input(p, base) for p in stage.inputs]
        stage.url_filter_options = {
            k: _resolve_input(v, base) if k.endswith("_file") and isinstance(v, str) else v
            for k, v in stage.url_filter_options.items()
        }
        if stage.listing is not None:
            stage.listing.path = _resolve_input(stage.listing.path, base)


def load_config(
    path: str | Path,
    storage_override: str | None = None,
    dask_address: str | None = None,
    credentials_block: str | None = None,
) -> PipelineConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"pipeline file {path} does not exist") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"pipeline file {path} is not valid YAML: {error}") from None
    config = parse_config(data, source=str(path), base_dir=path.resolve().parent)
    if storage_override:
        config.storage = storage_override
    if dask_address:
        config.dask.address = dask_address
    if credentials_block:
        config.storage_credentials = credentials_block
    config.storage = storage.normalize(config.storage)
    return config
