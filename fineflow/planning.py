"""Plan stages without running them: used by the stage flows, ``--dry-run``, gc and preflight.

Each stage kind's planner (``fineflow.registry``) maps ``(config, PlanContext)`` to step plans;
the context says where it writes and what it reads (``StageInputs``), which is known before
anything runs because fingerprints chain from inputs and parameters.
"""

from __future__ import annotations

from typing import Any

from fineflow import registry
from fineflow.config import PipelineConfig
from fineflow.dag import Node, plan_dag
from fineflow.stage_config import StageConfig
from fineflow.steps import Source, StageInputs, StepPlan


def preflight_stage(stage: StageConfig) -> list[str]:
    """The kind's cheap checks before any work (raises for a run that cannot start)."""
    return registry.of(stage).call("preflight", stage) or []


def plan_stage(stage: StageConfig, root: str, inputs: StageInputs | None, name: str | None = None) -> list[StepPlan]:
    return registry.of(stage).plan(stage, root, name or stage.label, inputs)


def inputs_from_json(data: list[dict[str, Any]] | None) -> StageInputs | None:
    """``StageInputs`` from their JSON form (stage flows' parameters, run records): one list of
    sources, the referenced stages' marked ``reference``."""
    if not data:
        return None
    sources = [Source(**source) for source in data]
    return StageInputs(tuple(s for s in sources if not s.reference), tuple(s for s in sources if s.reference))


def inputs_to_json(inputs: StageInputs | None) -> list[dict[str, Any]] | None:
    return [source.__dict__ for source in (*inputs.sources, *inputs.references)] if inputs else None


def plan_pipeline(config: PipelineConfig) -> list[tuple[Node, list[StepPlan]]]:
    return plan_dag(config.stages, config.storage)


def all_steps(config: PipelineConfig) -> list[StepPlan]:
    return [plan for _, plans in plan_pipeline(config) for plan in plans]
