"""Pipeline configuration: a YAML file validated with pydantic before any work starts.

Unknown keys are errors (a typo must not silently fall back to a default). Input paths are
resolved relative to the YAML file, so a pipeline runs the same from any working directory;
the storage root is resolved relative to the working directory (it is where *you* keep runs).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Union

import yaml
from pydantic import Field, ValidationError, create_model

from fineflow import registry, storage
from fineflow.export.options import ExportOptions
from fineflow.stage_config import StageConfig, Strict, resolve_local

DEFAULT_STORAGE = "./fineflow-data"


class ConfigError(ValueError):
    """An invalid pipeline file; the message names each offending key and why."""


class DaskConfig(Strict):
    address: str | None = Field(default=None, description="existing scheduler; None starts a LocalCluster")
    connect_timeout_s: float = Field(
        default=10, gt=0, le=600, allow_inf_nan=False, description="seconds an existing scheduler has to answer"
    )
    shared_filesystem: bool = Field(
        default=False,
        description="the workers of an existing cluster mount the client's local paths at the same place (NFS, "
        "Lustre): local storage and inputs are accepted without a probe",
    )
    n_workers: int = Field(default=2, gt=0)
    threads_per_worker: int = Field(default=1, gt=0)
    memory_limit: str = "auto"
    tasks_per_step: int = Field(
        default=256, gt=0, description="Prefect tasks per step at most: more shards are grouped into batches (a Dask future each)"
    )
    shards_per_task: int = Field(
        default=4, gt=0,
        description="shards a Prefect task holds at least (fewer tasks, less Prefect traffic; 1: one task per shard, as the UI shows best)",
    )
    worker_profile: bool = Field(
        default=False,
        description="a LocalCluster's workers run Dask's sampling profiler (the dashboard's Profile page): 100 samples a second each",
    )


class PipelineConfig(Strict):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9-]*$")
    storage: str = DEFAULT_STORAGE
    storage_credentials: str | None = Field(
        default=None, description="name of a prefect-aws AwsCredentials block for s3:// (default: AWS_* environment)"
    )
    dask: DaskConfig = Field(default_factory=DaskConfig)
    strict: bool = Field(default=False, description="warnings (an empty input file, a glob matching nothing, ...) fail the run")
    plugins: list[str] = Field(default_factory=list, description="modules defining local stage kinds (each a KIND)")
    plugins_from: str | None = Field(default=None, description="folder the plugins are imported from (default: the file's)")
    stages: list[StageConfig] = Field(min_length=1)
    export: ExportOptions | None = Field(
        default=None, description="after a run, write its documents as a Hugging Face dataset folder (docs/release.md)"
    )


@lru_cache(maxsize=None)
def _model_for(kinds: tuple[str, ...]) -> type[PipelineConfig]:
    members = tuple(registry.get(kind).config for kind in kinds)
    union = Annotated[Union[members], Field(discriminator="stage")]  # noqa: UP007 (built at run time)
    return create_model(
        "PipelineConfig", __base__=PipelineConfig, __config__=None,
        stages=(list[union], Field(min_length=1)),  # type: ignore[valid-type]
    )


def pipeline_model() -> type[PipelineConfig]:
    """``PipelineConfig`` whose ``stages`` is the union of every registered kind's config model."""
    return _model_for(tuple(sorted(registry.kinds())))


def _format_errors(error: ValidationError, source: str) -> str:
    tags = registry.error_tags()
    lines = [f"invalid pipeline configuration{' ' + source if source else ''}:"]
    for item in error.errors():
        location = ".".join(str(part) for part in item["loc"] if part not in tags) or "(top level)"
        lines.append(f"  - {location}: {item['msg']}")
    return "\n".join(lines)


def _load_plugins(data: dict, base: Path | None, source: str) -> None:
    plugins = data.get("plugins") or []
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ConfigError(f"invalid pipeline configuration {source}: plugins: expected a list of module names")
    folder = data.get("plugins_from") or (str(base) if base else None)
    try:
        registry.load_plugins(plugins, folder)
    except registry.RegistryError as error:
        raise ConfigError(f"invalid pipeline configuration {source}: {error}") from None


def validate_pipeline(data: dict[str, Any], source: str = "") -> PipelineConfig:
    """A resolved pipeline config from its JSON form (what flows receive): plug-ins loaded first."""
    _load_plugins(data, None, source)
    try:
        return pipeline_model().model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None


def parse_config(data: Any, source: str = "", base_dir: Path | None = None) -> PipelineConfig:
    if not isinstance(data, dict):
        raise ConfigError(f"invalid pipeline configuration {source}: expected a mapping at the top level")
    base = base_dir or Path.cwd()
    _load_plugins(data, base, source)
    try:
        config = pipeline_model().model_validate(data)
    except ValidationError as error:
        raise ConfigError(_format_errors(error, source)) from None
    if config.plugins and not config.plugins_from:
        config.plugins_from = str(base)
    from fineflow.dag import DagError, build_dag

    try:
        nodes = build_dag(config.stages)
    except DagError as error:
        raise ConfigError(f"invalid pipeline configuration {source}: {error}") from None
    if config.export and config.export.stage and config.export.stage not in [stage.label for stage in config.stages]:
        raise ConfigError(f"invalid pipeline configuration {source}: export.stage: no stage {config.export.stage!r}")
    if config.export and not config.export.stage:  # the export takes the one stage no other reads: told now, not after the run
        read = {ref.stage for node in nodes for ref in node.inputs}
        sinks = [node.name for node in nodes if node.name not in read]
        if len(sinks) != 1:
            raise ConfigError(f"invalid pipeline configuration {source}: export: the pipeline ends in {len(sinks)} stages "
                              f"({', '.join(sinks)}): name the one to export with export.stage")
    for stage in config.stages:
        resolve_stage_paths(stage, base)
    missing = [path for stage in config.stages for path in local_files(stage) if not Path(path).exists()]
    if missing:
        raise ConfigError(f"invalid pipeline configuration {source}: missing file(s) or folder(s): {', '.join(missing)}")
    return config


def local_files(stage: StageConfig) -> list[str]:
    """The local files and folders a stage names (blocklists, language configs, listings), once resolved."""
    return [path for path in stage.named_files() if storage.protocol_of(path) == "file"]


def resolve_stage_paths(stage: StageConfig, base: Path) -> None:
    """Make the stage's local file paths absolute, relative to ``base`` (in place)."""
    stage.resolve_paths(lambda path: resolve_local(path, base))


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
