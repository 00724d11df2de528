"""A plug-in stage kind that declares the input column it reads and writes no rejects.

``tagword`` adds a ``tag`` column: the length of the documents' ``column`` (default ``text``),
as an integer or, with ``tag_type: string``, as text. Two of them read by one fan-in give
``tag`` two types; ``column: nope`` names a column no input has. It keeps every document, so
its document step writes no rejects/ (``NAME.rejects`` of it is refused).
"""

from __future__ import annotations

import sys
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc

from fineflow.documents import commit_shard, read_input, set_columns
from fineflow.registry import StageKind
from fineflow.stage_config import StageConfig
from fineflow.steps import PlanContext, StepPlan

STEP_VERSION = "1"
LIBRARIES = ("pyarrow",)


class TagWordStage(StageConfig):
    stage: Literal["tagword"]
    column: str = "text"
    tag_type: Literal["int", "string"] = "int"


def plan(config: TagWordStage, ctx: PlanContext) -> list[StepPlan]:
    return [
        ctx.step(
            sys.modules[__name__], "tag_shard", step="tag", params={"column": config.column, "tag_type": config.tag_type},
            chained={"upstream": ctx.inputs.fingerprint}, shards=ctx.inputs.shards(),
        )
    ]


def required_columns(config: TagWordStage) -> list[tuple[str, str]]:
    return [(config.column, "column")]


def tag_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    docs = read_input(shard)
    lengths = pc.utf8_length(docs.column(params["column"])).cast(pa.int64())
    tag = lengths if params["tag_type"] == "int" else lengths.cast(pa.string())
    return commit_shard(shard["shard"], output_url, set_columns(docs, {"tag": tag}))  # no rejects_url: no rejects/


KIND = StageKind(
    kind="tagword",
    config=TagWordStage,
    planner=f"{__name__}:plan",
    document_step="tag",
    description="Tag each document with its length (a test kind: declares its input column, writes no rejects).",
    columns=f"{__name__}:required_columns",
    writes_rejects=False,
)
