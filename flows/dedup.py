"""dedup stage flow: signatures, candidate pairs per band, clustering, removal; reports clusters."""

from fineflow.flows.stage import stage_flow
from fineflow.flows.stage_report import publish_dedup_table

dedup_flow = stage_flow("dedup", publish_dedup_table)
