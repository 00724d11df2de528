"""dedup stage flow: signatures, candidate pairs per band, clustering, removal; reports clusters."""

from __future__ import annotations

from typing import Any

from prefect import flow

from fineflow.flows.stage import run_stage
from fineflow.flows.stage_report import publish_dedup_table


@flow(name="dedup", persist_result=True)
def dedup_flow(
    stage_config: dict[str, Any],
    root: str,
    upstream: dict | None = None,
    refresh: bool = False,
    credentials_block: str | None = None,
) -> dict:
    summary = run_stage("dedup", stage_config, root, upstream, refresh, credentials_block)
    publish_dedup_table(summary)
    return summary
