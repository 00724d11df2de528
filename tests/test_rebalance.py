"""The rebalance stage: rehydration weights, targets and the budget solver by hand, and its
steps run in-process on generated documents the way a Dask worker runs them (the presets run
through Prefect + Dask in test_rebalance_presets.py)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from stage_runner import run_plans

from fineflow import registry
from fineflow.manifest import shard_name
from fineflow.planning import plan_stage
from fineflow.steps import Source, StageInputs
from fineflow.tasks.rebalance import rehydration, solver
from fineflow.tasks.rebalance.config import RebalanceStage
from fineflow.tasks.rebalance.targets import MISSING, resolve

# -- rehydration weights by hand ----------------------------------------------------------------

SETTINGS = {"max_weight": 10, "window": 5, "min_docs": 10, "min_language_docs": 100}


def test_weights_are_interpolated_smoothed_rounded_and_compressed_by_hand():
    # Six sizes of 100 documents; removal rates .6 .3 .2 .4 .5 .7, so the global rate is 270/600 = .45
    # and the lowest .2 (size 3). Interpolated: size 2 -> 1 + 9 * (.3 - .45) / (.2 - .45) = 6.4,
    # size 3 -> 10, size 4 -> 1 + 9 * .05 / .25 = 2.8; sizes at or above .45 -> 1.
    # Smoothed over 5 (the two ends each side raw): sizes 3 and 4 -> (1 + 6.4 + 10 + 2.8 + 1) / 5 = 4.24.
    # Rounded: 1 6 4 4 1 1 -> {1: 1, 2: 6, 3: 4, 5: 1}.
    sizes = np.arange(1, 7)
    docs = np.full(6, 100)
    removed = np.array([60, 30, 20, 40, 50, 70])
    curve = rehydration.data_curve(sizes, docs, removed, SETTINGS, rehydration.from_table(rehydration.README_TABLE, "readme"))
    assert curve.source == "data" and curve.reason is None
    assert curve.global_removal_rate == pytest.approx(0.45)
    assert curve.table == {1: 1, 2: 6, 3: 4, 5: 1}
    assert [b["weight"] for b in curve.bins] == [1, 6, 4, 4, 1, 1]
    assert curve.lookup(np.array([1, 2, 3, 4, 5, 6, 500])).tolist() == [1, 6, 4, 4, 1, 1, 1]


def test_small_cluster_sizes_merge_into_their_neighbour_or_the_tail_by_hand():
    # min_docs 10: sizes 1, 2 and 5 are populated. Size 3 (4 documents) is nearer 2 than 5: bin [2, 3].
    # Sizes 8, 20 and 30 lie past the last populated size; together 12 documents: a tail bin from 8.
    # Rates: [1] 100/200 = .5; [2, 3] 24/104; [5] 10/50 = .2; tail 12/12 = 1. Global 146/366.
    # [2, 3]: 1 + 9 * (24/104 - 146/366) / (.2 - 146/366) = 8.608 -> 9; [5]: 10; the rest 1.
    # Four bins, fewer than the window: no smoothing.
    sizes = np.array([1, 2, 3, 5, 8, 20, 30])
    docs = np.array([200, 100, 4, 50, 5, 4, 3])
    removed = np.array([100, 20, 4, 10, 5, 4, 3])
    curve = rehydration.data_curve(sizes, docs, removed, SETTINGS, rehydration.from_table(rehydration.README_TABLE, "readme"))
    assert [(b["start"], b["documents"], b["removed"]) for b in curve.bins] == [(1, 200, 100), (2, 104, 24), (5, 50, 10), (8, 12, 12)]
    assert curve.table == {1: 1, 2: 9, 5: 10, 8: 1}
    assert curve.lookup(np.array([1, 2, 3, 4, 5, 7, 8, 1000])).tolist() == [1, 9, 9, 9, 10, 10, 1, 1]
    # The same tail with 8 documents is too small to stand alone: part of size 5's bin.
    docs[4:] = [3, 3, 2]
    removed[4:] = [3, 3, 2]
    bins = rehydration.merge_sizes(sizes, docs, removed, 10)
    assert [(b["start"], b["documents"]) for b in bins] == [(1, 200), (2, 104), (5, 58)]


def test_languages_without_enough_data_fall_back_and_say_why(tmp_path):
    readme = rehydration.from_table(rehydration.README_TABLE, "readme")
    singletons = rehydration.data_curve(np.array([1]), np.array([500]), np.array([100]), SETTINGS, readme)
    assert singletons.source == "readme" and "under two cluster sizes" in singletons.reason
    few = rehydration.data_curve(np.array([1, 2]), np.array([40, 40]), np.array([10, 5]), SETTINGS, readme)
    assert few.source == "readme" and "80 documents" in few.reason
    # FineWeb2's README table: 1 -> 1, 2 -> 2, 3-4 -> 3, 5-99 -> 5, 100-999 -> 8, 1000+ -> 1.
    assert readme.lookup(np.array([1, 2, 3, 4, 5, 99, 100, 999, 1000, 10**6])).tolist() == [1, 2, 3, 3, 5, 5, 8, 8, 1, 1]
    # A weights file in FineWeb2's format, for languages it has; the README table for the others.
    weights = tmp_path / "up_to_3_reps.json"
    weights.write_text(json.dumps({"fr": {"1": 1, "4": 3, "40": 2}}))
    files = rehydration.load_weights_file(str(weights))
    french = rehydration.fallback_curve(str(weights), "fr", files, "too few")
    assert french.source == "file" and french.table == {1: 1, 4: 3, 40: 2}
    other = rehydration.fallback_curve(str(weights), "de", files, "too few")
    assert other.source == "readme" and "de is not in the weights file" in other.reason
    (tmp_path / "bad.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="expected"):
        rehydration.load_weights_file(str(tmp_path / "bad.json"))


# -- the solver by hand ---------------------------------------------------------------------------


def keys_for(n: int) -> np.ndarray:
    return np.arange(1, n + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15)


def test_whole_epochs_then_a_cut_hits_the_target_exactly():
    tokens = np.full(10, 100)
    repeats, scale = solver.solve_cell(tokens, np.ones(10), keys_for(10), 2500, 0, 4)
    assert scale == pytest.approx(2.5)
    assert set(repeats.tolist()) == {2, 3} and int((repeats * tokens).sum()) == 2500  # 2 epochs, then 5 more documents


def test_the_cap_binds_and_the_rest_is_spread_by_hand():
    # Weights 10, 1, 1 of 100 tokens each, at most 3 repeats, 500 tokens: the first document is capped
    # at 3 (300 tokens) for any scale >= .3, the others take scale * 100 each: scale 1, repeats 3, 1, 1.
    tokens = np.array([100, 100, 100])
    repeats, scale = solver.solve_cell(tokens, np.array([10.0, 1, 1]), keys_for(3), 500, 0, 3)
    assert scale == pytest.approx(1.0) and repeats.tolist() == [3, 1, 1]


def test_downsampling_favours_higher_preference_and_lands_within_one_document():
    rng = np.random.default_rng(0)
    tokens = rng.integers(50, 500, 2000)
    weights = np.where(np.arange(2000) < 1000, 3.0, 1.0)
    target = int(tokens.sum() * 0.3)
    repeats, _ = solver.solve_cell(tokens, weights, keys_for(2000), target, 0, 1)
    achieved = int((repeats * tokens).sum())
    assert abs(achieved - target) <= tokens.max()
    assert repeats[:1000].mean() > 2 * repeats[1000:].mean()  # weight 3 against 1


def test_infeasible_cells_stop_at_their_bounds():
    tokens = np.array([100, 200])
    limit = solver.bounds(tokens, np.ones(2), 1, 3)
    assert (limit.low, limit.high) == (300, 900)
    short, _ = solver.solve_cell(tokens, np.ones(2), keys_for(2), 1000, 1, 3)
    assert short.tolist() == [3, 3]
    over, _ = solver.solve_cell(tokens, np.ones(2), keys_for(2), 100, 1, 3)
    assert over.tolist() == [1, 1]
    # A weight of 0 is never selected, whatever min_epochs says (the stage refuses such a config).
    assert solver.bounds(tokens, np.array([0.0, 1.0]), 1, 3) == solver.Bounds(200, 600)


def test_natural_cells_repeat_every_document_by_its_weight():
    tokens = np.array([10, 20, 30, 40])
    weights = np.array([3.0, 1.0, 2.0, 5.0])
    natural = int((tokens * np.clip(weights, 0, 4)).sum())  # the 5 is capped at 4
    repeats, scale = solver.solve_cell(tokens, weights, keys_for(4), natural, 0, 4, natural=True)
    assert scale == 1.0 and repeats.tolist() == [3, 1, 2, 4]


def test_the_scale_solves_the_piecewise_linear_equation():
    rng = np.random.default_rng(1)
    for _ in range(50):
        n = int(rng.integers(1, 60))
        tokens = rng.integers(1, 1000, n)
        weights = rng.choice([0.0, 0.5, 1.0, 2.0, 3.0, 7.5], n)
        lo, hi = int(rng.integers(0, 2)), int(rng.integers(2, 6))
        limit = solver.bounds(tokens, weights, lo, hi)
        if limit.high - limit.low < 2:
            continue
        target = int(rng.integers(limit.low + 1, limit.high))
        scale = solver.solve_lambda(tokens, weights, target, lo, hi)
        value = (tokens * np.where(weights > 0, np.clip(scale * weights, lo, hi), 0)).sum()  # weight 0: no copy
        assert value == pytest.approx(target, rel=1e-9)
        repeats, _ = solver.solve_cell(tokens, weights, keys_for(n), target, lo, hi)
        assert abs(int((repeats * tokens).sum()) - target) <= tokens.max()
        assert repeats.max() <= hi and repeats[weights > 0].min(initial=lo) >= lo and not repeats[weights == 0].any()


# -- targets ------------------------------------------------------------------------------------


def stage(**fields) -> dict:
    return {"stage": "rebalance", "tokens": "gpt2", **fields}


def test_hierarchical_targets_by_hand():
    natural = {("en", "0"): 100.0, ("en", "1"): 300.0, ("fr", "0"): 50.0, ("de", "1"): 50.0}
    config = RebalanceStage.model_validate(stage(cells=["language", "quality_level"], budget=1000, targets={
        "en": {"share": 0.6}, "*": {"share": 0.4, "split": "even"}}))
    found = {t.values: t.target for t in resolve(config, natural)}
    # en 600 split by natural size 1:3; fr and de 200 each (even), each one cell.
    assert found == {("en", "0"): 150, ("en", "1"): 450, ("fr", "0"): 200, ("de", "1"): 200}
    # Absolute tokens first, shares of the rest; a listed language without documents is its own cell.
    config = RebalanceStage.model_validate(stage(cells=["language", "quality_level"], budget=1000, targets={
        "en": {"tokens": 700, "by": {"1": {"share": 1}, "0": {"share": 3}}}, "*": {"share": 1}, "sw": {"share": 1}}))
    found = {t.values: t.target for t in resolve(config, natural)}
    assert found == {("en", "0"): 525, ("en", "1"): 175, ("fr", "0"): 75, ("de", "1"): 75, ("sw", MISSING): 150}
    with pytest.raises(ValueError, match="de, fr have no target"):
        resolve(RebalanceStage.model_validate(stage(cells=["language", "quality_level"], budget=10, targets={"en": {"share": 1}})), natural)
    with pytest.raises(ValueError, match="exceed their parent"):
        resolve(RebalanceStage.model_validate(stage(cells=["language"], budget=10, targets={"en": {"tokens": 20}, "*": {"share": 1}})),
                {("en",): 1.0, ("fr",): 1.0})
    # No budget and no targets: every cell as it is, exactly.
    plain = resolve(RebalanceStage.model_validate(stage(cells=["language", "quality_level"])), natural)
    assert all(t.natural for t in plain) and {t.values: t.target for t in plain} == {k: int(v) for k, v in natural.items()}


@pytest.mark.parametrize(("fields", "message"), [
    ({"min_epochs": 5, "max_epochs": 2}, "min_epochs is above max_epochs"),
    ({"cells": ["language"], "targets": {"en": {"by": {"3": {"share": 1}}}}}, "nest 2 levels deep"),
    ({"targets": {"en": {"share": 1, "tokens": 3}}, "cells": ["language"]}, "share or tokens, not both"),
    ({"rehydration": {}}, "needs `kept`"),
    ({"rehydration": {"weights": "readme", "kept": "filter"}}, "only with weights: data"),
    ({"sources": {"a": "("}, "cells": ["source_name"]}, "not a regular expression"),
    ({"sources": {"a": "x"}}, "list it in cells"),
    ({"quality": {"weights": {"1": -1}}}, "greater than or equal to 0"),
    ({"tokens": "GPT-2"}, "not a tokenizer name"),
    # issue #27: numbers that used to pass and corrupt the mix or crash the solver
    ({"quality": {"weights": {"0": float("inf"), "1": 1}}}, r"quality\.weights\.0\n.*inf is not a finite number"),
    ({"quality": {"weights": {"0": 1}, "default": float("nan")}}, r"quality\.default\n.*nan is not a finite number"),
    ({"cells": ["language"], "targets": {"en": {"share": float("inf")}}}, r"targets\.en\.share\n.*inf is not a finite"),
    ({"cells": ["language"], "targets": {"en": {"share": "1e30"}}}, r"targets\.en\.share\n.*less than or equal to 1000000"),
    ({"budget": "1e30"}, r"budget\n.*1e\+30 tokens is more than int64 token counts can hold"),
    ({"cells": ["language"], "targets": {"en": {"tokens": 2.0**63}}}, r"targets\.en\.tokens\n.*more than int64 token counts"),
    ({"budget": 2.5}, r"budget\n.*2\.5 is not a whole number"),
    ({"max_epochs": 10**9}, r"max_epochs\n.*less than or equal to 1000"),
    ({"seed": 2**64}, r"seed\n.*less than or equal to"),
])
def test_config_errors_are_clear(fields, message):
    with pytest.raises(ValidationError, match=message):
        RebalanceStage.model_validate(stage(**fields))


def test_numbers_written_as_yaml_strings_are_read_as_numbers_and_negative_zero_is_zero():
    # YAML 1.1 loads `1e6` (no dot) as a string; `-0.0` is a float that prints as -0.0 in mix.json.
    config = RebalanceStage.model_validate(stage(budget="1e6", max_epochs="3", quality={"weights": {"0": -0.0, "1": "2e0"}}))
    assert config.budget == 1_000_000 and config.max_epochs == 3
    assert config.quality.weights == {"0": 0.0, "1": 2.0} and str(config.quality.weights["0"]) == "0.0"


# -- the stage's steps on generated documents ------------------------------------------------------

LANGUAGES = ["en", "en", "en", "fr", "de"]


def documents(n: int = 300, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.table({
        "id": [f"doc-{i:05d}" for i in range(n)],
        "url": [f"https://{'handbook' if i % 4 == 0 else 'blog'}.example/{i}" for i in range(n)],
        "text": ["words " * int(k) for k in rng.integers(5, 50, n)],
        "language": [LANGUAGES[int(k)] for k in rng.integers(0, len(LANGUAGES), n)],
        "n_tokens_gpt2": pa.array(rng.integers(20, 400, n), pa.int64()),
        "dup_cluster_size": pa.array(rng.choice([1, 1, 1, 2, 3, 5, 12, 150], n), pa.int32()),
        "quality_level": pa.array(rng.integers(0, 5, n), pa.int8()),
    })


def write_shards(table: pa.Table, folder: Path, shards: int, seed: int = 0) -> Source:
    """The documents in ``shards`` shards, in a shuffled order."""
    folder.mkdir(parents=True)
    order = np.random.default_rng(seed).permutation(table.num_rows)
    for n, part in enumerate(np.array_split(order, shards)):
        pq.write_table(table.take(pa.array(part, pa.int64())), folder / shard_name(n))
    return Source(folder.name, f"{folder.name:0<20}", str(folder), shards)


def run_stage(config: dict, root: Path, source: Source, references: tuple[Source, ...] = ()) -> dict:
    return run_plans(plan_stage(registry.validate_stage(config), str(root), StageInputs((source,), references), "rebalance"))


def outputs(steps: dict, folder: str = "data_folder") -> pa.Table:
    plan, _ = steps["apply"]
    return pa.concat_tables([pq.read_table(f) for f in sorted(Path(getattr(plan.location, folder)).glob("*.parquet"))])


def mix_of(steps: dict) -> dict:
    plan, _ = steps["solve"]
    return json.loads(Path(plan.location.artifact_url("mix.json")).read_text())


BUDGET = stage(cells=["language"], budget=60_000, max_epochs=3, targets={"en": {"share": 0.5}, "*": {"share": 0.5, "split": "even"}},
               quality={"weights": {"0": 1, "1": 1, "2": 2, "3": 3, "4": 3}}, rehydration={"weights": "readme"}, seed=7)


def test_every_cell_lands_within_one_document_and_the_documents_carry_their_repeats(tmp_path):
    table = documents()
    steps = run_stage(BUDGET, tmp_path / "store", write_shards(table, tmp_path / "docs", 3))
    mix = mix_of(steps)
    kept, rejects = outputs(steps), outputs(steps, "rejects_folder")
    assert kept.num_rows + rejects.num_rows == table.num_rows
    assert set(rejects["drop_reason"].to_pylist()) <= {"rebalance:downsampled"}
    assert min(kept["repeats"].to_pylist()) >= 1 and max(kept["repeats"].to_pylist()) <= 3
    by_cell = {cell["cell"]: cell for cell in mix["mix"]}
    assert set(by_cell) == {"language=de", "language=en", "language=fr"}
    assert by_cell["language=en"]["target"] == 30_000 and by_cell["language=fr"]["target"] == 15_000
    for cell in mix["mix"]:
        language = cell["values"]["language"]
        mine = kept.filter(pa.compute.equal(kept["language"], language))
        written = int(pa.compute.sum(pa.compute.multiply(mine["repeats"], mine["n_tokens_gpt2"])).as_py())
        assert written == cell["achieved"]  # counted again from the documents, not the solver's sum
        largest = max(t for t, lang in zip(table["n_tokens_gpt2"].to_pylist(), table["language"].to_pylist()) if lang == language)
        assert cell["infeasible"] is None and abs(cell["achieved"] - cell["target"]) <= largest
        assert mine["rebalance_cell"].to_pylist() == [cell["cell"]] * mine.num_rows
    # Higher levels are repeated more often on average (weights 3 against 1).
    levels = np.array(kept["quality_level"].to_pylist())
    repeats = np.array(kept["repeats"].to_pylist())
    assert repeats[levels >= 3].mean() > repeats[levels <= 1].mean()


@settings(max_examples=8, deadline=None)
@given(data_seed=st.integers(0, 10_000), shards=st.integers(1, 9), layout=st.integers(0, 10_000),
       budget=st.integers(5_000, 120_000))
def test_the_result_does_not_depend_on_the_shard_layout(data_seed, shards, layout, budget):
    """Property: the same documents in one shard or in several shuffled ones get the same repeats."""
    table = documents(n=120, seed=data_seed)
    config = {**BUDGET, "budget": budget, "on_shortfall": "report"}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        reference = run_stage(config, folder / "one", write_shards(table, folder / "single", 1, seed=0))
        other = run_stage(config, folder / "many", write_shards(table, folder / "split", shards, seed=layout))
        first, second = outputs(reference), outputs(other)
        assert dict(zip(first["id"].to_pylist(), first["repeats"].to_pylist())) == \
            dict(zip(second["id"].to_pylist(), second["repeats"].to_pylist()))
        assert mix_of(reference)["mix"] == mix_of(other)["mix"]


def test_infeasible_cells_fail_before_writing_or_are_reported(tmp_path):
    table = documents(n=60)
    config = {**BUDGET, "budget": 500_000}
    with pytest.raises(ValueError, match=r"(?s)cannot meet their target.*language=de: target [\d,]+ tokens, at most [\d,]+ with max_epochs 3"):
        run_stage(config, tmp_path / "a", write_shards(table, tmp_path / "docs", 2))
    plan = plan_stage(registry.validate_stage(config), str(tmp_path / "a"), StageInputs((write_shards(table, tmp_path / "d2", 2),)), "rebalance")
    apply_plan = next(p for p in plan if p.step == "apply")
    assert not Path(apply_plan.location.data_folder).exists()  # nothing written
    steps = run_stage({**config, "on_shortfall": "report"}, tmp_path / "b", write_shards(table, tmp_path / "d3", 2))
    mix = mix_of(steps)
    assert mix["infeasible"] == ["language=de", "language=en", "language=fr"]
    assert all(cell["infeasible"] == "short" and cell["max_repeats"] == 3 and cell["achieved"] == cell["max_tokens"]
               for cell in mix["mix"])


def test_bad_rows_and_missing_columns(tmp_path):
    table = documents(n=40)
    counts = table["n_tokens_gpt2"].to_pylist()
    counts[0] = None
    table = table.set_column(table.schema.get_field_index("n_tokens_gpt2"), "n_tokens_gpt2", pa.array(counts, pa.int64()))
    steps = run_stage(stage(cells=["language"]), tmp_path / "s", write_shards(table, tmp_path / "docs", 2))
    rejects = outputs(steps, "rejects_folder")
    assert rejects["drop_reason"].to_pylist() == ["rebalance:no_token_count"] and rejects["id"].to_pylist() == ["doc-00000"]
    assert outputs(steps)["repeats"].to_pylist() == [1] * 39  # no weights, no budget: everything once
    with pytest.raises(ValueError, match=r"no n_tokens_o200k column \(option tokens\): put a tokenize stage"):
        run_stage(stage(tokens="o200k"), tmp_path / "t", write_shards(table, tmp_path / "d2", 1))
    with pytest.raises(ValueError, match="values 0, 1 have no weight"):
        run_stage(stage(quality={"weights": {"2": 1, "3": 1, "4": 1}}), tmp_path / "u", write_shards(table, tmp_path / "d3", 1))


def test_sources_by_url_make_cells(tmp_path):
    table = documents(n=80)
    config = stage(cells=["source_name"], sources={"handbook": r"//handbook\.example/"}, budget=8_000,
                   targets={"handbook": {"share": 1}, "other": {"share": 3}})
    steps = run_stage(config, tmp_path / "s", write_shards(table, tmp_path / "docs", 2))
    kept = outputs(steps)
    assert set(kept["source_name"].to_pylist()) == {"handbook", "other"}
    assert {c["cell"]: c["target"] for c in mix_of(steps)["mix"]} == {"source_name=handbook": 2000, "source_name=other": 6000}


def test_rehydration_weights_come_from_the_filter_stage_documents(tmp_path):
    # The hand-made distribution of the merge test, as a filter stage's documents and rejects.
    sizes, docs, removed = [1, 2, 3, 5, 8, 20, 30], [200, 100, 4, 50, 5, 4, 3], [100, 20, 4, 10, 5, 4, 3]
    kept_rows, removed_rows = [], []
    for size, n, r in zip(sizes, docs, removed):
        kept_rows += [size] * (n - r)
        removed_rows += [size] * r

    def folder(name: str, cluster_sizes: list[int], rejects: bool) -> Source:
        table = pa.table({"id": [f"{name}-{i}" for i in range(len(cluster_sizes))], "language": ["en"] * len(cluster_sizes),
                          "dup_cluster_size": pa.array(cluster_sizes, pa.int32())})
        source = write_shards(table, tmp_path / name, 2)
        return Source("filter", source.fingerprint, source.folder, 2, rejects=rejects, reference=True)

    references = (folder("kept", kept_rows, False), folder("removed", removed_rows, True))
    table = documents(n=50)
    config = stage(cells=["language"], max_epochs=10,
                   rehydration={"kept": "filter", "min_docs": 10, "min_language_docs": 100, "max_weight": 10})
    steps = run_stage(config, tmp_path / "s", write_shards(table, tmp_path / "docs", 2), references)
    mix = mix_of(steps)
    assert mix["rehydration"]["en"]["weights"] == {"1": 1, "2": 9, "5": 10, "8": 1}
    assert mix["rehydration"]["en"]["source"] == "data"
    assert mix["rehydration"]["fr"]["source"] == "readme" and "no document of fr reached filter" in mix["rehydration"]["fr"]["reason"]
    kept = outputs(steps)
    english = [(size, r) for size, r, lang in zip(kept["dup_cluster_size"].to_pylist(), kept["repeats"].to_pylist(),
                                                  kept["language"].to_pylist()) if lang == "en"]
    expected = {1: 1, 2: 9, 3: 9, 5: 10, 12: 1, 150: 1}
    assert english and all(r == expected[size] for size, r in english)


def test_a_changed_target_recomputes_only_the_solver_and_after(tmp_path):
    source = write_shards(documents(n=30), tmp_path / "docs", 2)

    def fingerprints(config: dict) -> dict[str, str]:
        plans = plan_stage(registry.validate_stage(config), str(tmp_path), StageInputs((source,)), "rebalance")
        return {plan.step: plan.fingerprint.value for plan in plans}

    before = fingerprints(BUDGET)
    after = fingerprints({**BUDGET, "budget": 70_000})
    assert before["measure"] == after["measure"]
    assert before["solve"] != after["solve"] and before["apply"] != after["apply"]
    assert fingerprints({**BUDGET, "name": "other"}) == before


def test_repeated_ids_are_refused(tmp_path):
    table = documents(n=20)
    doubled = pa.concat_tables([table, table.slice(0, 2)])
    with pytest.raises(ValueError, match="document ids must be unique for rebalance; repeated: doc-00000, doc-00001"):
        run_stage(stage(cells=["language"]), tmp_path / "s", write_shards(doubled, tmp_path / "docs", 2))


def test_a_fan_in_whose_inputs_lack_a_column_reads_it_as_missing(tmp_path):
    with_levels = documents(n=30, seed=1)
    without = documents(n=20, seed=2).drop_columns(["quality_level"])
    without = without.set_column(0, "id", pa.array([f"other-{i}" for i in range(20)]))
    sources = (write_shards(with_levels, tmp_path / "a", 2), write_shards(without, tmp_path / "b", 1))
    config = registry.validate_stage(stage(cells=["language"], quality={"weights": {"3": 2, "4": 2}, "default": 1}))
    steps = run_plans(plan_stage(config, str(tmp_path / "s"), StageInputs(sources), "rebalance"))
    kept = outputs(steps)
    assert kept.num_rows == 50 and kept.filter(pa.compute.starts_with(kept["id"], "other-"))["quality_level"].null_count == 20
    assert mix_of(steps)["quality"]["unlisted"] == ["0", "1", "2", "none"]


# -- issue #27: hostile input ---------------------------------------------------------------------


def test_required_columns_name_the_option_that_reads_each():
    from fineflow.tasks.rebalance.plan import required_columns

    config = RebalanceStage.model_validate(stage(
        cells=["language", "source_name", "source_domain"], sources={"a": "x"}, quality={"weights": {"1": 1}, "column": "level"},
        rehydration={"weights": "readme", "column": "cluster"}))
    assert required_columns(config) == [("n_tokens_gpt2", "tokens"), ("language", "cells"), ("source_domain", "cells"),
                                        ("url", "sources"), ("cluster", "rehydration.column"), ("level", "quality.column")]
    assert required_columns(RebalanceStage.model_validate(stage())) == [("n_tokens_gpt2", "tokens")]


def test_a_missing_column_names_its_option_and_the_columns_the_input_has(tmp_path):
    table = documents(n=10).drop_columns(["quality_level"])
    config = stage(cells=["language", "source_domain"], quality={"weights": {"1": 1}})
    with pytest.raises(ValueError, match=r"^the documents have no column source_domain \(option cells\); quality_level "
                                         r"\(option quality\.column\); the input has: id, url, text, language, n_tokens_gpt2, "
                                         r"dup_cluster_size$"):
        run_stage(config, tmp_path / "s", write_shards(table, tmp_path / "docs", 1))


def test_implausible_token_counts_are_rejected_and_the_sums_cannot_overflow(tmp_path):
    table = documents(n=20)
    counts = table["n_tokens_gpt2"].to_pylist()
    counts[3], counts[4] = 2**62, 2**63 - 1  # corrupt counts: 4 repeats of them overflow int64
    table = table.set_column(table.schema.get_field_index("n_tokens_gpt2"), "n_tokens_gpt2", pa.array(counts, pa.int64()))
    steps = run_stage(stage(cells=["language"], max_epochs=4, quality={"weights": {"0": 4}, "default": 4}),
                      tmp_path / "s", write_shards(table, tmp_path / "docs", 2))
    rejects = outputs(steps, "rejects_folder")
    assert sorted(rejects["id"].to_pylist()) == ["doc-00003", "doc-00004"]
    assert set(rejects["drop_reason"].to_pylist()) == {"rebalance:implausible_token_count"}
    mix = mix_of(steps)
    assert mix["achieved_tokens"] == 4 * (sum(counts) - counts[3] - counts[4])
    assert all(cell["achieved"] >= 0 and cell["documents"] >= 0 for cell in mix["mix"])


def test_token_counts_written_as_floats_count_and_nan_is_no_count(tmp_path):
    table = documents(n=6)
    counts = pa.array([10.0, float("nan"), 2.0**41, None, 7.9, float("inf")], pa.float32())
    table = table.set_column(table.schema.get_field_index("n_tokens_gpt2"), "n_tokens_gpt2", counts)
    steps = run_stage(stage(), tmp_path / "s", write_shards(table, tmp_path / "docs", 1))
    rejects = outputs(steps, "rejects_folder")
    assert dict(zip(rejects["id"].to_pylist(), rejects["drop_reason"].to_pylist())) == {
        "doc-00001": "rebalance:no_token_count", "doc-00002": "rebalance:implausible_token_count",
        "doc-00003": "rebalance:no_token_count", "doc-00005": "rebalance:no_token_count"}
    assert mix_of(steps)["achieved_tokens"] == 17  # 10 + 7 (a fraction is cut)


def test_a_mix_past_int64_fails_in_one_line_before_writing(tmp_path):
    n = 8192  # 8192 documents of 2**40 tokens at 1000 epochs: past 2**62 tokens
    table = pa.table({"id": [f"d{i}" for i in range(n)], "n_tokens_gpt2": pa.array([2**40] * n, pa.int64())})
    config = stage(max_epochs=1000, min_epochs=1000)
    with pytest.raises(ValueError, match=r"^the documents at their max_epochs would make 9\.\d+e\+18 tokens, more than int64"):
        run_stage(config, tmp_path / "s", write_shards(table, tmp_path / "docs", 1))


def test_odd_cell_values_are_cells_of_their_own(tmp_path):
    # The separator the solver once joined cell values with, inside a value.
    table = documents(n=30)
    odd = ["x\x1fy" if i % 3 == 0 else lang for i, lang in enumerate(table["language"].to_pylist())]
    table = table.set_column(table.schema.get_field_index("language"), "language", pa.array(odd))
    steps = run_stage(stage(cells=["language"]), tmp_path / "s", write_shards(table, tmp_path / "docs", 2))
    kept = outputs(steps)
    assert kept.num_rows == 30 and kept["repeats"].to_pylist() == [1] * 30
    cells = {cell["values"]["language"]: cell for cell in mix_of(steps)["mix"]}
    assert cells["x\x1fy"]["documents"] == 10 and not mix_of(steps)["infeasible"]


def test_an_empty_mix_is_a_warning_and_a_listed_cell_without_documents_is_marked(tmp_path):
    from fineflow.steps import resolve_function

    def warnings_of(steps: dict) -> list[str]:
        plan, results = steps["solve"]
        return resolve_function(plan.checks)(results[0]["stats"])

    source = write_shards(documents(n=40), tmp_path / "docs", 2)
    zero = stage(cells=["language"], targets={"sw": {"share": 1}, "*": {"share": 1}},
                 quality={"weights": {str(level): 0 for level in range(5)}})
    steps = run_stage(zero, tmp_path / "a", source)
    mix = mix_of(steps)
    assert mix["achieved_tokens"] == 0 and outputs(steps).num_rows == 0
    assert {cell["cell"]: cell["infeasible"] for cell in mix["mix"]}["language=sw"] == "empty"
    assert mix["infeasible"] == ["language=sw"]
    assert warnings_of(steps) == ["the mix is empty: none of the 40 documents has a positive weight (quality weights all 0?); "
                                  "nothing is written"]
    smallest = min(documents(n=40)["n_tokens_gpt2"].to_pylist())
    steps = run_stage(stage(budget=1), tmp_path / "b", source)
    assert mix_of(steps)["achieved_tokens"] == 0
    assert warnings_of(steps) == [f"the mix is empty: budget 1 is smaller than the smallest document ({smallest} tokens); "
                                  "nothing is written"]
    assert warnings_of(run_stage(stage(cells=["language"]), tmp_path / "c", source)) == []


def test_counts_that_do_not_add_up_fail_the_step():
    from fineflow.tasks.rebalance.solve import _check_counts

    row = {"cell": "language=en", "target": 10, "achieved": -9223372036854661248, "documents": 0, "copies": 0,
           "selected_unique_tokens": 0, "max_repeats": 0, "max_epochs": 4}
    with pytest.raises(ValueError, match="language=en: the solver's counts are out of range"):
        _check_counts([row], 0, 0, False)
    row.update(achieved=40803)  # a cell said to hold tokens from no document
    with pytest.raises(ValueError, match="do not add up"):
        _check_counts([row], 0, 0, False)
    row.update(achieved=0)
    with pytest.raises(ValueError, match="do not add up"):  # a negative repeat in a group
        _check_counts([row], 0, 0, True)
