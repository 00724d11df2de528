"""The flows that deployments run: the whole pipeline, or one stage over a committed input.

Their parameters are pydantic models, so the Prefect UI renders them as forms (a stage's
parameters are that stage's own config model: enums become drop-downs, limits are checked
before anything runs). What the UI leaves empty comes from the worker's environment, which
``fineflow stack up`` sets: ``FINEFLOW_STORAGE`` (the stack's S3 bucket) and
``FINEFLOW_DASK_ADDRESS`` (the stack's scheduler, so runs never start their own cluster).

A scheduled run can partition its storage by its *scheduled* time (``partition``): a retry of
that run, or a re-run of the same slot, lands in the same folder and finds its cached work,
while next week's run gets a folder of its own.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL
from pydantic import BaseModel, Field

from fineflow import storage
from fineflow.config import CrawlStage, DaskConfig, load_config, resolve_stage_paths
from fineflow.dedup_config import DedupStage
from fineflow.filter_config import FilterStage
from fineflow.flows import liveness
from fineflow.flows.cluster import dask_cluster
from fineflow.flows.credentials import apply_credentials
from fineflow.flows.pipeline import finish_run_record, run_pipeline, run_stage_flow, start_run_record
from fineflow.manifest import read_manifest
from fineflow.preflight import check_stage, check_storage

StageName = Literal["crawl", "dedup", "filter"]
Partition = Literal["none", "scheduled-date", "scheduled-week"]


class Target(BaseModel):
    """Where a deployed run writes and computes; empty fields come from the worker's environment."""

    storage: str | None = Field(
        default=None, description="storage root (local path or s3://bucket/prefix); default: $FINEFLOW_STORAGE, else the file's"
    )
    dask_address: str | None = Field(
        default=None, description="Dask scheduler; default: $FINEFLOW_DASK_ADDRESS, else a LocalCluster for the run"
    )
    credentials_block: str | None = Field(default=None, description="prefect-aws AwsCredentials block for s3://")
    partition: Partition = Field(
        default="none", description="write under <storage>/<scheduled date or ISO week> of this run (for schedules)"
    )


class PipelineRun(Target):
    pipeline: str = Field(
        default="examples/demo.yaml", description="pipeline YAML, relative to the deployment's working directory"
    )
    from_stage: StageName | None = Field(default=None, description="recompute this stage and those after it")


class CrawlRun(Target):
    stage: CrawlStage = Field(description="the crawl stage's settings (inputs relative to the working directory)")
    refresh: bool = Field(default=False, description="recompute even what is cached")


class DedupRun(Target):
    input: str = Field(description="a committed step output folder (with _manifest.json), e.g. a crawl stage's output")
    stage: DedupStage = Field(default_factory=lambda: DedupStage(stage="dedup"))
    refresh: bool = False


class FilterRun(Target):
    input: str = Field(description="a committed step output folder (with _manifest.json), e.g. a dedup stage's output")
    stage: FilterStage = Field(description="the filter stage's settings: its filters in order, per-language thresholds")
    refresh: bool = False


def partition_name(kind: Partition) -> str | None:
    """The run's partition from its scheduled start (unchanged by retries), or None."""
    if kind == "none":
        return None
    scheduled = flow_run.scheduled_start_time
    if kind == "scheduled-date":
        return scheduled.strftime("%Y-%m-%d")
    year, week, _ = scheduled.isocalendar()
    return f"{year}-W{week:02d}"


def _root(target: Target, fallback: str) -> str:
    root = target.storage or os.environ.get("FINEFLOW_STORAGE") or fallback
    partition = partition_name(target.partition)
    root = storage.normalize(root)
    return storage.join(root, partition) if partition else root


def _dask(target: Target, fallback: DaskConfig) -> DaskConfig:
    address = target.dask_address or os.environ.get("FINEFLOW_DASK_ADDRESS")
    return fallback.model_copy(update={"address": address}) if address else fallback


@flow(name="pipeline", persist_result=True)
def pipeline(run: PipelineRun = PipelineRun()) -> dict[str, Any]:  # noqa: B008 (the form shows these defaults)
    """Run a pipeline file end to end (what ``fineflow run`` does, as a deployment)."""
    config = load_config(Path(run.pipeline), credentials_block=run.credentials_block)
    config.storage = _root(run, config.storage)
    config.dask = _dask(run, config.dask)
    get_run_logger().info("pipeline %s: storage %s, Dask %s", run.pipeline, config.storage, config.dask.address or "LocalCluster")
    return run_pipeline(config, run.from_stage)


def _run_one_stage(run: CrawlRun | DedupRun | FilterRun, upstream: dict | None) -> dict[str, Any]:
    """One stage with a run record like a pipeline's (config, summary, report), so gc sees what it uses."""
    resolve_stage_paths(run.stage, Path.cwd())
    root = _root(run, storage.normalize("./fineflow-data"))
    apply_credentials(run.credentials_block)
    run_id = str(flow_run.id)
    liveness.register(run_id, PREFECT_API_URL.value())
    try:
        check_storage(root)  # one-line errors before the cluster starts, as for a pipeline
        check_stage(run.stage)
        stage_config = run.stage.model_dump(mode="json")
        folder = start_run_record(root, {"kind": "stage", "storage": root, "stage": stage_config, "upstream": upstream})
        started = time.perf_counter()
        with dask_cluster(_dask(run, DaskConfig())) as (address, _):
            get_run_logger().info("%s stage: storage %s, Dask %s", run.stage.stage, root, address)
            summary = run_stage_flow(stage_config, address, root, upstream, run.refresh, run.credentials_block)
        return finish_run_record(folder, f"{run.stage.stage} stage", root, time.perf_counter() - started, [summary])
    finally:
        liveness.unregister(run_id)


def _upstream(folder: str, credentials_block: str | None) -> dict[str, Any]:
    apply_credentials(credentials_block)
    folder = storage.normalize(folder)
    manifest = read_manifest(folder)
    if manifest is None:
        raise ValueError(f"input {folder} has no _manifest.json: give the output folder of a completed step")
    return {"fingerprint": manifest["fingerprint"], "output": folder, "shards": len(manifest["shards"])}


@flow(name="crawl-stage", persist_result=True)
def crawl_stage(run: CrawlRun) -> dict[str, Any]:
    """Crawl WARC/WET files into documents."""
    return _run_one_stage(run, None)


@flow(name="dedup-stage", persist_result=True)
def dedup_stage(run: DedupRun) -> dict[str, Any]:
    """Deduplicate a committed document folder."""
    return _run_one_stage(run, _upstream(run.input, run.credentials_block))


@flow(name="filter-stage", persist_result=True)
def filter_stage(run: FilterRun) -> dict[str, Any]:
    """Filter a committed document folder."""
    return _run_one_stage(run, _upstream(run.input, run.credentials_block))
