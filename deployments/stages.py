"""Deployment entrypoints for single stages (see prefect.yaml): ``<kind>_stage`` for every stage
kind in the registry (crawl_stage, dedup_stage, filter_stage, ...); the flows live in the package."""

from fineflow.flows.deployed import stage_flows

globals().update(stage_flows())
__all__ = sorted(stage_flows())
