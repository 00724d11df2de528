"""Adding up per-shard counters (skips by reason, documents per language, ...)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from fineflow import examples


def merge_counts(counters: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum counters key by key (nested counters too); keys sorted so summaries and manifests are stable.
    A list is a ranked sample (``fineflow.examples``): the merge keeps the lowest ranks of the union."""
    total: dict[str, Any] = {}
    for counter in counters:
        for key, value in counter.items():
            if isinstance(value, Mapping):
                total[key] = merge_counts([total.get(key, {}), value])
            elif isinstance(value, list):
                total[key] = examples.merge([total.get(key, []), value])
            else:
                total[key] = total.get(key, 0) + value
    return dict(sorted(total.items()))
