"""The tokenize stage kind: token counts, tokenizers trained in the run, token files."""

from fineflow.registry import StageKind
from fineflow.tasks.tokenize.config import TokenizeStage

KIND = StageKind(
    kind="tokenize",
    config=TokenizeStage,
    planner="fineflow.tasks.tokenize.plan:plan_tokenize",
    document_step="count",
    description="Count tokens per document, train tokenizers, write training-ready token files.",
    preflight="fineflow.tasks.tokenize.plan:preflight",
    text_columns=("n_tokens_*",),  # token counts: stale once a later stage rewrites the text
    summary="fineflow.tasks.tokenize.report:summary_fields",
    tables="fineflow.tasks.tokenize.report:token_tables",
    figures="fineflow.tasks.tokenize.report:figures",
    columns="fineflow.tasks.tokenize.plan:required_columns",
)
