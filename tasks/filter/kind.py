"""The filter stage kind: heuristic rules measured once (signals), then thresholds (decide)."""

from fineflow.registry import StageKind
from fineflow.tasks.filter.config import FilterStage

KIND = StageKind(
    kind="filter",
    config=FilterStage,
    planner="fineflow.tasks.filter.plan:plan_filter",
    document_step="decide",
    description="Filter a committed document folder.",
    preflight="fineflow.tasks.filter.plan:preflight",
    summary="fineflow.tasks.filter.report:summary_fields",
    tables="fineflow.tasks.filter.report:drop_tables",
    figures="fineflow.tasks.filter.report:figures",
    columns="fineflow.tasks.filter.plan:input_columns",  # where conditions' columns
    rewrites_text="fineflow.tasks.filter.plan:rewrites_text",  # with C4's line rules
)
