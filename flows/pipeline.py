"""The pipeline flow: run the configured stages in order on one shared Dask cluster."""

from __future__ import annotations

import json
import time
from typing import Any

import yaml
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from prefect.runtime import flow_run
from prefect.settings import PREFECT_API_URL
from prefect_dask import DaskTaskRunner

from fineflow import storage
from fineflow.config import PipelineConfig
from fineflow.flows import liveness, progress
from fineflow.flows.cluster import dask_cluster
from fineflow.flows.crawl import crawl_flow
from fineflow.flows.credentials import apply_credentials
from fineflow.flows.dedup import dedup_flow
from fineflow.flows.filter import filter_flow
from fineflow.flows.results import result_storage
from fineflow.preflight import preflight
from fineflow.report import run_folder, write_report

# stage name -> its stage flow (planning lives in fineflow.planning, free of Prefect)
STAGE_FLOWS = {"crawl": crawl_flow, "filter": filter_flow, "dedup": dedup_flow}


@flow(name="fineflow-pipeline", persist_result=True)
def pipeline_flow(config: dict[str, Any], from_stage: str | None = None) -> dict[str, Any]:
    return run_pipeline(PipelineConfig.model_validate(config), from_stage)


def run_pipeline(settings: PipelineConfig, from_stage: str | None = None) -> dict[str, Any]:
    """The pipeline's body, inside a flow run: ``fineflow run``'s flow and the deployed flows share it."""
    root = settings.storage
    apply_credentials(settings.storage_credentials)
    run_id = str(flow_run.id)
    liveness.register(run_id, PREFECT_API_URL.value())  # if this process dies, the next command says so
    try:
        preflight(settings)  # a clear one-line failure before the cluster starts (deployed runs have no CLI)
        return _run_stages(settings, from_stage, root)
    finally:
        liveness.unregister(run_id)


def _run_stages(settings: PipelineConfig, from_stage: str | None, root: str) -> dict[str, Any]:
    logger = get_run_logger()
    folder = start_run_record(root, settings.model_dump(mode="json"))
    started = time.perf_counter()
    summaries = []
    with dask_cluster(settings.dask) as (address, dashboard):
        logger.info("Dask scheduler %s%s", address, f", dashboard {dashboard}" if dashboard else "")
        progress.emit("cluster", address=address, dashboard=dashboard)
        upstream = None
        refresh = False
        for stage in settings.stages:
            refresh = refresh or stage.stage == from_stage
            summary = run_stage_flow(
                stage.model_dump(mode="json"), address, root, upstream, refresh, settings.storage_credentials
            )
            summaries.append(summary)
            last = summary["steps"][-1]
            upstream = {"fingerprint": last["fingerprint"], "output": last["output"], "shards": last["shards"]}
            progress.emit("stage_done", summary=summary)
    result = finish_run_record(folder, settings.name, root, time.perf_counter() - started, summaries)
    if settings.strict and result["warnings"]:
        raise StrictWarnings(f"strict: {len(result['warnings'])} warning(s): " + "; ".join(result["warnings"]))
    return result


class StrictWarnings(RuntimeError):
    """A run with ``strict`` that warned: its outputs are committed, but it counts as failed."""


def start_run_record(root: str, config: dict[str, Any]) -> str:
    """Store the run's resolved configuration in ``<root>/_runs/<run id>/`` (what gc and re-runs read)."""
    folder = run_folder(root, str(flow_run.id))
    storage.write_bytes(storage.join(folder, "config.yaml"), yaml.safe_dump(config, sort_keys=False).encode())
    storage.write_bytes(storage.join(folder, "process.json"), json.dumps(liveness.process_record()).encode())
    return folder


def finish_run_record(folder: str, name: str, root: str, seconds: float, summaries: list[dict]) -> dict[str, Any]:
    """Write the run's summary and HTML report next to its configuration; publish the summary artifact."""
    warnings = [f"{stage['name']}: {warning}" for stage in summaries for warning in stage.get("warnings", [])]
    result = {
        "run_id": str(flow_run.id), "pipeline": name, "storage": root, "seconds": round(seconds, 2),
        "warnings": warnings, "stages": summaries,
    }
    storage.write_bytes(storage.join(folder, "summary.json"), json.dumps(result, indent=1).encode())
    try:
        result["report"] = write_report(folder)
    except Exception as error:  # noqa: BLE001 (the run's data is committed; the report can be rebuilt)
        get_run_logger().warning("the HTML report could not be written (%s); rebuild it with `fineflow report %s`", error, folder)
    create_markdown_artifact(key="pipeline-summary", markdown=_markdown(result), description=f"run {result['run_id']}")
    return result


def run_stage_flow(
    stage_config: dict[str, Any], address: str, root: str, upstream: dict | None, refresh: bool, credentials: str | None
) -> dict[str, Any]:
    """Run one stage as a subflow whose tasks go to the Dask scheduler at ``address``."""
    runnable = STAGE_FLOWS[stage_config["stage"]].with_options(
        task_runner=DaskTaskRunner(address=address), result_storage=result_storage(root, credentials)
    )
    return runnable(stage_config=stage_config, root=root, upstream=upstream, refresh=refresh, credentials_block=credentials)


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
