"""The format stage kind: text formatters (PII, ftfy, symbol lines) that rewrite ``text``."""

from fineflow.registry import StageKind
from fineflow.tasks.format.config import FormatStage

KIND = StageKind(
    kind="format",
    config=FormatStage,
    planner="fineflow.tasks.format.plan:plan_format",
    document_step="format",
    description="Rewrite texts with formatters (PII replaced, encoding fixed, table debris removed), in order.",
    rewrites_text=True,  # its inputs are read without the columns other stages derived from the old text
    summary="fineflow.tasks.format.report:summary_fields",
    tables="fineflow.tasks.format.report:format_tables",
    figures="fineflow.tasks.format.report:figures",
)
