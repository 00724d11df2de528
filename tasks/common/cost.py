"""What a step's work costs before it runs: the throughput it will go at, and the hours that
makes. One module for every stage's dry-run estimate (translate's source tokens, rephrase's
generated tokens); a cost planner for the other stages extends it.

A throughput is configured (the stage's ``throughput``), measured (the last committed run of the
same step in this storage: a count its shards recorded over the backend seconds they recorded)
or assumed (a rough figure per backend, stated as such): each estimate says which.
"""

from __future__ import annotations

from fineflow.manifest import StepLocation, read_latest, read_manifest
from fineflow.steps import StepPlan

CHARS_PER_TOKEN = 4.0  # tokens from characters where no tokenizer is at hand (English web text: ~4-5)


def measured(plan: StepPlan, amount: str, seconds: str, per: float = 1.0) -> float | None:
    """``sum(amount) / per / sum(seconds)`` over the shards of this step's last run in this
    storage (stats keys of its manifest), or None where it never ran or did no work."""
    latest = read_latest(plan.location, plan.name)
    if latest is None:
        return None
    manifest = read_manifest(StepLocation(plan.root, plan.stage, plan.step, latest["fingerprint"]).folder)
    if manifest is None:
        return None
    done = sum(shard["stats"].get(amount, 0) for shard in manifest["shards"])
    spent = sum(shard["stats"].get(seconds, 0.0) for shard in manifest["shards"])
    return done / per / spent if done and spent else None


def throughput(configured: float | None, found: float | None, assumed: float) -> tuple[float, str]:
    """(tokens per second, where the figure comes from)."""
    if configured is not None:
        return configured, "configured"
    if found is not None:
        return found, "measured"
    return assumed, "assumed"


def hours(tokens: float, rate: float) -> float:
    return round(tokens / rate / 3600, 4) if rate > 0 else float("inf")
