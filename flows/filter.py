"""filter stage flow: the signals step, then the decide step; reports drops by reason and language."""

from __future__ import annotations

from typing import Any

from prefect import flow

from fineflow.flows.stage import run_stage
from fineflow.flows.stage_report import publish_drop_table


@flow(name="filter", persist_result=True)
def filter_flow(
    stage_config: dict[str, Any],
    root: str,
    upstream: dict | None = None,
    refresh: bool = False,
    credentials_block: str | None = None,
) -> dict:
    summary = run_stage("filter", stage_config, root, upstream, refresh, credentials_block)
    publish_drop_table(summary)
    return summary
