"""Adding up per-shard counters (skips by reason, documents per language, ...)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping


def merge_counts(counters: Iterable[Mapping[str, int]]) -> dict[str, int]:
    """Sum counters key by key; keys sorted so summaries and manifests are stable."""
    total: dict[str, int] = {}
    for counter in counters:
        for key, value in counter.items():
            total[key] = total.get(key, 0) + value
    return dict(sorted(total.items()))
