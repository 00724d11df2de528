"""crawl stage flow: plan shards from the inputs, run the extract step, report."""

from __future__ import annotations

import time
from typing import Any

from prefect import flow

from fineflow.flows.credentials import apply_credentials
from fineflow.flows.engine import run_step
from fineflow.flows.stage_report import publish_stage_table, stage_summary
from fineflow.planning import plan_stage


@flow(name="crawl", persist_result=True)
def crawl_flow(
    stage_config: dict[str, Any],
    root: str,
    upstream: dict | None = None,
    refresh: bool = False,
    credentials_block: str | None = None,
) -> dict:
    started = time.perf_counter()
    apply_credentials(credentials_block)
    steps = [
        run_step(step_plan, refresh=refresh, credentials_block=credentials_block)
        for step_plan in plan_stage("crawl", stage_config, root, upstream)
    ]
    summary = stage_summary("crawl", steps, time.perf_counter() - started)
    publish_stage_table(summary)
    return summary
