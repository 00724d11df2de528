"""The dedup stage kind: exact, URL and MinHash near-duplicate removal across all shards."""

from fineflow.registry import StageKind
from fineflow.tasks.dedup.config import DedupStage

KIND = StageKind(
    kind="dedup",
    config=DedupStage,
    planner="fineflow.tasks.dedup.plan:plan_dedup",
    document_step="remove",
    description="Deduplicate a committed document folder.",
    summary="fineflow.tasks.dedup.report:summary_fields",
    tables="fineflow.tasks.dedup.report:cluster_tables",
    figures="fineflow.tasks.dedup.report:figures",
    # substring dedup cuts spans out of the text: only then are its inputs read without text-derived columns
    rewrites_text="fineflow.tasks.dedup.plan:rewrites_text",
)
