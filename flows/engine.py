"""Run one planned step as Prefect tasks on the flow's task runner (Dask), then commit it."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.futures import as_completed

from fineflow.counters import merge_counts
from fineflow.flows import progress
from fineflow.flows.results import result_storage
from fineflow.flows.shard_task import shard_task
from fineflow.flows.stage_report import artifact_key
from fineflow.manifest import write_manifest
from fineflow.steps import StepPlan, resolve_function


class StepFailed(RuntimeError):
    pass


# A shard whose worker died is resubmitted this many times by the flow itself: Dask's own
# rescheduling gives up with KilledWorker, and prefect-dask reports such tasks as crashed.
MAX_RESUBMITS = 3
_LOST_WORKER_ERRORS = ("KilledWorker", "CommClosedError", "WorkerError")


def _crashed(future, error: BaseException) -> bool:  # noqa: ANN001
    """Whether the task died with its process (retry elsewhere) rather than failed in its code."""
    state = getattr(future, "state", None)
    if state is not None and state.is_crashed():
        return True
    return type(error).__name__ in _LOST_WORKER_ERRORS


def run_step(plan: StepPlan, refresh: bool = False, credentials_block: str | None = None) -> dict[str, Any]:
    """Submit every shard task, wait for all of them, write the manifest; return step totals.

    A shard whose committed file is missing, or no longer matches the step's manifest, is
    forced to recompute even if a cache record exists, so a deleted or damaged artifact can
    never be "Cached". With ``refresh`` every shard recomputes.
    """
    started = time.perf_counter()
    cached_task = shard_task.with_options(result_storage=result_storage(plan.root, credentials_block))
    fresh_task = cached_task.with_options(refresh_cache=True)
    committed = set() if refresh else _intact_shards(plan)
    damaged = set() if refresh else plan.location.committed_shards() - committed
    location = dataclasses.asdict(plan.location)
    total = len(plan.shards)
    progress_id = create_progress_artifact(
        progress=0.0, key=artifact_key(plan.name, plan.step, "progress"), description=f"{plan.name}/{plan.step}: shards done"
    )
    progress.emit("step_started", stage=plan.name, step=plan.step, total=total)

    def submit(shard: dict):
        number = shard["shard"]
        task = cached_task if number in committed else fresh_task
        return task.submit(
            task_label=plan.task_name(number),
            cache_key=plan.cache_key(number),
            function=plan.function,
            shard=shard,
            params=plan.params,
            location=location,
            credentials_block=credentials_block,
            secret_blocks=list(plan.secrets),
        )

    results: list[dict] = []
    failures: list[str] = []
    cached = done = 0
    pending = {submit(shard): shard for shard in plan.shards}
    for attempt in range(1, MAX_RESUBMITS + 2):
        crashed: list[dict] = []
        for future in as_completed(list(pending)):
            shard = pending[future]
            try:
                result = future.result()
            except Exception as error:  # noqa: BLE001 (classified below; finished shards stay committed)
                if _crashed(future, error) and attempt <= MAX_RESUBMITS:
                    crashed.append(shard)  # its worker died: run it again (its output is atomic)
                    continue
                failures.append(f"{plan.task_name(shard['shard'])}: {type(error).__name__}: {error}")
            else:
                results.append(result)
                cached += future.state.name == "Cached"  # the final state, set by result()
            done += 1
            update_progress_artifact(progress_id, progress=100.0 * done / max(total, 1))
            progress.emit("shard_done", stage=plan.name, step=plan.step, done=done, total=total, failed=len(failures))
        if not crashed:
            break
        # Files rewritten by this run count; a damaged file whose recompute was lost does not.
        committed = set() if refresh else plan.location.committed_shards() - damaged
        get_run_logger().warning(
            "%s/%s: %d shard task(s) lost with their Dask worker; resubmitting them (attempt %d of %d)",
            plan.name, plan.step, len(crashed), attempt + 1, MAX_RESUBMITS + 1,
        )
        pending = {submit(shard): shard for shard in crashed}

    if failures:
        raise StepFailed(
            f"{plan.name}/{plan.step}: {len(failures)} of {total} shards failed; finished shards are committed "
            f"and a re-run recomputes only the rest. First error: {failures[0]}"
        )
    manifest = write_manifest(plan.location, plan.fingerprint.components, results, plan.name)
    totals = _totals(results)
    warnings = [*plan.warnings, *(resolve_function(plan.checks)(totals) if plan.checks else [])]
    # Per-input-file counters serve the checks only: a listing of many files would bloat summaries.
    totals = {key: value for key, value in totals.items() if not key.endswith("_by_file")}
    for warning in warnings:
        get_run_logger().warning("%s/%s: %s", plan.name, plan.step, warning)
    artifacts = [plan.location.artifact_url(a["file"]) for entry in manifest["shards"] for a in entry.get("artifacts") or []]
    return {
        "stage": plan.name,
        "kind": plan.stage,
        "step": plan.step,
        "fingerprint": plan.fingerprint.value,
        "output": plan.location.data_folder,
        # (every shard of a document step has a rejects file; a summary names the folder when it holds any)
        "rejects": plan.location.rejects_folder if totals["rejected"] else None,
        **({"artifacts": artifacts} if artifacts else {}),
        "shards": total,
        "cached_shards": cached,
        "seconds": round(time.perf_counter() - started, 2),
        "manifest_shards": len(manifest["shards"]),
        "warnings": warnings,
        **({"inputs": plan.inputs} if plan.inputs else {}),
        **totals,
    }


def _intact_shards(plan: StepPlan) -> set[int]:
    intact = plan.location.intact_shards()
    damaged = sorted(plan.location.committed_shards() - intact)
    if damaged:
        get_run_logger().warning(
            "%s/%s: %d committed shard(s) no longer match the manifest (%s): recomputing them",
            plan.name, plan.step, len(damaged), ", ".join(map(str, damaged[:10])),
        )
    return intact


_NEWER_COUNTERS = ("text_chars", "rejected_chars")  # absent from cache records written before them


def _totals(results: list[dict]) -> dict[str, Any]:
    """Sum the shards' counters; nested counters key by key, peak memory figures by maximum."""
    stats = [result.get("stats", {}) for result in results]
    totals: dict[str, Any] = {"docs_in": 0, "docs_out": 0, "rejected": 0}
    for key in sorted({key for shard in stats for key in shard}):
        target = "rejected" if key == "rejects" else key  # "rejects" names the rejects folder
        values = [shard[key] for shard in stats if key in shard]
        if key in _NEWER_COUNTERS and len(values) < len(stats):
            continue  # some shards' cache records predate the counter: a partial sum would mislead
        if all(isinstance(v, dict) for v in values):
            totals[target] = merge_counts(values)
        elif key.endswith("peak_rss_mb"):
            totals[target] = max(values)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            totals[target] = round(sum(values), 3) if any(isinstance(v, float) for v in values) else sum(values)
    return totals
