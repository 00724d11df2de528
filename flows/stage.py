"""What every stage flow does: plan its steps, run them in order, publish its report.

``stage_flow(kind)`` is the Prefect flow of a stage kind (one per kind, made from the registry),
so every stage's flow has the same parameters (what the pipeline flow passes) and shows in the
UI under its kind, each run named after the pipeline's stage.
"""

from __future__ import annotations

import time
from functools import lru_cache
from typing import Any

from prefect import Flow, flow

from fineflow import registry
from fineflow.flows.cluster import Cluster, current_cluster
from fineflow.flows.credentials import apply_credentials
from fineflow.flows.engine import run_step
from fineflow.flows.stage_report import publish_stage_tables
from fineflow.planning import inputs_from_json, plan_stage
from fineflow.summary import stage_summary


def run_stage(
    name: str,
    stage_config: dict[str, Any],
    root: str,
    inputs: list[dict] | None,
    refresh: bool,
    credentials_block: str | None,
) -> dict:
    started = time.perf_counter()
    cluster: Cluster = current_cluster()
    apply_credentials(credentials_block)
    config = registry.validate_stage(stage_config)
    stage_inputs = inputs_from_json(inputs)
    steps = [
        run_step(step_plan, cluster, refresh=refresh)
        for step_plan in plan_stage(config, root, stage_inputs, name)
    ]
    summary = stage_summary(
        registry.of(config), name, steps, time.perf_counter() - started, stage_inputs.describe() if stage_inputs else None
    )
    publish_stage_tables(summary)
    return summary


@lru_cache(maxsize=None)
def stage_flow(kind: str) -> Flow:
    def run(
        name: str,
        stage_config: dict[str, Any],
        root: str,
        inputs: list[dict] | None = None,
        refresh: bool = False,
        credentials_block: str | None = None,
    ) -> dict:
        return run_stage(name, stage_config, root, inputs, refresh, credentials_block)

    run.__name__ = f"{kind}_flow"
    return flow(name=kind, flow_run_name="{name}", persist_result=True, description=registry.get(kind).description)(run)
