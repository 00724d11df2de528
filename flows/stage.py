"""What every stage flow does: plan its steps, run them in order, publish its report.

``stage_flow(name, report)`` makes the Prefect flow of a stage, so every stage's flow has the
same parameters (what the pipeline flow passes) and shows in the UI under the stage's name.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from prefect import Flow, flow

from fineflow.flows.credentials import apply_credentials
from fineflow.flows.engine import run_step
from fineflow.flows.stage_report import publish_stage_table, stage_summary
from fineflow.planning import plan_stage


def run_stage(
    name: str,
    stage_config: dict[str, Any],
    root: str,
    upstream: dict | None,
    refresh: bool,
    credentials_block: str | None,
) -> dict:
    started = time.perf_counter()
    apply_credentials(credentials_block)
    steps = [
        run_step(step_plan, refresh=refresh, credentials_block=credentials_block)
        for step_plan in plan_stage(name, stage_config, root, upstream)
    ]
    summary = stage_summary(name, steps, time.perf_counter() - started)
    publish_stage_table(summary)
    return summary


def stage_flow(name: str, report: Callable[[dict], None] | None = None) -> Flow:
    def run(
        stage_config: dict[str, Any],
        root: str,
        upstream: dict | None = None,
        refresh: bool = False,
        credentials_block: str | None = None,
    ) -> dict:
        summary = run_stage(name, stage_config, root, upstream, refresh, credentials_block)
        if report is not None:
            report(summary)
        return summary

    run.__name__ = f"{name}_flow"
    return flow(name=name, persist_result=True)(run)
