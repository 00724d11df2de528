"""crawl stage flow: plan shards from the inputs, run the extract step, report."""

from fineflow.flows.stage import stage_flow

crawl_flow = stage_flow("crawl")
