"""The rephrase stage kind: synthetic documents written by an LLM from chosen documents
(Nemotron-CC's rephrasing, Cosmopedia-style seeds), beside the documents they came from."""

from fineflow.registry import StageKind
from fineflow.tasks.rephrase.config import RephraseStage

KIND = StageKind(
    kind="rephrase",
    config=RephraseStage,
    planner="fineflow.tasks.rephrase.plan:plan_rephrase",
    document_step="generate",
    description="Rewrite chosen documents with an LLM (wiki-style, QA pairs, distilled, knowledge; seeded textbooks, "
                "stories, how-tos): synthetic documents beside the native ones.",
    preflight="fineflow.tasks.rephrase.plan:preflight",
    summary="fineflow.tasks.rephrase.report:summary_fields",
    tables="fineflow.tasks.rephrase.report:rephrase_tables",
    figures="fineflow.tasks.rephrase.report:figures",
    estimate="fineflow.tasks.rephrase.estimate:estimate",
    text_columns=("rephrase_*",),  # inputs, kept inputs and tokens of the generated text: stale once it is rewritten
)
