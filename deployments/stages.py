"""Deployment entrypoints for single stages (see prefect.yaml); the flows live in the package."""

from fineflow.flows.deployed import crawl_stage, dedup_stage, filter_stage

__all__ = ["crawl_stage", "dedup_stage", "filter_stage"]
