"""The decontaminate stage kind: benchmark n-grams indexed once, then each document looked up."""

from fineflow.registry import StageKind
from fineflow.tasks.decontaminate.config import DecontaminateStage

KIND = StageKind(
    kind="decontaminate",
    config=DecontaminateStage,
    planner="fineflow.tasks.decontaminate.plan:plan_decontaminate",
    document_step="scan",
    description="Find benchmark text (word n-grams) in documents: drop them, remove the paragraphs, or audit.",
    preflight="fineflow.tasks.decontaminate.plan:preflight",
    summary="fineflow.tasks.decontaminate.report:summary_fields",
    tables="fineflow.tasks.decontaminate.report:contamination_tables",
    figures="fineflow.tasks.decontaminate.report:figures",
    content_inputs="fineflow.tasks.decontaminate.plan:content_inputs",
    text_columns=("decontam_*",),  # measured on the text: stale once a later stage rewrites it
    # remove_paragraphs rewrites the text: its inputs are read without the columns derived from the old text
    rewrites_text="fineflow.tasks.decontaminate.plan:rewrites_text",
)
