"""filter stage flow: the signals step, then the decide step; reports drops by reason and language."""

from fineflow.flows.stage import stage_flow
from fineflow.flows.stage_report import publish_drop_table

filter_flow = stage_flow("filter", publish_drop_table)
