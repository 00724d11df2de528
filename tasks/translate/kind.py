"""The translate stage kind: machine translation through a segment cache, with quality control."""

from fineflow.registry import StageKind
from fineflow.tasks.translate.config import TranslateStage

KIND = StageKind(
    kind="translate",
    config=TranslateStage,
    planner="fineflow.tasks.translate.plan:plan_translate",
    document_step="decide",
    description="Translate selected documents into target languages (segment cache, quality checks), one row per target.",
    preflight="fineflow.tasks.translate.plan:preflight",
    text_columns=("translate_*",),  # its quality measures of the translation: stale once a later stage rewrites the text
    summary="fineflow.tasks.translate.report:summary_fields",
    tables="fineflow.tasks.translate.report:translate_tables",
    figures="fineflow.tasks.translate.report:figures",
    estimate="fineflow.tasks.translate.estimate:estimate",
)
