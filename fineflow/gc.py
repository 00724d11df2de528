"""Garbage collection of a storage root: step outputs no kept run uses (with the Prefect cache
records older fineflow versions kept for their shards), and the records of runs that are not kept.

What a run uses: a finished run lists its step folders in ``_runs/<id>/summary.json``; an
unfinished one (failed, cancelled or still running: no summary yet) is planned again from its
stored ``config.yaml``, which gives the same fingerprints, so a failed run that is kept can still
be retried and resume. Step folders a stage names in its config (``external_steps``, e.g. a
dedup stage's ``previous:`` index) are used too. Runs are kept by
recency (``keep_last``, by start time) and by name (``keep_runs``).

Order of removal per step folder: its manifest first (the step reads as uncommitted from then
on), then its shard receipts and cache records (a later run cannot take a shard whose data is
going as committed), then the rest. An interrupted gc therefore leaves folders that read as unfinished work, never as
valid results.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from dataclasses import dataclass, field

import yaml

from fineflow import registry, storage
from fineflow.manifest import MANIFEST_NAME, RECEIPTS_DIR, read_raw_manifest, step_folder_of

RUNS_DIR = "_runs"
_FINGERPRINT = re.compile(r"[0-9a-f]{16,64}")
StepKey = tuple[str, str, str]  # (stage, step, fingerprint): the same wherever the storage is mounted
RESULTS_DIR = "_prefect/results"  # where fineflow.flows.results keeps Prefect's records


@dataclass
class Run:
    run_id: str
    folder: str
    started: float
    finished: bool


@dataclass
class StepFolder:
    root: str
    stage: str
    step: str
    fingerprint: str

    @property
    def key(self) -> StepKey:
        return self.stage, self.step, self.fingerprint

    @property
    def url(self) -> str:
        return storage.join(self.root, self.stage, self.step, self.fingerprint)

    @property
    def records(self) -> str:
        """Its Prefect cache records, where older fineflow versions kept one per shard task."""
        return storage.join(self.root, RESULTS_DIR, self.stage, self.step, self.fingerprint)


@dataclass
class GcPlan:
    root: str
    kept_runs: list[Run]
    removed_runs: list[Run]
    removed_steps: list[StepFolder]
    kept_steps: list[StepFolder]
    removed_records: list[str] = field(default_factory=list)  # flow-level result records of removed runs' era
    bytes_by_stage: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    known_runs: set[str] = field(default_factory=set)


def list_runs(root: str) -> list[Run]:
    """Every run that wrote to ``root``, newest first."""
    runs = []
    for run_id in storage.list_names(storage.join(root, RUNS_DIR)):
        folder = storage.join(root, RUNS_DIR, run_id)
        files = storage.list_files(folder)
        if "config.yaml" not in files:
            continue
        runs.append(Run(run_id, folder, files["config.yaml"], "summary.json" in files))
    return sorted(runs, key=lambda run: run.started, reverse=True)


def list_step_folders(root: str) -> list[StepFolder]:
    """``<root>/<stage>/<step>/<fingerprint>`` folders; anything else in the root is never touched."""
    found = []
    for stage in sorted(storage.list_names(root) & set(registry.kinds())):
        for step in sorted(storage.list_names(storage.join(root, stage))):
            for fingerprint in sorted(storage.list_names(storage.join(root, stage, step))):
                if _FINGERPRINT.fullmatch(fingerprint):
                    found.append(StepFolder(root, stage, step, fingerprint))
    return found


def step_key(url: str) -> StepKey:
    """(stage, step, fingerprint) of a step folder, or of its data/ or rejects/ folder."""
    stage, step, fingerprint = step_folder_of(url).split("/")[-3:]
    return stage, step, fingerprint


def used_by(run: Run) -> set[StepKey]:
    """The step folders a run reads or writes, as (stage, step, fingerprint)."""
    from fineflow.config import validate_pipeline
    from fineflow.planning import all_steps, inputs_from_json, plan_stage

    config = yaml.safe_load(storage.read_bytes(storage.join(run.folder, "config.yaml")))
    if config.get("kind") == "stage":  # a stage deployment's run: one stage over a committed input
        stages = [registry.validate_stage(config["stage"])]
        sources = config.get("inputs") or ([{**config["upstream"], "folder": config["upstream"]["output"]}] if config.get("upstream") else [])
        used = {step_key(source["folder"]) for source in sources}
    else:
        pipeline = validate_pipeline(config)
        stages = pipeline.stages
        used = set()
    used |= {step_key(folder) for stage in stages for folder in stage.external_steps()}
    if run.finished:
        summary = json.loads(storage.read_bytes(storage.join(run.folder, "summary.json")))
        return used | {step_key(step["output"]) for stage in summary["stages"] for step in stage["steps"]}
    # unfinished (failed, cancelled, running): plan it again; same inputs and parameters, same fingerprints
    if config.get("kind") == "stage":
        plans = plan_stage(stages[0], config["storage"], inputs_from_json(config.get("inputs")))
    else:
        plans = all_steps(pipeline)
    return used | {step_key(plan.location.folder) for plan in plans}


def plan_gc(root: str, keep_last: int = 3, keep_runs: tuple[str, ...] = ()) -> GcPlan:
    root = storage.normalize(root)
    runs = list_runs(root)
    unknown = sorted(set(keep_runs) - {run.run_id for run in runs})
    if unknown:
        raise ValueError(f"no run {', '.join(unknown)} in {root}/{RUNS_DIR}")
    steps = list_step_folders(root)
    if steps and not runs:
        raise ValueError(f"{root} has step outputs but no run records ({RUNS_DIR}/): nothing tells what is in use")
    kept = [run for index, run in enumerate(runs) if index < keep_last or run.run_id in keep_runs]
    removed_runs = [run for run in runs if run not in kept]
    notes = []
    used: set[StepKey] = set()
    for run in kept:
        try:
            used |= used_by(run)
        except Exception as error:  # noqa: BLE001 (cannot tell what it uses: keep everything)
            notes.append(f"run {run.run_id}: cannot tell which outputs it uses ({error}); nothing is removed")
            used |= {step.key for step in steps}
    removed_steps = [step for step in steps if step.key not in used]
    bytes_by_stage: dict[str, int] = defaultdict(int)
    for step in removed_steps:
        bytes_by_stage[step.stage] += storage.total_bytes(step.url) + storage.total_bytes(step.records)
    # Flow-level result records (random names at the top of the results folder) serve retries
    # of runs; those older than every kept run's start are for runs that are gone.
    oldest_kept = min((run.started for run in kept), default=float("inf"))
    records_folder = storage.join(root, RESULTS_DIR)
    removed_records = [
        storage.join(records_folder, name) for name, stamp in storage.list_files(records_folder).items() if stamp < oldest_kept
    ]
    if removed_records:
        bytes_by_stage["_prefect"] += sum(storage.size(url) for url in removed_records)
    if removed_runs:
        bytes_by_stage["_runs"] += sum(storage.total_bytes(run.folder) for run in removed_runs)
    return GcPlan(
        root=root,
        kept_runs=kept,
        removed_runs=removed_runs,
        removed_steps=removed_steps,
        kept_steps=[step for step in steps if step.key in used],
        known_runs={run.run_id for run in runs},
        removed_records=removed_records,
        bytes_by_stage=dict(sorted(bytes_by_stage.items())),
        notes=notes,
    )


class RunStarted(RuntimeError):
    """A run started after the plan was made: it may use what the plan would remove."""


def execute(plan: GcPlan) -> None:
    started = {run.run_id for run in list_runs(plan.root)} - plan.known_runs
    if started:
        raise RunStarted(f"run(s) {', '.join(sorted(started))} started since gc was planned: plan again")
    for step in plan.removed_steps:
        if read_raw_manifest(step.url) is not None:
            storage.remove(storage.join(step.url, MANIFEST_NAME))
        storage.remove(storage.join(step.url, RECEIPTS_DIR), recursive=True)
        storage.remove(step.records, recursive=True)
        storage.remove(step.url, recursive=True)
    for url in plan.removed_records:
        storage.remove(url)
    for run in plan.removed_runs:
        storage.remove(run.folder, recursive=True)
