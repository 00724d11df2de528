"""Property: rebalance under hostile documents and configs (issue #27). Hypothesis makes documents
(token counts 0, huge or missing, null and odd cell values, empty shards) and configs with numbers
at their edges; the planner's measure, solve and apply step functions run directly on them. Either
the config is refused at validation naming its key, or the solve step refuses in one line without
writing a mix, or: every document is written or rejected exactly once, every count is finite and
non-negative, and mix.json agrees with the documents written."""

from __future__ import annotations

import json
import math
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from hypothesis import event, example, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fineflow import registry
from fineflow.manifest import shard_name
from fineflow.planning import plan_stage
from fineflow.steps import Source, StageInputs, resolve_function

TOKEN_COUNTS = [0, 1, 7, 300, 2**40, 2**40 + 1, 2**62, 2**63 - 1, None, -1]
LANGUAGES = [None, "en", "", "x\x1fy", "ünï", "none", "en ", "=."]
LEVELS = [None, 0, 1, 4]
NUMBERS = [0, -0.0, 5e-324, 1, 1e6, 1e7, math.inf, math.nan, "1e3"]
BUDGETS = [None, 1, 2, 1000, 2**40, 2**62, 2**62 + 1, "1e30", "1e6", 1.5]
REASONS = {"rebalance:downsampled", "rebalance:no_token_count", "rebalance:negative_token_count",
           "rebalance:implausible_token_count"}
# What solve may refuse with, in one line (the shortfall message lists its cells one a line).
REFUSALS = ("these cells cannot meet their target", "the documents at their max_epochs would make",
            "quality: quality_level values", "targets at ", "weight 0 means never selected")

document = st.tuples(st.sampled_from(TOKEN_COUNTS), st.sampled_from(LANGUAGES), st.sampled_from(LEVELS))
shards_of_documents = st.lists(st.lists(document, max_size=8), min_size=1, max_size=3)


@st.composite
def configs(draw: st.DrawFn) -> dict:
    cells = draw(st.sampled_from([[], ["language"], ["language", "quality_level"], ["quality_level"]]))
    config: dict = {"stage": "rebalance", "tokens": "gpt2", "cells": cells,
                    "max_epochs": draw(st.sampled_from([1, 4, 1000, 1001])), "min_epochs": draw(st.sampled_from([0, 1])),
                    "on_shortfall": draw(st.sampled_from(["report", "error"]))}
    budget = draw(st.sampled_from(BUDGETS))
    if budget is not None:
        config["budget"] = budget
    if draw(st.booleans()):
        config["quality"] = {"weights": {level: draw(st.sampled_from(NUMBERS)) for level in ("0", "1", "4")},
                             "default": draw(st.sampled_from([None, 0, 1, math.inf]))}
    if cells and cells[0] == "language" and draw(st.booleans()):
        config["targets"] = {"en": {"share": draw(st.sampled_from(NUMBERS))}, "sw": {"share": 1},
                             "*": {"share": draw(st.sampled_from(NUMBERS))}}
    return config


def write_input(shards: list[list[tuple]], folder: Path) -> tuple[Source, dict[str, int | None]]:
    folder.mkdir()
    tokens: dict[str, int | None] = {}
    for n, rows in enumerate(shards):
        ids = [f"d{n}-{i}" for i in range(len(rows))]
        tokens.update(zip(ids, [row[0] for row in rows]))
        pq.write_table(pa.table({"id": pa.array(ids, pa.string()), "n_tokens_gpt2": pa.array([r[0] for r in rows], pa.int64()),
                                 "language": pa.array([r[1] for r in rows], pa.string()),
                                 "quality_level": pa.array([r[2] for r in rows], pa.int8())}), folder / shard_name(n))
    return Source("input", "f" * 20, str(folder), len(shards)), tokens


def run_steps(config, root: Path, source: Source) -> dict:
    """The planner's steps, each shard through its step function directly."""
    plans = {plan.step: plan for plan in plan_stage(config, str(root), StageInputs((source,)), "rebalance")}
    for plan in plans.values():
        function = resolve_function(plan.function)
        for shard in plan.shards:
            function(shard, plan.params, plan.location.shard_url(shard["shard"]), plan.location.rejects_url(shard["shard"]))
    return plans


def read_folder(folder: str) -> pa.Table:
    return pa.concat_tables([pq.read_table(f) for f in sorted(Path(folder).glob("*.parquet"))])


def check(shards: list[list[tuple]], raw: dict) -> None:
    try:
        config = registry.validate_stage(raw)
    except ValidationError as error:
        for item in error.errors():  # refused at validation: each error names its key
            assert item["loc"] and item["msg"], error
        event("refused at validation")
        return
    with tempfile.TemporaryDirectory() as tmp:
        source, tokens = write_input(shards, Path(tmp) / "input")
        try:
            plans = run_steps(config, Path(tmp) / "store", source)
        except ValueError as error:
            assert str(error).startswith(REFUSALS), error
            plan = next(p for p in plan_stage(config, str(Path(tmp) / "store"), StageInputs((source,)), "rebalance")
                        if p.step == "solve")
            assert not Path(plan.location.artifact_url("mix.json")).exists()  # never a mix on a refusal
            event(f"solve refused: {str(error)[:30]}")
            return
        kept = read_folder(plans["apply"].location.data_folder)
        rejects = read_folder(plans["apply"].location.rejects_folder)
        mix = json.loads(Path(plans["solve"].location.artifact_url("mix.json")).read_text())

    written, dropped = kept["id"].to_pylist(), rejects["id"].to_pylist()
    event("mixed: " + ("empty" if not written else "documents written"))
    assert len(set(written)) == len(written) and not set(written) & set(dropped)
    assert sorted(written + dropped) == sorted(tokens)  # every document exactly once
    assert set(rejects["drop_reason"].to_pylist()) <= REASONS
    for doc, reason in zip(dropped, rejects["drop_reason"].to_pylist()):
        count = tokens[doc]
        bad = count is None or count < 0 or count > 2**40
        assert bad == (reason != "rebalance:downsampled"), (doc, count, reason)

    repeats = kept["repeats"].to_pylist()
    assert all(1 <= r <= 1000 for r in repeats)
    copies = {}
    for cell, count, r in zip(kept["rebalance_cell"].to_pylist(), kept["n_tokens_gpt2"].to_pylist(), repeats):
        tokens_, documents, n = copies.get(cell, (0, 0, 0))
        copies[cell] = (tokens_ + count * r, documents + 1, n + r)
    for key in ("target_tokens", "achieved_tokens", "unique_tokens"):
        assert isinstance(mix[key], int) and 0 <= mix[key] < 2**63, (key, mix[key])
    assert mix["achieved_tokens"] == sum(t for t, _, _ in copies.values())
    for row in mix["mix"]:
        for key in ("target", "achieved", "documents", "copies", "unique_tokens", "available_documents", "max_repeats"):
            assert isinstance(row[key], int) and 0 <= row[key] < 2**63, (row["cell"], key, row[key])
        assert math.isfinite(row["weight"]) and math.copysign(1, row["weight"]) == 1 and row["weight"] <= 1
        assert (row["achieved"], row["documents"], row["copies"]) == copies.pop(row["cell"], (0, 0, 0)), row
        if row["available_documents"] == 0 and not row["natural"]:
            assert row["infeasible"], row  # a cell with a target and no documents is marked
    assert not copies  # no document in a cell the mix does not list
    assert pc.sum(kept["repeats"]).as_py() in (None, sum(row["copies"] for row in mix["mix"]))


@settings(derandomize=True, deadline=None, max_examples=100)
@given(shards=shards_of_documents, config=configs())
@example(shards=[[(300, "en", 0), (2**62, "en", 1), (None, None, None)], []],  # issue #27: an .inf weight
         config={"stage": "rebalance", "tokens": "gpt2", "cells": ["language"], "max_epochs": 4, "min_epochs": 0,
                 "on_shortfall": "report", "quality": {"weights": {"0": math.inf, "1": 1, "4": 1}, "default": None}})
@example(shards=[[(300, "en", 0)]],  # a share of .inf crashed solve
         config={"stage": "rebalance", "tokens": "gpt2", "cells": ["language"], "max_epochs": 4, "min_epochs": 0,
                 "on_shortfall": "report", "targets": {"en": {"share": math.inf}, "sw": {"share": 1}, "*": {"share": 1}}})
@example(shards=[[(300, "x\x1fy", 0), (7, "en", 1)]],  # a cell value holding the solver's old separator
         config={"stage": "rebalance", "tokens": "gpt2", "cells": ["language"], "max_epochs": 4, "min_epochs": 0,
                 "on_shortfall": "error"})
@example(shards=[[(300, "en", 0), (7, "fr", 1)]],  # all-zero weights and a listed cell without documents
         config={"stage": "rebalance", "tokens": "gpt2", "cells": ["language"], "max_epochs": 4, "min_epochs": 0,
                 "on_shortfall": "error", "quality": {"weights": {"0": 0, "1": -0.0, "4": 0}, "default": None},
                 "targets": {"en": {"share": 1}, "sw": {"share": 1}, "*": {"share": 1}}})
def test_hostile_documents_and_configs(shards, config):
    check(shards, config)
