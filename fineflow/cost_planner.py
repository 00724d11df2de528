"""The cost planner behind ``fineflow run --dry-run --estimate``: CPU-hours, wall time on N task
slots, peak memory per task and bytes written, per step, for the whole input.

Its figures come from a measured run, scaled by raw input bytes (``fineflow.tasks.common.cost``):

- a sample run (``--sample-files K``): the pipeline on K of its raw input files, spread over
  the sorted list, run here in this process shard by shard (as ``tests/stage_runner.py`` does,
  no cluster, no Prefect) into a scratch storage, each stage planned once its inputs committed
  and each step's declared warm-up (``StepPlan.warm``) made before its shards, as a LocalCluster
  makes it before its workers fork;
- the last run (``--from-last-run``): what each step's last committed run in this storage
  recorded, scaled by the raw bytes its source steps read then.

Raw input bytes are the byte ranges of the source steps' shards (``path``, ``start``, ``end``:
a crawl file's parts), known from the files' sizes before anything runs.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from typing import Any

from fineflow import registry, storage
from fineflow.config import PipelineConfig
from fineflow.dag import build_dag, stage_inputs
from fineflow.manifest import write_manifest
from fineflow.planning import plan_pipeline
from fineflow.steps import StepPlan, resolve_function, run_shard
from fineflow.tasks.common.cost import StepEstimate, StepFigures, extrapolate, figures, last_run_figures


@dataclass(frozen=True)
class Estimate:
    steps: list[StepEstimate]
    missing: list[str]  # "stage/step" without figures (never ran in the measured run, or ran before TaskUsage)
    input_bytes: int  # the whole input's raw bytes
    measured_bytes: int  # the measured run's
    workers: int
    basis: str


def raw_files(plans: list[StepPlan]) -> dict[str, int]:
    """Raw input files and the bytes of them the source steps' shards read ({url: bytes})."""
    files: dict[str, int] = {}
    for plan in plans:
        for shard in plan.shards:
            if isinstance(shard.get("path"), str) and isinstance(shard.get("start"), int) and isinstance(shard.get("end"), int):
                files[shard["path"]] = files.get(shard["path"], 0) + shard["end"] - shard["start"]
    return files


def pick(files: list[str], count: int) -> list[str]:
    """``count`` of the sorted files, evenly spread (the first, then every len/count-th)."""
    ordered = sorted(files)
    if count >= len(ordered):
        return ordered
    return [ordered[(i * len(ordered)) // count] for i in range(count)]


def sample_config(config: PipelineConfig, chosen: list[str], storage: str) -> PipelineConfig:
    """The pipeline reading only ``chosen`` raw files, into ``storage``, with no export."""
    stages = []
    for stage in config.stages:
        fields = type(stage).model_fields
        if not registry.of(stage).reads_documents and "inputs" in fields:
            update: dict[str, Any] = {"inputs": list(chosen)}
            if "listing" in fields:
                update["listing"] = None
            stage = stage.model_copy(update=update)
        stages.append(stage)
    return config.model_copy(update={"stages": stages, "storage": storage, "export": None})


def run_in_process(config: PipelineConfig) -> list[tuple[str, StepPlan, list[dict]]]:
    """Run every step of the pipeline here, shard by shard, committing each step's manifest; each
    stage planned once its inputs are committed. Returns (stage, plan, shard results) in order."""
    planned: dict[str, list[StepPlan]] = {}
    done = []
    nodes = build_dag(config.stages)
    kinds = {node.name: node.kind for node in nodes}
    for node in nodes:
        planned[node.name] = node.kind.plan(node.config, config.storage, node.name, stage_inputs(node, planned, kinds))
        for plan in planned[node.name]:
            _warm(plan)
            results = [run_shard(plan.function, shard, plan.params, plan.location) for shard in plan.shards]
            write_manifest(plan.location, plan.fingerprint.components, results, plan.name)
            done.append((node.name, plan, results))
    return done


def _warm(plan: StepPlan) -> None:
    """Load what the step declared its shards need (``StepPlan.warm``) before they run, as a
    LocalCluster does once before its workers fork: a one-off cost, not one that scales with the
    input, so it stays out of the figures. A call that fails is left to the shard, as there."""
    for function, argument in plan.warm:
        try:
            resolve_function(function)(argument)
        except Exception:  # noqa: BLE001, S110 (the shard loads it itself, and reports what fails)
            pass


def measured_figures(run: list[tuple[str, StepPlan, list[dict]]]) -> dict[tuple[str, str], StepFigures]:
    found = {}
    for name, plan, results in run:
        step_figures = figures(name, plan.step, [result.get("stats", {}) for result in results])
        if step_figures is not None:
            found[(name, plan.step)] = step_figures
    return found


def _estimate(
    full: list[tuple[str, StepPlan]], found: dict[tuple[str, str], StepFigures], input_bytes: int, measured_bytes: int,
    workers: int, basis: str,
) -> Estimate:
    if measured_bytes <= 0:
        raise ValueError(f"{basis}: its source steps read no raw input bytes: nothing to scale by")
    scale = input_bytes / measured_bytes
    steps, missing = [], []
    for name, plan in full:
        measured = found.get((name, plan.step))
        if measured is None:
            missing.append(f"{name}/{plan.step}")
            continue
        # one task over the whole input: its memory is scaled linearly, an upper bound (say so)
        said = basis + ("; memory: linear upper bound" if len(plan.shards) == 1 and scale > 1 else "")
        steps.append(extrapolate(measured, scale, len(plan.shards) or None, workers, said))
    return Estimate(steps, missing, input_bytes, measured_bytes, workers, basis)


def from_sample(config: PipelineConfig, files: int, workers: int, scratch: str | None = None) -> Estimate:
    """Run the pipeline on ``files`` of its raw input files (here, into ``scratch``, a temporary
    folder by default) and scale what its steps cost to the whole input."""
    if files < 1:
        raise ValueError(f"--sample-files must be at least 1, not {files}")
    full = [(node.name, plan) for node, plans in plan_pipeline(config) for plan in plans]
    everything = raw_files([plan for _, plan in full])
    if not everything:
        raise ValueError("no source step reads byte ranges of raw input files (WARC files): nothing to sample")
    chosen = pick(list(everything), files)
    with tempfile.TemporaryDirectory(prefix="fineflow-sample-") as folder:
        run = run_in_process(sample_config(config, chosen, storage.normalize(scratch or folder)))
    measured_bytes = sum(raw_files([plan for _, plan, _ in run]).values())
    basis = f"sample run ({len(chosen)} of {len(everything)} files)"
    return _estimate(full, measured_figures(run), sum(everything.values()), measured_bytes, workers, basis)


def from_last_run(config: PipelineConfig, workers: int) -> Estimate:
    """Scale what each step's last committed run in this storage recorded to the whole input."""
    full = [(node.name, plan) for node, plans in plan_pipeline(config) for plan in plans]
    input_bytes = sum(raw_files([plan for _, plan in full]).values())
    found = {(name, plan.step): f for name, plan in full if (f := last_run_figures(plan)) is not None}
    measured_bytes = sum(f.bytes_read for f in found.values())
    return _estimate(full, found, input_bytes, measured_bytes, workers, "last run")
