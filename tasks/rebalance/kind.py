"""The rebalance stage kind: rehydration, quality upsampling and token budgets per cell."""

from fineflow.registry import StageKind
from fineflow.tasks.rebalance.config import RebalanceStage

KIND = StageKind(
    kind="rebalance",
    config=RebalanceStage,
    planner="fineflow.tasks.rebalance.plan:plan_rebalance",
    document_step="apply",
    description="Repeat or drop documents so each cell (language x source x quality) gets its token target.",
    preflight="fineflow.tasks.rebalance.plan:preflight",
    summary="fineflow.tasks.rebalance.report:summary_fields",
    tables="fineflow.tasks.rebalance.report:mix_tables",
    figures="fineflow.tasks.rebalance.report:figures",
    columns="fineflow.tasks.rebalance.plan:required_columns",
)
