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
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

from prefect import Flow, flow, get_run_logger
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL
from pydantic import BaseModel, Field, create_model

from fineflow import registry, storage
from fineflow.config import DaskConfig, load_config, resolve_stage_paths
from fineflow.dag import Node
from fineflow.flows import liveness
from fineflow.flows.cluster import dask_cluster, worker_setup
from fineflow.flows.cluster_checks import check_cluster
from fineflow.flows.credentials import apply_credentials
from fineflow.flows.engine import step_is_committed
from fineflow.flows.input_identity import hash_on_workers
from fineflow.flows.pipeline import finish_run_record, run_pipeline, run_stage_flow, start_run_record
from fineflow.input_schemas import check_inputs
from fineflow.manifest import DATA_DIR, REJECTS_DIR, read_manifest, step_folder_of
from fineflow.planning import inputs_to_json
from fineflow.preflight import check_stage, check_storage
from fineflow.stage_config import StageConfig
from fineflow.steps import Source, StageInputs

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
    from_stage: str | None = Field(default=None, description="recompute this stage (by name) and the stages that read it")


class StageRun(Target):
    """One stage's run: its kind's settings as ``stage`` (each kind's run model adds it)."""

    refresh: bool = Field(default=False, description="recompute even what is cached")


class ReadingStageRun(StageRun):
    input: str = Field(
        description="a committed output folder to read: a summary's `output` (…/data) or `rejects` folder, or a step folder"
    )


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


def _run_one_stage(run: StageRun, inputs: StageInputs | None) -> dict[str, Any]:
    """One stage with a run record like a pipeline's (config, summary, report), so gc sees what it uses."""
    stage = run.stage  # type: ignore[attr-defined]  (each kind's run model has it)
    resolve_stage_paths(stage, Path.cwd())
    root = _root(run, storage.normalize("./fineflow-data"))
    apply_credentials(run.credentials_block)
    run_id = str(flow_run.id)
    liveness.register(run_id, PREFECT_API_URL.value())
    try:
        check_storage(root)  # one-line errors before the cluster starts, as for a pipeline
        check_stage(stage)
        check_inputs(stage.label, stage, inputs)  # its columns, from the committed footers
        dask = _dask(run, DaskConfig())
        check_cluster(dask, root, [stage])
        stage_config = stage.model_dump(mode="json")
        record = {"kind": "stage", "storage": root, "stage": stage_config, "inputs": inputs_to_json(inputs)}
        folder = start_run_record(root, record)
        started = time.perf_counter()
        external = dask.address is not None  # its workers, not this process, read the inputs' bytes
        with dask_cluster(
            dask, **({} if external else _worker_setup(stage, root, inputs)), root=root, credentials_block=run.credentials_block
        ) as cluster:
            if external:
                hash_on_workers(cluster, [stage], root)
            get_run_logger().info("%s stage: storage %s, Dask %s", stage.label, root, cluster.address or "LocalCluster")
            node = Node(stage.label, stage, ())
            summary = run_stage_flow(node, cluster, root, inputs, run.refresh, run.credentials_block)
        return finish_run_record(folder, f"{stage.label} stage", root, time.perf_counter() - started, [summary])
    finally:
        liveness.unregister(run_id)


def _worker_setup(stage: StageConfig, root: str, inputs: StageInputs | None) -> dict[str, tuple]:
    """The stage's step modules and warm-up calls for a LocalCluster (none where it cannot be
    planned here: planning proper happens in the stage flow, with its errors)."""
    try:
        plans = registry.of(stage).plan(stage, root, stage.label, inputs)
    except Exception:  # noqa: BLE001
        return {}
    return worker_setup(plans, [plan for plan in plans if not step_is_committed(plan)])


def input_source(folder: str, credentials_block: str | None) -> StageInputs:
    """A committed folder given by path: a summary's output (data/) or rejects, or a step folder."""
    apply_credentials(credentials_block)
    folder = storage.normalize(folder).rstrip("/")
    rejects = folder.endswith("/" + REJECTS_DIR)
    manifest = read_manifest(folder)
    if manifest is None:
        raise ValueError(f"input {folder} has no _manifest.json: give the output folder of a completed step")
    step = step_folder_of(folder)
    data = storage.join(step, REJECTS_DIR if rejects else DATA_DIR)
    return StageInputs((Source(folder, manifest["fingerprint"], data, len(manifest["shards"]), rejects),))


@lru_cache(maxsize=None)  # one flow object per kind, wherever it is asked for
def _stage_flow(kind: registry.StageKind) -> Flow:
    """The deployable flow of one stage kind: its settings form is the kind's config model."""
    base = ReadingStageRun if kind.reads_documents else StageRun
    model = create_model(
        f"{kind.kind.title().replace('_', '')}Run",
        __base__=base,
        stage=(kind.config, Field(description=f"the {kind.kind} stage's settings (paths relative to the working directory)")),
    )

    def run_stage(run):  # noqa: ANN001, ANN202 (annotated below: the model is made at run time)
        named = run.stage.references()
        if named:
            raise ValueError(
                f"a stage deployment reads one folder (`input`), but this {kind.kind} stage also reads stage(s) "
                f"{', '.join(named)} by name: run it in a pipeline, or give those documents as files"
            )
        inputs = input_source(run.input, run.credentials_block) if kind.reads_documents else None
        return _run_one_stage(run, inputs)

    run_stage.__annotations__ = {"run": model, "return": dict[str, Any]}
    run_stage.__name__ = f"{kind.kind}_stage"
    run_stage.__doc__ = kind.description or f"The {kind.kind} stage alone."
    return flow(name=f"{kind.kind}-stage", persist_result=True)(run_stage)


def stage_flows() -> dict[str, Flow]:
    """``<kind>_stage``: a deployable flow per registered stage kind (see deployments/stages.py)."""
    return {f"{kind}_stage": _stage_flow(stage) for kind, stage in sorted(registry.kinds().items())}
