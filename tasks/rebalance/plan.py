"""Plan the rebalance stage: measure (map) and [rehydrate (one task)] -> solve (one task) ->
apply (map, the document step).

``measure`` chains only on the input and the columns it reads, ``rehydrate`` only on the filter
stage's output and its own settings: a changed target, quality table or seed re-runs ``solve``
and ``apply`` (and the stages after), never the counts or the weights.
"""

from __future__ import annotations

from fineflow.fingerprint import file_content_hash
from fineflow.steps import PlanContext, StepPlan
from fineflow.tasks.rebalance import apply, measure, rehydration, solve
from fineflow.tasks.rebalance.config import RebalanceStage

_NOT_SOLVED = ("name", "input", "stage")  # where the stage is, not what it computes


def _file_hashes(config: RebalanceStage, root: str) -> dict:
    spec = config.rehydration
    if spec is None:
        return {}
    return {key: file_content_hash(getattr(spec, key), root) for key in ("weights", "fallback")
            if getattr(spec, key) not in ("data", "readme")}


def _measure_params(config: RebalanceStage) -> dict:
    return {
        "count_column": config.count_column, "cells": list(config.cells), "sources": config.sources,
        "cluster_column": config.rehydration.column if config.rehydration is not None else None,
        "quality_column": config.quality.column if config.quality is not None else None,
    }


def plan_rebalance(config: RebalanceStage, ctx: PlanContext) -> list[StepPlan]:
    assert ctx.inputs is not None  # a document-reading kind: the DAG gives it inputs
    inputs = ctx.inputs.shards()
    upstream = {"upstream": ctx.inputs.fingerprint}
    plans: list[StepPlan] = []
    files = _file_hashes(config, ctx.root)
    spec = config.rehydration

    measure_params = _measure_params(config)
    measure_plan = ctx.step(measure, "measure_shard", step="measure", params=measure_params, chained=upstream, shards=inputs)
    plans.append(measure_plan)

    rehydrate_plan = None
    if spec is not None and spec.weights == "data":
        kept, removed = ctx.inputs.reference(spec.kept), ctx.inputs.reference(spec.removed_stage)
        settings = {"column": spec.column, "max_weight": spec.max_weight, "window": spec.window, "min_docs": spec.min_docs,
                    "min_language_docs": spec.min_language_docs, "fallback": spec.fallback}
        rehydrate_plan = ctx.step(
            rehydration, "rehydrate_shard", step="rehydrate",
            params={**settings, "kept": kept.shard_urls(), "removed": removed.shard_urls()},
            fingerprint_params={**settings, "fallback": files.get("fallback", spec.fallback)},
            chained={"kept": kept.key, "removed": removed.key}, shards=[{"shard": 0}],
        )
        plans.append(rehydrate_plan)

    solve_config = config.model_dump(mode="json", exclude=set(_NOT_SOLVED))
    solve_params = {
        "config": {**solve_config, "stage": "rebalance"},
        "measures": [measure_plan.location.shard_url(n) for n in range(len(inputs))],
        "rehydration_report": rehydrate_plan.location.artifact_url(rehydration.REPORT) if rehydrate_plan else None,
    }
    solve_plan = ctx.step(
        solve, "solve_shard", step="solve", params=solve_params, checks="fineflow.tasks.rebalance.solve:mix_warnings",
        # How the step holds its documents (solve.mode) never changes the repeats: not in the fingerprint.
        fingerprint_params={"config": {k: v for k, v in solve_config.items() if k != "solve"}, "files": files},
        chained={"measure": measure_plan.fingerprint.value,
                 **({"rehydrate": rehydrate_plan.fingerprint.value} if rehydrate_plan else {})},
        shards=[{"shard": 0}],
    )
    plans.append(solve_plan)

    apply_plan = ctx.step(
        apply, "apply_shard", step="apply", params={"cells": list(config.cells)},
        chained={**upstream, "solve": solve_plan.fingerprint.value},
        shards=[{**shard, "measure": measure_plan.location.shard_url(shard["shard"]),
                 "repeats": solve_plan.location.artifact_url(solve.repeats_artifact(shard["shard"]))} for shard in inputs],
    )
    return plans + [apply_plan]


def preflight(config: RebalanceStage) -> list[str]:
    """Weights files must parse before any work; say where a run is unlikely to do what was meant."""
    warnings = []
    spec = config.rehydration
    if spec is not None:
        for key in ("weights", "fallback"):
            if getattr(spec, key) not in ("data", "readme"):
                rehydration.load_weights_file(getattr(spec, key))
        if spec.max_weight > config.max_epochs and not _any_higher_cap(config, spec.max_weight):
            warnings.append(f"rehydration weights go up to {spec.max_weight} but max_epochs is {config.max_epochs}: "
                            "documents are capped there")
    return warnings


def _any_higher_cap(config: RebalanceStage, limit: int) -> bool:
    def walk(nodes) -> bool:  # noqa: ANN001
        return any((node.max_epochs or 0) >= limit or walk(node.by or {}) for node in (nodes or {}).values())
    return walk(config.targets)


def required_columns(config: RebalanceStage) -> list[tuple[str, str]]:
    """(column, the option that names it) for every input column the stage reads besides ``id``:
    checked against the input's schema before any work (the ``measure`` step says the same at run
    time, with the columns the input has)."""
    return [(column, option) for column, option in measure.column_options(_measure_params(config)) if column != "id"]
