"""Plan stages without running them: used by the stage flows and by ``--dry-run``.

Each stage maps to a planner ``(stage_config, root, upstream) -> [StepPlan]``; ``upstream``
describes the previous stage's final step (fingerprint, output folder, shard count), which is
known before anything runs because fingerprints chain from inputs and parameters.
"""

from __future__ import annotations

from typing import Any

from fineflow.config import CrawlStage, PipelineConfig
from fineflow.dedup_config import DedupStage
from fineflow.filter_config import FilterStage
from fineflow.steps import StepPlan


def _plan_crawl(stage_config: dict[str, Any], root: str, upstream: dict | None) -> list[StepPlan]:
    from fineflow.tasks.crawl.plan import plan_crawl

    return plan_crawl(CrawlStage.model_validate(stage_config), root)


def _plan_filter(stage_config: dict[str, Any], root: str, upstream: dict | None) -> list[StepPlan]:
    from fineflow.tasks.filter.plan import plan_filter

    return plan_filter(FilterStage.model_validate(stage_config), root, upstream)


def _plan_dedup(stage_config: dict[str, Any], root: str, upstream: dict | None) -> list[StepPlan]:
    from fineflow.tasks.dedup.plan import plan_dedup

    return plan_dedup(DedupStage.model_validate(stage_config), root, upstream)


PLANNERS = {"crawl": _plan_crawl, "filter": _plan_filter, "dedup": _plan_dedup}


def _preflight_crawl(stage: CrawlStage) -> list[str]:
    from fineflow.tasks.crawl.plan import preflight_crawl

    return preflight_crawl(stage)


# Cheap checks a stage runs before any work (see fineflow.preflight); stages without any are absent.
PREFLIGHTS = {"crawl": _preflight_crawl}


def preflight_stage(stage: Any) -> list[str]:
    check = PREFLIGHTS.get(stage.stage)
    return check(stage) if check else []


def plan_stage(name: str, stage_config: dict[str, Any], root: str, upstream: dict | None) -> list[StepPlan]:
    return PLANNERS[name](stage_config, root, upstream)


def upstream_of(plans: list[StepPlan]) -> dict[str, Any]:
    last = plans[-1]
    return {"fingerprint": last.fingerprint.value, "output": last.location.folder, "shards": len(last.shards)}


def plan_pipeline(config: PipelineConfig) -> list[StepPlan]:
    plans: list[StepPlan] = []
    upstream = None
    for stage in config.stages:
        stage_plans = plan_stage(stage.stage, stage.model_dump(mode="json"), config.storage, upstream)
        plans.extend(stage_plans)
        upstream = upstream_of(stage_plans)
    return plans
