"""The quality stage kind: LLM annotation, classifier training, scoring, calibration, decisions."""

from fineflow.registry import StageKind
from fineflow.tasks.quality.config import QualityStage

KIND = StageKind(
    kind="quality",
    config=QualityStage,
    planner="fineflow.tasks.quality.plan:plan_quality",
    document_step="decide",
    description="Score documents with quality classifiers (annotated, trained and calibrated in the run), then keep or drop.",
    preflight="fineflow.tasks.quality.plan:preflight",
    text_columns=("quality_*",),  # scores, buckets and levels: stale once a later stage rewrites the text
    summary="fineflow.tasks.quality.report:summary_fields",
    tables="fineflow.tasks.quality.report:quality_tables",
    figures="fineflow.tasks.quality.report:figures",
    cautions="fineflow.tasks.quality.report:cautions",
)
