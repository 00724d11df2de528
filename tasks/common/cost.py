"""What a step's work costs before it runs. One module for every dry-run estimate:

- the throughput an LLM stage will go at, and the hours that makes (translate's source tokens,
  rephrase's generated tokens): configured (the stage's ``throughput``), measured (the last
  committed run of the same step in this storage: a count its shards recorded over the backend
  seconds they recorded) or assumed (a rough figure per backend, stated as such);
- every step's CPU-hours, wall time, peak memory per task and bytes written (``StepFigures``,
  ``extrapolate``): fitted on what a measured run's shards recorded (``fineflow.steps.TaskUsage``:
  a sample run, or the last run in this storage) and scaled to the whole input by raw input bytes
  (``fineflow.cost_planner`` runs the sample and assembles the table).

Each estimate says which basis its figures come from.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass

from fineflow.manifest import StepLocation, read_latest, read_manifest
from fineflow.steps import StepPlan

CHARS_PER_TOKEN = 4.0  # tokens from characters where no tokenizer is at hand (English web text: ~4-5)


def last_manifest(plan: StepPlan) -> dict | None:
    """The manifest of this step's last committed run (any fingerprint) in this storage, if any."""
    latest = read_latest(plan.location, plan.name)
    if latest is None:
        return None
    return read_manifest(StepLocation(plan.root, plan.stage, plan.step, latest["fingerprint"]).folder)


def measured(plan: StepPlan, amount: str, seconds: str, per: float = 1.0) -> float | None:
    """``sum(amount) / per / sum(seconds)`` over the shards of this step's last run in this
    storage (stats keys of its manifest), or None where it never ran or did no work."""
    manifest = last_manifest(plan)
    if manifest is None:
        return None
    done = sum(shard["stats"].get(amount, 0) for shard in manifest["shards"])
    spent = sum(shard["stats"].get(seconds, 0.0) for shard in manifest["shards"])
    return done / per / spent if done and spent else None


def throughput(configured: float | None, found: float | None, assumed: float) -> tuple[float, str]:
    """(tokens per second, where the figure comes from)."""
    if configured is not None:
        return configured, "configured"
    if found is not None:
        return found, "measured"
    return assumed, "assumed"


def hours(tokens: float, rate: float) -> float:
    return round(tokens / rate / 3600, 4) if rate > 0 else float("inf")


@dataclass(frozen=True)
class StepFigures:
    """What one step's shards recorded in a measured run (``fineflow.steps.TaskUsage`` stats)."""

    stage: str
    step: str
    tasks: int
    cpu_seconds: float  # all its tasks
    wall_seconds: float  # all its tasks, one after another
    peak_rss_mb: float  # its largest task's peak
    start_rss_mb: float  # that task's process memory at its start (the peak less this: what the task added)
    bytes_written: int
    bytes_read: int = 0  # raw input bytes of a source step (byte-range shards); 0 for the others
    # what its first task spent beyond a typical task (the median of the others): a one-off cost
    # (a model or word splitters loaded when first needed) that each worker pays once, not per input byte
    first_task_extra_cpu: float = 0.0


def figures(stage: str, step: str, stats: list[dict]) -> StepFigures | None:
    """A step's figures from its shards' stats, or None where they predate ``TaskUsage``."""
    measured_stats = [shard for shard in stats if "cpu_seconds" in shard]
    if not measured_stats or len(measured_stats) < len(stats):
        return None  # (a partial sum would understate it)
    largest = max(measured_stats, key=lambda shard: shard.get("peak_rss_mb", 0.0))
    cpu = [shard["cpu_seconds"] for shard in measured_stats]
    extra = max(cpu[0] - statistics.median(cpu[1:]), 0.0) if len(cpu) > 1 else 0.0
    return StepFigures(
        stage=stage,
        step=step,
        tasks=len(measured_stats),
        cpu_seconds=sum(shard["cpu_seconds"] for shard in measured_stats),
        wall_seconds=sum(shard.get("wall_seconds", shard["cpu_seconds"]) for shard in measured_stats),
        peak_rss_mb=largest.get("peak_rss_mb", 0.0),
        start_rss_mb=largest.get("start_rss_mb", 0.0),
        bytes_written=sum(shard.get("bytes_written", 0) for shard in measured_stats),
        bytes_read=sum(shard.get("bytes_read", 0) for shard in measured_stats),
        first_task_extra_cpu=extra,
    )


def last_run_figures(plan: StepPlan) -> StepFigures | None:
    """The figures the last committed run of this step (any fingerprint) in this storage recorded."""
    manifest = last_manifest(plan)
    if manifest is None:
        return None
    return figures(plan.name, plan.step, [shard.get("stats", {}) for shard in manifest["shards"]])


@dataclass(frozen=True)
class StepEstimate:
    stage: str
    step: str
    tasks: int
    cpu_hours: float
    wall_hours: float  # on ``workers`` task slots
    peak_rss_mb: float  # per task
    bytes_written: int
    basis: str


def extrapolate(measured: StepFigures, scale: float, tasks: int | None, workers: int, basis: str) -> StepEstimate:
    """A step's cost on ``scale`` times the measured run's input, in ``tasks`` tasks (the full
    plan's count where known; else a one-task step stays one task, a map step's count scales).

    Linear in the input: CPU seconds and bytes written per input byte, as measured, but for the
    first task's one-off extra (``first_task_extra_cpu``), paid once per worker. Wall time: the
    tasks in waves of ``workers``, each the average task's CPU time times the measured wall/CPU
    ratio (waiting on storage), the first wave with the one-off extra. Memory per task: what a
    task added beyond its process's start grows with the input each task gets (a map step's
    bounded shards: about as measured; a one-task step: linearly with the whole input, an upper
    bound where it keeps less than all of it)."""
    if not (scale > 0 and math.isfinite(scale)):
        raise ValueError(f"scale must be a positive finite number, not {scale}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, not {workers}")
    if tasks is None:
        tasks = 1 if measured.tasks == 1 else max(1, round(measured.tasks * scale))
    extra = measured.first_task_extra_cpu
    once = extra * min(workers, tasks)
    marginal = (measured.cpu_seconds - extra) * scale
    waiting = measured.wall_seconds / measured.cpu_seconds if measured.cpu_seconds > 0 else 1.0
    per_task_wall = marginal / tasks * waiting
    per_task_input = scale * measured.tasks / tasks  # each task's input, against a measured task's
    added = max(measured.peak_rss_mb - measured.start_rss_mb, 0.0)
    return StepEstimate(
        stage=measured.stage,
        step=measured.step,
        tasks=tasks,
        cpu_hours=(marginal + once) / 3600,
        wall_hours=(math.ceil(tasks / workers) * per_task_wall + extra * waiting) / 3600,
        peak_rss_mb=round(measured.start_rss_mb + added * max(per_task_input, 1.0), 1),
        bytes_written=round(measured.bytes_written * scale),
        basis=basis,
    )


def total(estimates: list[StepEstimate]) -> dict[str, float]:
    """The whole run: CPU-hours and bytes add up; wall time too (steps one after another: an upper
    bound where DAG branches run side by side); memory per task is the largest."""
    return {
        "cpu_hours": sum(e.cpu_hours for e in estimates),
        "wall_hours": sum(e.wall_hours for e in estimates),
        "peak_rss_mb": max((e.peak_rss_mb for e in estimates), default=0.0),
        "bytes_written": sum(e.bytes_written for e in estimates),
    }
