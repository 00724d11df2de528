"""Deployment entrypoint for the whole pipeline (see prefect.yaml).

Thin on purpose: the flow lives in the installed package, so Dask pickles its tasks by
reference to ``fineflow.flows`` (importable on every worker), never to this file.
"""

from fineflow.flows.deployed import pipeline

__all__ = ["pipeline"]
