"""A toy stage kind defined outside fineflow, loaded through a pipeline's ``plugins:`` list.

``wordcount`` counts each document's words (a ``words`` column), rejects documents shorter than
``min_words``, commits per-shard counts as artifacts, then totals them in a second step that
reads those artifacts by the first step's location (chained on its fingerprint).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from typing import Literal

import pyarrow as pa
import pyarrow.compute as pc
from pydantic import Field

from fineflow import storage
from fineflow.artifacts import commit_artifact
from fineflow.documents import commit_shard, read_input, set_columns
from fineflow.registry import StageKind, Table
from fineflow.stage_config import StageConfig
from fineflow.steps import PlanContext, StepPlan

STEP_VERSION = "1"
LIBRARIES = ("pyarrow",)


class WordCountStage(StageConfig):
    stage: Literal["wordcount"]
    min_words: int = Field(default=0, ge=0, description="documents with fewer words are rejected")


def counts_name(shard: int) -> str:
    return f"counts-{shard:05d}.json"


def plan(config: WordCountStage, ctx: PlanContext) -> list[StepPlan]:
    shards = ctx.inputs.shards()
    count = ctx.step(
        sys.modules[__name__], "count_shard", step="count", params={"min_words": config.min_words},
        chained={"upstream": ctx.inputs.fingerprint}, shards=shards,
    )
    total = ctx.step(
        sys.modules[__name__], "total_shard", step="total",
        params={"counts": [count.location.artifact_url(counts_name(s["shard"])) for s in shards]},
        fingerprint_params={}, chained={"count": count.fingerprint.value}, shards=[{"shard": 0}],
    )
    return [count, total]


def count_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    docs = read_input(shard)
    words = pc.list_value_length(pc.utf8_split_whitespace(docs.column("text"))).cast(pa.int64())
    docs = set_columns(docs, {"words": words})
    keep = pc.greater_equal(words, params["min_words"])
    kept, dropped = docs.filter(keep), docs.filter(pc.invert(keep))
    rejects = set_columns(dropped, {"drop_reason": pa.array(["wordcount:short"] * dropped.num_rows, pa.string())})
    by_language = Counter()
    for language, n in zip(kept.column("language").to_pylist(), kept.column("words").to_pylist()):
        by_language[language or "und"] += n
    artifact = commit_artifact(output_url, counts_name(shard["shard"]), json.dumps(dict(sorted(by_language.items()))).encode())
    return commit_shard(shard["shard"], output_url, kept, rejects_url, rejects, artifacts=[artifact], words=sum(by_language.values()))


def total_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    totals = Counter()
    for url in params["counts"]:
        totals.update(json.loads(storage.read_bytes(url)))
    table = pa.table({"language": list(totals), "words": list(totals.values())})
    artifact = commit_artifact(output_url, "totals.json", json.dumps(dict(sorted(totals.items()))).encode())
    return commit_shard(shard["shard"], output_url, table, artifacts=[artifact], docs_in=0)


def summary_fields(steps: dict) -> dict:
    return {"words": steps["count"].get("words", 0)}


def tables(summary: dict) -> list[Table]:
    return [Table("words", [{"words": summary.get("words", 0)}], f"{summary['name']}: words kept")]


def figures(summary: dict) -> list:
    import plotly.graph_objects as go

    return [("words", go.Figure(go.Bar(x=[summary["name"]], y=[summary.get("words", 0)])))]


KIND = StageKind(
    kind="wordcount",
    config=WordCountStage,
    planner=f"{__name__}:plan",
    document_step="count",
    description="Count words; reject short documents.",
    summary=f"{__name__}:summary_fields",
    tables=f"{__name__}:tables",
    figures=f"{__name__}:figures",
)
