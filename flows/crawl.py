"""crawl stage flow: plan shards from the inputs, run the extract step, report."""

from __future__ import annotations

from typing import Any

from prefect import flow

from fineflow.flows.stage import run_stage


@flow(name="crawl", persist_result=True)
def crawl_flow(
    stage_config: dict[str, Any],
    root: str,
    upstream: dict | None = None,
    refresh: bool = False,
    credentials_block: str | None = None,
) -> dict:
    return run_stage("crawl", stage_config, root, upstream, refresh, credentials_block)
