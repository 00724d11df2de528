"""Run one planned step on the run's Dask cluster, then commit it.

The shards a step still has to compute are split into contiguous batches of at least
``dask.shards_per_task`` shards, at most ``dask.tasks_per_step`` of them; each batch is one
Prefect task (retried on transient errors) in which every shard is a plain Dask future running
the step's pure function. So a step costs a bounded number of Prefect task runs whatever its
size, Dask workers never run Prefect, and each shard still commits on its own (its files, then
its receipt): a retried batch, or a resumed run, skips the shards that committed. Shards already committed with this fingerprint are not submitted at all.
"""

from __future__ import annotations

import dataclasses
import threading
import time
import uuid
from itertools import islice
from math import ceil
from typing import Any

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from fineflow import storage
from fineflow.counters import merge_counts
from fineflow.flows import progress
from fineflow.flows.cluster import Cluster
from fineflow.flows.shard_work import is_transient, lost_with_worker, run_on_worker
from fineflow.flows.stage_report import artifact_key
from fineflow.flows.versions import expected_versions
from fineflow.manifest import write_manifest
from fineflow.steps import StepPlan, resolve_function


class StepFailed(RuntimeError):
    pass


# A shard whose worker died is resubmitted this many times by the batch itself: Dask's own
# rescheduling gives up with KilledWorker after ``distributed.scheduler.allowed-failures``.
MAX_RESUBMITS = 3
PROGRESS_EVERY_S = 1.0  # the progress artifact's updates, at most (the CLI gets every shard)


def batches(numbers: list[int], at_most: int, at_least: int = 1) -> list[list[int]]:
    """``numbers`` (in order) as at most ``at_most`` contiguous batches of near-equal size, each
    of at least ``at_least`` numbers where there are that many."""
    count = min(len(numbers), at_most, max(1, len(numbers) // at_least))
    size, extra = divmod(len(numbers), count) if count else (0, 0)
    out, start = [], 0
    for index in range(count):
        end = start + size + (index < extra)
        out.append(numbers[start:end])
        start = end
    return out


def _retry_if_transient(task, task_run, state) -> bool:  # noqa: ANN001 (Prefect's signature)
    try:
        state.result()
    except Exception as error:  # noqa: BLE001 (we classify it)
        return is_transient(error)
    return False


class _StepWork:
    """One step's shards in flight: what the batch tasks share (results, failures, progress)."""

    def __init__(self, plan: StepPlan, cluster: Cluster, done: int) -> None:
        self.plan = plan
        self.cluster = cluster
        self.location = dataclasses.asdict(plan.location)
        self.versions = expected_versions(plan.fingerprint.components["code"]["libraries"])
        self.shards = {shard["shard"]: shard for shard in plan.shards}
        self.results: dict[int, dict] = {}
        self.errors: dict[int, BaseException] = {}
        self.batch_error: BaseException | None = None  # a batch that failed outside its shards
        self.in_flight = 1  # shards per batch on the scheduler at once (set when the batches are made)
        self.done = done
        self.total = len(plan.shards)
        self._lock = threading.Lock()
        self._reported = 0.0
        self.progress_id = create_progress_artifact(
            progress=100.0 * done / max(self.total, 1),
            key=artifact_key(plan.name, plan.step, "progress"),
            description=f"{plan.name}/{plan.step}: shards done",
        )

    def _submit(self, client, number: int):  # noqa: ANN001, ANN202
        plan = self.plan
        return client.submit(
            run_on_worker, plan.function, self.shards[number], plan.params, self.location, self.cluster.run_key,
            self.versions, key=f"{plan.task_name(number)}-{uuid.uuid4().hex[:8]}", pure=False,
        )

    def run_batch(self, numbers: list[int]) -> int:
        """Compute the batch's shards not yet committed; raise if any failed (transient first).

        At most ``self.in_flight`` of its shards are on the scheduler at once, so a step of a
        million shards never holds a million futures there."""
        from distributed import as_completed

        client = self.cluster.client()
        todo = [n for n in numbers if n not in self.results]  # a retried batch skips what committed
        failed: dict[int, BaseException] = {}
        for attempt in range(MAX_RESUBMITS + 1):
            lost: list[int] = []
            waiting = iter(todo)
            futures = {self._submit(client, n): n for n in islice(waiting, self.in_flight)}
            running = as_completed(list(futures), loop=client.loop)
            for future in running:
                number = futures.pop(future)
                try:
                    result = future.result()
                except Exception as error:  # noqa: BLE001 (classified: lost with its worker, or failed)
                    if lost_with_worker(error) and attempt < MAX_RESUBMITS and not self.cluster.abandoned:
                        lost.append(number)  # its output is atomic: running it again is safe
                    else:
                        failed[number] = error
                        self._record(number, error=error)
                else:
                    failed.pop(number, None)
                    self._record(number, result=result)
                finally:
                    future.release()
                following = None if self.cluster.abandoned else next(waiting, None)
                if following is not None:
                    submitted = self._submit(client, following)
                    futures[submitted] = following
                    running.add(submitted)
            if not lost or self.cluster.abandoned:
                break
            get_run_logger().warning(
                "%s/%s: %d shard(s) lost with their Dask worker; resubmitting them (attempt %d of %d)",
                self.plan.name, self.plan.step, len(lost), attempt + 2, MAX_RESUBMITS + 1,
            )
            todo = lost
        if failed:
            errors = list(failed.values())
            transient = [e for e in errors if is_transient(e)]
            # All transient: re-raise one, so Prefect's retry condition retries the batch.
            raise transient[0] if len(transient) == len(errors) else errors[0]
        return len(numbers)

    def _record(self, number: int, result: dict | None = None, error: BaseException | None = None) -> None:
        with self._lock:
            if result is not None:
                self.results[number] = result
                self.errors.pop(number, None)
                self.done += 1
            else:
                self.errors[number] = error
            done, failed = self.done, len(self.errors)
            now = time.monotonic()
            report = now - self._reported >= PROGRESS_EVERY_S or done == self.total
            if report:
                self._reported = now
        if report:
            update_progress_artifact(self.progress_id, progress=100.0 * done / max(self.total, 1))
        progress.emit("shard_done", stage=self.plan.name, step=self.plan.step, done=done, total=self.total, failed=failed)


def _batch_label(plan: StepPlan, numbers: list[int]) -> str:
    if len(numbers) == 1:
        return plan.task_name(numbers[0])
    return f"{plan.name}-{plan.step}-{numbers[0]:05d}-{numbers[-1]:05d}"


def _run_batches(work: _StepWork, numbers: list[int]) -> None:
    """Each batch as a Prefect task on the stage flow's task runner (threads of this process)."""

    @task(
        name=f"{work.plan.name}-{work.plan.step}",
        task_run_name="{label}",
        cache_policy=NO_CACHE,
        persist_result=False,
        retries=3,
        retry_delay_seconds=exponential_backoff(backoff_factor=2),
        retry_jitter_factor=0.5,
        retry_condition_fn=_retry_if_transient,
    )
    def shard_batch(label: str, first: int, count: int) -> int:
        return work.run_batch(numbers[first : first + count])

    groups = batches(numbers, work.cluster.config.tasks_per_step, work.cluster.config.shards_per_task)
    # Twice the cluster's threads in flight over all batches: workers never wait for work, and
    # the scheduler holds a bounded number of futures however many shards the step has.
    threads = sum(work.cluster.client().nthreads().values())
    work.in_flight = max(2, ceil(2 * max(threads, 1) / len(groups)))
    futures, first = [], 0
    for group in groups:
        futures.append(shard_batch.submit(label=_batch_label(work.plan, group), first=first, count=len(group)))
        first += len(group)
    for future in futures:
        try:
            future.result()
        except Exception as error:  # noqa: BLE001 (its shards' errors are recorded; this is the batch's own)
            work.batch_error = work.batch_error or error


def run_step(plan: StepPlan, cluster: Cluster, refresh: bool = False) -> dict[str, Any]:
    """Compute the step's uncommitted shards, write the manifest; return the step's totals.

    A shard whose committed file is missing, or no longer matches the step's manifest, is
    recomputed; with ``refresh`` every shard is.
    """
    started = time.perf_counter()
    committed = {} if refresh else _committed(plan)
    pending = [shard["shard"] for shard in plan.shards if shard["shard"] not in committed]
    work = _StepWork(plan, cluster, done=len(committed))
    progress.emit("step_started", stage=plan.name, step=plan.step, total=work.total, cached=len(committed))
    if pending:
        _forget_receipts(plan, pending)
        cluster.client()  # start (or connect to) the cluster here, in the stage flow, on first need
        cluster.provide_secrets(plan.secrets)  # their values reach the workers in the run's plugin
        try:
            _run_batches(work, pending)
        except BaseException:
            cluster.abandon()  # cancelled or interrupted: queued shards must not run after us
            raise
    else:
        get_run_logger().info("%s/%s: all %d shards committed, nothing to run", plan.name, plan.step, work.total)

    missing = [n for n in pending if n not in work.results]
    if missing:
        first = missing[0]
        error = work.errors.get(first) or work.batch_error
        raise StepFailed(
            f"{plan.name}/{plan.step}: {len(missing)} of {work.total} shards failed; finished shards are committed "
            f"and a re-run recomputes only the rest. First error: {plan.task_name(first)}: "
            + (f"{type(error).__name__}: {error}" if error else "did not run")
        )
    results = [*committed.values(), *work.results.values()]
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
        "shards": work.total,
        "cached_shards": len(committed),
        "seconds": round(time.perf_counter() - started, 2),
        "manifest_shards": len(manifest["shards"]),
        "warnings": warnings,
        **({"inputs": plan.inputs} if plan.inputs else {}),
        **totals,
    }


def step_is_committed(plan: StepPlan) -> bool:
    """Whether every shard of the step is committed and intact (nothing would run)."""
    return plan.location.intact_shards() >= {shard["shard"] for shard in plan.shards}


def _committed(plan: StepPlan) -> dict[int, dict]:
    committed = plan.location.committed_results()
    present = plan.location.committed_shards()
    damaged = sorted(present - set(committed))
    if damaged:
        get_run_logger().warning(
            "%s/%s: %d shard file(s) without a matching manifest entry or receipt (%s): recomputing them",
            plan.name, plan.step, len(damaged), ", ".join(map(str, damaged[:10])),
        )
    wanted = {shard["shard"] for shard in plan.shards}
    return {number: result for number, result in committed.items() if number in wanted}


def _forget_receipts(plan: StepPlan, numbers: list[int]) -> None:
    """Remove the receipts of shards about to be recomputed: a receipt must describe its files."""
    present = storage.list_names(plan.location.receipts_folder)
    for number in numbers:
        if f"part-{number:05d}.json" in present:
            storage.remove(plan.location.receipt_url(number))


_NEWER_COUNTERS = ("text_chars", "rejected_chars")  # absent from results recorded before them


def _totals(results: list[dict]) -> dict[str, Any]:
    """Sum the shards' counters; nested counters key by key, memory figures (..._rss_mb) by maximum."""
    stats = [result.get("stats", {}) for result in results]
    totals: dict[str, Any] = {"docs_in": 0, "docs_out": 0, "rejected": 0}
    for key in sorted({key for shard in stats for key in shard}):
        target = "rejected" if key == "rejects" else key  # "rejects" names the rejects folder
        values = [shard[key] for shard in stats if key in shard]
        if key in _NEWER_COUNTERS and len(values) < len(stats):
            continue  # some shards' results predate the counter: a partial sum would mislead
        if all(isinstance(v, dict) for v in values):
            totals[target] = merge_counts(values)
        elif key.endswith("rss_mb"):  # (peak and start memory figures)
            totals[target] = max(values)
        elif all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            totals[target] = round(sum(values), 3) if any(isinstance(v, float) for v in values) else sum(values)
    return totals
