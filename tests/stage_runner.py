"""Running planned steps in-process, shard by shard, the way a Dask worker runs them, and
committing each step's manifest (for tests of stages without Prefect or Dask)."""

from __future__ import annotations

from fineflow.manifest import write_manifest
from fineflow.steps import StepPlan, run_shard


def run_plan(plan: StepPlan) -> list[dict]:
    results = [run_shard(plan.function, shard, plan.params, plan.location) for shard in plan.shards]
    write_manifest(plan.location, plan.fingerprint.components, results, plan.name)
    return results


def run_plans(plans: list[StepPlan]) -> dict[str, tuple[StepPlan, list[dict]]]:
    """Every step in order: {step: (plan, shard results)}."""
    return {plan.step: (plan, run_plan(plan)) for plan in plans}
