"""rebalance's solve step in bounded memory (a group of cells at a time) against the exact one
(every document at once): the same repeats and the same mix.json, byte for byte."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from test_rebalance import documents, mix_of, outputs, run_stage, stage, write_shards

from fineflow import storage
from fineflow.manifest import artifact_url_of, shard_name
from fineflow.tasks.rebalance import groups, solve, solver, stream
from fineflow.tasks.rebalance.config import RebalanceStage

LANGUAGES = ["en", "en", "en", "fr", "de", "it", "nl"]


def measured(folder: Path, n: int, shards: int, seed: int) -> list[str]:
    """measure's output for ``n`` documents in ``shards`` shuffled shards: few distinct token
    counts and weights (ties everywhere), 0-token documents, rows with a problem, odd cell values."""
    rng = np.random.default_rng(seed)
    languages = [LANGUAGES[k] for k in rng.integers(0, len(LANGUAGES), n)]
    tokens = rng.choice([0, 10, 10, 10, 40, 40, 300, 1000], n)
    problem = np.where(rng.random(n) < 0.03, "no_token_count", None)
    table = pa.table({
        "id": [f"doc-{i:06d}" for i in range(n)],
        "tokens": pa.array(np.where(problem == None, tokens, 0), pa.int64()),  # noqa: E711 (elementwise)
        "cell_0": languages,
        "cell_1": [["web", "books", "none", "a/b"][k] for k in rng.integers(0, 4, n)],
        "language": languages,
        "cluster_size": pa.array([None if k == 0 else int(k) for k in rng.choice([0, 1, 1, 2, 3, 5, 150], n)], pa.int64()),
        "level": [str(k) for k in rng.integers(0, 5, n)],
        "problem": pa.array(problem.tolist(), pa.string()),
    })
    folder.mkdir(parents=True)
    urls = []
    for number, part in enumerate(np.array_split(rng.permutation(n), shards)):
        rows = table.take(pa.array(part, pa.int64()))
        rows = pa.table({"shard": pa.array(np.full(len(part), number, np.int32)), "row": pa.array(np.arange(len(part))),
                         **{name: rows[name] for name in rows.column_names}})
        pq.write_table(rows, folder / shard_name(number))
        urls.append(str(folder / shard_name(number)))
    return urls


CONFIGS = {
    "budget": dict(budget=150_000, max_epochs=3, split="even", targets={"en": {"share": 0.5}, "*": {"share": 0.5}},
                   quality={"weights": {"0": 0, "1": 1, "2": 2, "3": 3, "4": 3}}, rehydration={"weights": "readme"}),
    "shortfall": dict(budget=4_000_000, max_epochs=2, min_epochs=1, on_shortfall="report", quality={"weights": {"0": 1},
                      "default": 2}, targets={"en": {"share": 0.5, "by": {"web": {"tokens": 1000}, "*": {"share": 1}}},
                                              "zz": {"share": 0.1}, "*": {"share": 0.4, "split": "natural"}}),
    "natural": dict(rehydration={"weights": "readme"}, max_epochs=6),
    "downsample": dict(budget=20_000, max_epochs=1, quality={"weights": {"0": 1, "1": 1, "2": 2, "3": 2, "4": 5}}),
}


def solved(urls: list[str], config: dict, out: Path, capacity: int | None) -> tuple[list[bytes], dict, dict]:
    """Every shard's repeats file and mix.json: all documents at once, or groups of ``capacity``."""
    params = {"config": {"stage": "rebalance", "tokens": "gpt2", "cells": ["language", "source"], "seed": 3, **config},
              "measures": urls, "rehydration_report": None}
    output_url = str(out / "data" / shard_name(0))
    settings = RebalanceStage.model_validate(params["config"])
    with tempfile.TemporaryDirectory() as folder:
        source = groups.Everything(urls, 2) if capacity is None else groups.Grouped(urls, 2, capacity, folder)
        result = solve._solve(source, 0, settings, params, output_url, time.perf_counter())
    files = [storage.read_bytes(artifact_url_of(output_url, solve.repeats_artifact(n))) for n in range(len(urls))]
    return files, json.loads(storage.read_bytes(artifact_url_of(output_url, solve.MIX))), {**result, "groups": source.groups}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_bounded_groups_give_the_exact_repeats_and_mix(tmp_path, name):
    urls = measured(tmp_path / "measure", 1500, 5, seed=len(name))
    files, mix, _ = solved(urls, CONFIGS[name], tmp_path / "exact", None)
    repeats = np.concatenate([pq.read_table(pa.BufferReader(f))["repeats"].to_numpy() for f in files])
    assert repeats.sum() > 0 and len(set(repeats.tolist())) > 1  # a mix with something to compare
    if name == "shortfall":
        assert {"short", "over"} <= {row["infeasible"] for row in mix["mix"]}
        assert any(row["available_documents"] == 0 for row in mix["mix"])  # zz: listed, without documents
    seen = set()
    capacities = (9, 37, 200, 401, 10**9) if name == "budget" else (25, 401)  # cells in slices, odd groups, one group
    for capacity in capacities:
        got, got_mix, result = solved(urls, CONFIGS[name], tmp_path / f"bounded-{capacity}", capacity)
        seen.add(result["groups"])
        # A cell past the bound is read in slices of its keys (all but the largest capacities have some).
        sliced = len([row for row in mix["mix"] if row["available_documents"] > capacity])
        assert result["stats"]["solve_sliced_cells"] == sliced and (sliced > 0) == (capacity < 200)
        assert got == files, capacity
        assert got_mix == mix, capacity
    assert len(seen) >= min(4, len(capacities)) and (1 in seen) == (name == "budget")  # different groupings


@pytest.mark.parametrize("seed", range(4))
def test_the_cut_in_parts_takes_the_documents_the_cut_in_memory_takes(seed):
    rng = np.random.default_rng(seed)
    for _ in range(40):
        n = int(rng.integers(0, 1500))
        tokens = rng.choice([0, 5, 5, 10, 100, 7], n).astype(np.int64)
        shares = np.where(rng.random(n) < 0.7, rng.choice([0.5, 0.25, rng.random()], n), 0.0)
        keys = np.sort(rng.integers(0, 2**63, n, dtype=np.uint64))
        sizes = [int(size) for size in rng.integers(0, 300, int(rng.integers(0, 8)))]
        block = int(2 ** rng.integers(0, 9))
        assert (stream.cut_in_parts(tokens, shares, keys, sizes, block) == solver.cut(tokens, shares, keys)).all()


def test_sums_in_parts_have_the_bits_of_numpys_sums():
    rng = np.random.default_rng(1)
    for n in (0, 1, 7, 8, 127, 128, 129, 1000, 65_536, 65_537, 300_001):
        values = rng.random(n) * rng.choice([1, 1e10, 3.3], n)
        whole, parts = stream.PairwiseSum(n), stream.ChunkedFsum()
        for start in range(0, n, 20_011):
            whole.push(values[start : start + 20_011])
            parts.push(values[start : start + 20_011] + 1)
        assert whole.result() == float(values.sum())
        assert parts.result() == solver._ideal_total(np.ones(n, np.int64), values + 1, 1.0, 0, 10**18)[0]


def test_lambda_in_parts_has_the_bits_of_lambda_in_memory(tmp_path):
    rng = np.random.default_rng(2)
    solved_here = 0
    for trial in range(120):
        n = int(rng.integers(1, 2500))
        tokens = rng.choice([0, 5, 5, 10, 100, 7, 12345], n).astype(np.int64)
        weights = rng.choice(np.array([[1.0, 2.0, 3.0], [0.3, 0.7, 1.1, 0.0], [1.0, 1.0, 1.0], [0.5, 10.0, 0.1 + 0.2]][trial % 4]), n)
        lo, hi = int(rng.integers(0, 2)), int(rng.integers(2, 6))
        counted = int(tokens[weights > 0].sum())
        if counted * hi - counted * lo < 2:
            continue
        target = int(rng.integers(counted * lo + 1, counted * hi))
        bounds = [0, *sorted({int(x) for x in rng.integers(0, n, int(rng.integers(0, 6)))}), n]
        parts = lambda: ((tokens[a:b], weights[a:b]) for a, b in zip(bounds[:-1], bounds[1:]))  # noqa: E731, B023
        folder = tmp_path / str(trial)
        folder.mkdir()
        got = stream.solve_lambda_in_parts(parts, int((weights > 0).sum()), target, lo, hi, folder)
        assert got == solver.solve_lambda(tokens, weights, target, lo, hi)
        solved_here += 1
    assert solved_here > 100


def test_groups_never_split_a_cell_and_hold_at_most_their_capacity():
    cells = {("a",): 5, ("b",): 9, ("c",): 1, ("d",): 3, ("e",): 30}
    found = groups.pack(cells, 10)
    assert found == [[("a",)], [("b",), ("c",)], [("d",)], [("e",)]]
    assert [cell for group in found for cell in group] == sorted(cells)
    assert all(sum(cells[c] for c in group) <= 10 or len(group) == 1 for group in found)
    assert groups.pack(cells, 10**6) == [sorted(cells)]
    assert groups.pack({}, 10) == []


def test_an_id_in_two_cells_is_refused_in_bounded_mode_too(tmp_path):
    urls = measured(tmp_path / "measure", 300, 3, seed=1)
    table = pq.read_table(urls[0])
    ids = table["id"].to_pylist()
    ids[1] = ids[0]  # the same document under two cells (their values differ)
    table = table.set_column(table.column_names.index("id"), "id", pa.array(ids))
    table = table.set_column(table.column_names.index("cell_0"), "cell_0", pa.array(["en", "fr"] + table["cell_0"].to_pylist()[2:]))
    pq.write_table(table, urls[0])
    for capacity in (None, 1, 50):
        with pytest.raises(ValueError, match=f"document ids must be unique for rebalance; repeated: {ids[0]}"):
            solved(urls, CONFIGS["natural"], tmp_path / f"out-{capacity}", capacity)


def test_refusals_say_the_same_in_both_modes(tmp_path):
    """Weight-0 documents under min_epochs (examples: the first ids in key order) and a shortfall."""
    urls = measured(tmp_path / "measure", 800, 3, seed=4)
    configs = [dict(min_epochs=1, quality={"weights": {"0": 0, "1": 1}, "default": 2}),
               dict(budget=10_000_000, max_epochs=2)]
    for number, config in enumerate(configs):
        said = set()
        for capacity in (None, 9, 60, 10**9):
            with pytest.raises(ValueError) as error:
                solved(urls, config, tmp_path / f"out-{number}-{capacity}", capacity)
            said.add(str(error.value))
        assert len(said) == 1, said
        assert ("document(s) of weight 0 with min_epochs 1 (e.g. doc-" if number == 0 else "short by") in said.pop()


@pytest.mark.parametrize("solve_settings, message", [
    ({"mode": "fast"}, "mode"), ({"memory_mb": 0}, "memory_mb"), ({"memory_mb": 2**21}, "memory_mb"),
    ({"memory_mb": 1.5}, "memory_mb"), ({"memory": 10}, "memory"),
])
def test_solve_settings_are_range_checked(solve_settings, message):
    with pytest.raises(ValidationError, match=message):
        RebalanceStage.model_validate(stage(cells=["language"], solve=solve_settings))


def test_the_stage_in_both_modes_writes_the_same_documents(tmp_path):
    """12,000 documents, about 7,200 of them English: 1 MB holds about 1,600, so auto goes bounded,
    English (at least) in slices of its keys."""
    config = stage(cells=["language"], budget=2_000_000, max_epochs=3, seed=5, targets={"en": {"share": 0.5}, "*": {"share": 0.5}},
                   quality={"weights": {"0": 1, "1": 0.3, "2": 2, "3": 3, "4": 3}}, rehydration={"weights": "readme"})
    source = write_shards(documents(n=12_000, seed=2), tmp_path / "docs", 4)
    exact = run_stage({**config, "solve": {"mode": "exact"}}, tmp_path / "a", source)
    bounded = run_stage({**config, "solve": {"mode": "auto", "memory_mb": 1}}, tmp_path / "b", source)
    assert exact["solve"][1][0]["stats"]["solve_groups"] == 1
    # 1 MB holds 1,638 documents (640 bytes each): every language past it is sliced by key
    assert bounded["solve"][1][0]["stats"]["solve_groups"] == 3 and bounded["solve"][1][0]["stats"]["solve_sliced_cells"] >= 1
    for folder in ("data_folder", "rejects_folder"):
        assert outputs(exact, folder).equals(outputs(bounded, folder))
    assert outputs(exact).num_rows > 0 and len(set(outputs(exact)["repeats"].to_pylist())) > 1
    assert mix_of(exact) == mix_of(bounded)
    # How the step holds its documents is not what it computes: the same fingerprints.
    assert all(exact[step][0].fingerprint.value == bounded[step][0].fingerprint.value for step in exact)
