"""The pipeline flow: run the configured stages as a DAG on one shared Dask cluster.

A stage starts as soon as every stage it reads has finished, so independent branches run at
the same time (each stage is a subflow whose shard tasks go to the shared cluster). A failed
stage stops only the stages that read it; its siblings finish and commit.
"""

from __future__ import annotations

import contextvars
import json
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from contextlib import ExitStack
from dataclasses import replace
from typing import Any

import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL, PREFECT_FLOWS_HEARTBEAT_FREQUENCY, temporary_settings
from prefect.task_runners import ThreadPoolTaskRunner

from fineflow import registry, storage
from fineflow.config import PipelineConfig, validate_pipeline
from fineflow.dag import InputRef, Node, build_dag, descendants
from fineflow.documents import duplicate_ids
from fineflow.export.release import export_after_run
from fineflow.flows import liveness, progress
from fineflow.flows.cluster import Cluster, dask_cluster, using, worker_setup
from fineflow.flows.cluster_checks import check_cluster
from fineflow.flows.credentials import apply_credentials
from fineflow.flows.engine import step_is_committed
from fineflow.flows.input_identity import hash_on_workers
from fineflow.flows.results import result_storage
from fineflow.flows.stage import stage_flow
from fineflow.input_schemas import check_inputs
from fineflow.manifest import REJECTS_DIR, step_folder_of
from fineflow.planning import all_steps, inputs_to_json
from fineflow.preflight import preflight
from fineflow.report import run_folder, write_report
from fineflow.steps import Source, StageInputs, StepPlan


@flow(name="fineflow-pipeline", persist_result=True)
def pipeline_flow(config: dict[str, Any], from_stage: str | None = None) -> dict[str, Any]:
    return run_pipeline(validate_pipeline(config), from_stage)


def run_pipeline(settings: PipelineConfig, from_stage: str | None = None) -> dict[str, Any]:
    """The pipeline's body, inside a flow run: ``fineflow run``'s flow and the deployed flows share it."""
    root = settings.storage
    apply_credentials(settings.storage_credentials)
    run_id = str(flow_run.id)
    liveness.register(run_id, PREFECT_API_URL.value())  # if this process dies, the next command says so
    try:
        preflight(settings)  # a clear one-line failure before the cluster starts (deployed runs have no CLI)
        # an existing cluster: reachable, the same code, no local path its workers cannot see
        check_cluster(settings.dask, root, settings.stages)
        return _run_stages(settings, from_stage, root)
    finally:
        liveness.unregister(run_id)


class StagesFailed(RuntimeError):
    """One or more stages failed; the stages that read them did not run, the others committed."""


def _run_stages(settings: PipelineConfig, from_stage: str | None, root: str) -> dict[str, Any]:
    logger = get_run_logger()
    nodes = build_dag(settings.stages)
    if from_stage is not None and from_stage not in {node.name for node in nodes}:
        raise ValueError(f"from_stage {from_stage!r} is not a stage of this pipeline ({', '.join(n.name for n in nodes)})")
    refresh = descendants(nodes, from_stage) if from_stage else set()
    folder = start_run_record(root, settings.model_dump(mode="json"))
    started = time.perf_counter()
    result_storage(root, settings.storage_credentials)  # saved once, before concurrent stages need it
    with ExitStack() as stack:
        if settings.dask.address is not None:
            # An existing cluster: connected first, so that its workers, not this process, read the inputs' bytes.
            cluster = stack.enter_context(dask_cluster(settings.dask, root=root, credentials_block=settings.storage_credentials))
            hashed = hash_on_workers(cluster, settings.stages, root)
            if hashed:
                logger.info("%d input file(s) identified by the Dask workers (size, change token, content hash)", len(hashed))
        else:
            plans = planned_steps(settings)
            pending = [plan for plan in plans or [] if not step_is_committed(plan)]
            cluster = stack.enter_context(
                dask_cluster(settings.dask, **worker_setup(plans or [], pending), root=root, credentials_block=settings.storage_credentials)
            )
            if refresh or plans is None or pending:
                cluster.client()  # start it before the stages: concurrent branches must not wait on its start
        summaries = run_dag(nodes, cluster, root, refresh, settings.storage_credentials)
        if not cluster.started:
            logger.info("every step was already committed: no Dask cluster was needed")
        lost = cluster.lost_workers
        if lost:
            logger.warning("%d Dask worker(s) were lost during the run; their shards ran again on the others", lost)
    result = finish_run_record(folder, settings.name, root, time.perf_counter() - started, summaries, {"lost_workers": lost})
    if settings.strict and result["warnings"]:  # before the export: a run strict mode fails publishes nothing
        raise StrictWarnings(f"strict: {len(result['warnings'])} warning(s): " + "; ".join(result["warnings"]))
    if settings.export is not None:  # the run's documents as a dataset folder (an unchanged one is left as it is)
        release = export_after_run(settings.export, folder, root)
        result["export"] = release.url
        logger.info("release folder (Hugging Face dataset, README.md card): %s%s", release.url,
                    " (already up to date)" if release.up_to_date else "")
    return result


def planned_steps(settings: PipelineConfig) -> list[StepPlan] | None:
    """Every step of the run, planned before it runs (None where that cannot be told beforehand):
    a run whose steps are all committed starts no cluster, and a LocalCluster's workers get the
    steps' modules imported once, in the process they are forked from."""
    try:
        return all_steps(settings)
    except Exception:  # noqa: BLE001 (planning proper happens stage by stage, with its errors)
        return None


def source_from_summary(ref: InputRef, summary: dict[str, Any]) -> Source:
    """What reading ``ref`` means once its stage has committed (its document step's folders)."""
    kind = registry.get(summary["kind"])
    step = next(step for step in summary["steps"] if step["step"] == kind.document_step)
    folder = storage.join(step_folder_of(summary["output"]), REJECTS_DIR) if ref.rejects else summary["output"]
    return Source(ref.stage, step["fingerprint"], folder, step["shards"], ref.rejects)


def _inputs(node: Node, summaries: dict[str, dict]) -> StageInputs | None:
    if not node.inputs:
        return None
    inputs = StageInputs(
        tuple(source_from_summary(ref, summaries[ref.stage]) for ref in node.inputs),
        tuple(replace(source_from_summary(ref, summaries[ref.stage]), reference=True) for ref in node.references),
    )
    check_inputs(node.name, node.config, inputs)  # columns and types from the footers, before the IDs
    if len(inputs.sources) > 1:
        repeated = duplicate_ids([source.folder for source in inputs.sources])
        if repeated:
            raise StagesFailed(
                f"stage {node.name}: its inputs ({', '.join(map(str, node.inputs))}) share document id(s) "
                f"{', '.join(repeated)}: a union must not hold a document twice (deduplicate one branch against the other first)"
            )
    return inputs


def run_dag(nodes: list[Node], cluster: Cluster, root: str, refresh: set[str], credentials: str | None) -> list[dict[str, Any]]:
    """Run every stage once its inputs are committed; return their summaries in DAG order."""
    logger = get_run_logger()
    summaries: dict[str, dict] = {}
    failed: dict[str, BaseException] = {}
    skipped: list[str] = []
    waiting = list(nodes)
    running: dict[Future, Node] = {}
    pool = ThreadPoolExecutor(max_workers=max(len(nodes), 1), thread_name_prefix="fineflow-stage")
    try:
        while waiting or running:
            for node in list(waiting):
                needs = [ref.stage for ref in node.needs]
                if any(name in failed or name in skipped for name in needs):
                    skipped.append(node.name)
                    waiting.remove(node)
                    logger.error("stage %s does not run: its input stage failed", node.name)
                    progress.emit("stage_not_run", name=node.name, kind=node.config.stage)
                elif all(name in summaries for name in needs):
                    waiting.remove(node)
                    try:
                        inputs = _inputs(node, summaries)
                    except Exception as error:  # noqa: BLE001 (this branch fails; the others go on)
                        failed[node.name] = error
                        logger.error("stage %s failed: %s", node.name, error)
                        progress.emit("stage_failed", name=node.name, kind=node.config.stage, error=one_line(error))
                        continue
                    context = contextvars.copy_context()  # the subflow runs under this flow run
                    future = pool.submit(
                        context.run, run_stage_flow, node, cluster, root, inputs, node.name in refresh, credentials
                    )
                    running[future] = node
            if not running:
                continue
            finished, _ = wait(list(running), return_when=FIRST_COMPLETED)
            for future in finished:
                node = running.pop(future)
                try:
                    summaries[node.name] = future.result()
                except Exception as error:  # noqa: BLE001 (reported below, after the other branches finish)
                    failed[node.name] = error
                    logger.error("stage %s failed: %s", node.name, error)
                    progress.emit("stage_failed", name=node.name, kind=node.config.stage, error=one_line(error))
                else:
                    progress.emit("stage_done", summary=summaries[node.name])
    except BaseException:
        # Cancelled (Prefect's termination signal), interrupted: release the run's Dask work now,
        # rather than wait here for every queued shard to run.
        cluster.abandon()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown()
    if failed:
        if len(failed) == 1:  # its own error, as a straight pipeline always reported it
            raise next(iter(failed.values()))
        raise StagesFailed(
            "; ".join(f"stage {name} failed: {type(error).__name__}: {error}" for name, error in failed.items())
            + (f"; not run (an input failed): {', '.join(skipped)}" if skipped else "")
        )
    return [summaries[node.name] for node in nodes]


def one_line(error: BaseException) -> str:
    """A stage's error as the run summary records it: its type and first line."""
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__


class StrictWarnings(RuntimeError):
    """A run with ``strict`` that warned: its outputs are committed, but it counts as failed."""


def start_run_record(root: str, config: dict[str, Any]) -> str:
    """Store the run's resolved configuration in ``<root>/_runs/<run id>/`` (what gc and re-runs read)."""
    folder = run_folder(root, str(flow_run.id))
    storage.write_bytes(storage.join(folder, "config.yaml"), yaml.safe_dump(config, sort_keys=False).encode())
    storage.write_bytes(storage.join(folder, "process.json"), json.dumps(liveness.process_record()).encode())
    return folder


def finish_run_record(
    folder: str, name: str, root: str, seconds: float, summaries: list[dict], extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    """Write the run's summary and HTML report next to its configuration; publish the summary artifact."""
    warnings = [f"{stage['name']}: {warning}" for stage in summaries for warning in stage.get("warnings", [])]
    result = {
        "run_id": str(flow_run.id), "pipeline": name, "storage": root, "seconds": round(seconds, 2),
        "warnings": warnings, **(extra or {}), "stages": summaries,
    }
    storage.write_bytes(storage.join(folder, "summary.json"), json.dumps(result, indent=1).encode())
    try:
        result["report"] = write_report(folder)
    except Exception as error:  # noqa: BLE001 (the run's data is committed; the report can be rebuilt)
        get_run_logger().warning("the HTML report could not be written (%s); rebuild it with `fineflow report %s`", error, folder)
    create_markdown_artifact(key="pipeline-summary", markdown=_markdown(result), description=f"run {result['run_id']}")
    return result


def run_stage_flow(
    node: Node, cluster: Cluster, root: str, inputs: StageInputs | None, refresh: bool, credentials: str | None
) -> dict[str, Any]:
    """Run one stage as a subflow (its kind's flow): its steps' batch tasks run in threads of this
    process, their shards on ``cluster``."""
    runnable = stage_flow(node.config.stage).with_options(
        task_runner=ThreadPoolTaskRunner(max_workers=cluster.config.tasks_per_step),
        result_storage=result_storage(root, credentials),
    )
    started = time.time()
    # No heartbeat thread for a stage's subflow: the run's own flow beats for the process, and
    # each flow's heartbeat thread costs up to a second at its end (it sleeps in 1 s steps).
    with using(cluster), temporary_settings(updates={PREFECT_FLOWS_HEARTBEAT_FREQUENCY: None}):
        summary = runnable(
            name=node.name, stage_config=node.config.model_dump(mode="json"), root=root, inputs=inputs_to_json(inputs),
            refresh=refresh, credentials_block=credentials,
        )
    # when the DAG launched the stage and when it came back (the subflow's own start can lag
    # behind a busy Prefect API): the run's timeline of stages
    return {**summary, "started_at": round(started, 3), "finished_at": round(time.time(), 3)}


def _markdown(result: dict[str, Any]) -> str:
    lines = [
        f"## {result['pipeline']}: run `{result['run_id']}`",
        "",
        f"Storage: `{result['storage']}`",
        "",
        *([f"Report (charts, opens offline): [{result['report']}]({_link(result['report'])})", ""] if result.get("report") else []),
        "| stage | docs in | docs out | tasks | cached | seconds | output |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in result["stages"]:
        lines.append(
            f"| {s['name']} | {s['docs_in']} | {s['docs_out']} | {s['shards']} | {s['cached_shards']} | {s['seconds']} | `{s['output']}` |"
        )
    if result.get("warnings"):
        lines += ["", "### Warnings", "", *(f"- {warning}" for warning in result["warnings"])]
    return "\n".join(lines)


def _link(url: str) -> str:
    """A clickable address: local paths become file:// URLs (s3:// stays as it is)."""
    return f"file://{url}" if storage.is_local(url) and url.startswith("/") else url
