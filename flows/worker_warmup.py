"""Loads, in the process a LocalCluster's workers are forked from, what the run's steps declared
their shards need (``StepPlan.warm``: word splitters, language ID models), so every worker starts
with it instead of building its own copy (seconds of CPU per worker for some spaCy languages).

``flows/cluster.py`` names this module in the forkserver's preload list and passes the calls in
``FINEFLOW_WORKER_WARMUP`` (JSON); multiprocessing's forkserver can only import modules, so the
work happens on import. A call that fails is reported and skipped: a worker then loads that
resource itself when a shard first needs it, as it would without warming.
"""

from __future__ import annotations

import json
import os
import sys

from fineflow.steps import resolve_function

ENVIRONMENT = "FINEFLOW_WORKER_WARMUP"


def warm(calls: list[tuple[str, str]]) -> list[str]:
    """Make each ``(module:function, argument)`` call; the failures, as messages."""
    failures = []
    for function, argument in calls:
        try:
            resolve_function(function)(argument)
        except Exception as error:  # noqa: BLE001 (never fail the forkserver: the worker loads it lazily instead)
            failures.append(f"{function}({argument!r}): {type(error).__name__}: {error}")
    return failures


def _from_environment() -> None:
    try:
        calls = json.loads(os.environ.get(ENVIRONMENT) or "[]")
    except ValueError as error:  # (set by flows/cluster.py; only a hand-edited value gets here)
        print(f"fineflow: worker warm-up skipped entirely, {ENVIRONMENT} is not JSON: {error}", file=sys.stderr)
        calls = []
    for failure in warm(calls):
        print(f"fineflow: worker warm-up skipped {failure}", file=sys.stderr)


_from_environment()
