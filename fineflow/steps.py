"""The stage contract: a stage is a small DAG of steps, each step a set of shard tasks.

A ``StepPlan`` is everything needed to run (or explain) one step without running it: its
fingerprint and output location, the import path of the pure shard function, its parameters
and the list of shard inputs. Orchestration (``fineflow.flows``) turns each shard into a
Prefect task on Dask whose cache key is ``<stage>/<step>/<fingerprint>/<shard>``.

Step kinds: ``map`` steps (one task per input shard, e.g. crawl's extract or filter's signals)
are what exists today; shuffles by key (one task per partition reading every upstream shard)
and reductions (one task over all shards) plan their shard lists the same way.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from fineflow import faults
from fineflow.fingerprint import Fingerprint
from fineflow.manifest import StepLocation, read_latest, read_manifest


@dataclass(frozen=True)
class StepPlan:
    stage: str
    step: str
    function: str  # "package.module:function(shard, params, output_url, rejects_url) -> dict"
    params: dict[str, Any]
    shards: list[dict[str, Any]]  # JSON-able task inputs, each with an int "shard"
    fingerprint: Fingerprint
    location: StepLocation = field(init=False)
    root: str = ""
    warnings: tuple[str, ...] = ()  # found while planning (e.g. an input glob that matches nothing)
    inputs: dict[str, Any] | None = None  # what the step reads, for the summary (e.g. files by format)
    checks: str | None = None  # "package.module:function(totals) -> [warning]", run on the step's totals

    def __post_init__(self) -> None:
        object.__setattr__(self, "location", StepLocation(self.root, self.stage, self.step, self.fingerprint.value))

    def cache_key(self, shard: int) -> str:
        return f"{self.stage}/{self.step}/{self.fingerprint.value}/{shard:05d}"

    def task_name(self, shard: int) -> str:
        return f"{self.stage}-{self.step}-{shard:05d}"


def resolve_function(spec: str) -> Callable[..., dict]:
    module_name, _, attribute = spec.partition(":")
    return getattr(importlib.import_module(module_name), attribute)


def run_shard(function: str, shard: dict, params: dict, location: StepLocation) -> dict:
    """Run a step's pure shard function; the single entry point for every shard task."""
    faults.maybe_fire(f"{location.stage}-{location.step}-{shard['shard']:05d}")
    result = resolve_function(function)(
        shard, params, location.shard_url(shard["shard"]), location.rejects_url(shard["shard"])
    )
    result["shard"] = shard["shard"]
    return result


def explain(plan: StepPlan) -> dict[str, Any]:
    """What a run would do for this step, and why (used by ``fineflow run --dry-run``)."""
    committed = plan.location.intact_shards()
    shard_ids = [s["shard"] for s in plan.shards]
    done = [s for s in shard_ids if s in committed]
    manifest = read_manifest(plan.location.folder)
    if manifest is not None and len(done) == len(shard_ids):
        reason = "cached: committed output with this fingerprint exists"
    elif manifest is not None:
        reason = f"repair: {len(shard_ids) - len(done)} committed shard(s) are missing or no longer match the manifest"
    else:
        latest = read_latest(plan.location)
        if latest is None:
            reason = "recompute: this step never ran in this storage"
        elif latest["fingerprint"] == plan.fingerprint.value:
            reason = "resume: the step started with this fingerprint but did not finish"
        else:
            changed = plan.fingerprint.changed_components(latest["components"])
            reason = "recompute: changed " + ", ".join(changed[:8]) + (" ..." if len(changed) > 8 else "")
    return {
        "stage": plan.stage,
        "step": plan.step,
        "fingerprint": plan.fingerprint.value,
        "tasks": len(shard_ids),
        "cached": len(done),
        "recompute": len(shard_ids) - len(done),
        "reason": reason,
        "output": plan.location.folder,
    }
