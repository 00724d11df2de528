"""What every stage flow does: plan its steps, run them in order, publish its report."""

from __future__ import annotations

import time
from typing import Any

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
