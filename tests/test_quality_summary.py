"""quality's bounded-memory calibration: histogram quantiles against the exact weighted ones, and the stage in both modes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError

from fineflow import registry
from fineflow.tasks.quality import buckets, summary
from fineflow.tasks.quality.calibrate import calibrate_shard
from fineflow.tasks.quality.summarize import summarize_shard

QS = np.arange(buckets.GRID + 1) / buckets.GRID
UNIT_FACTORS = {"tokens": 1, "bytes": 4, "chars": 3}  # the synthetic documents' bytes and characters per token


def share_below(scores: np.ndarray, weights: np.ndarray, thresholds: np.ndarray) -> np.ndarray:
    """The share of the weight on scores strictly below each threshold (a threshold's rank)."""
    order = np.argsort(scores, kind="stable")
    cumulative = np.concatenate([[0.0], np.cumsum(weights[order])]) / weights.sum()
    return cumulative[np.searchsorted(scores[order], thresholds, side="left")]


def unit_weights(tokens: np.ndarray) -> np.ndarray:
    return np.column_stack([tokens * UNIT_FACTORS["tokens"], tokens * UNIT_FACTORS["bytes"], tokens * UNIT_FACTORS["chars"],
                            np.ones(tokens.size)]).astype(np.float64)


def _cases() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(7)
    n = 60_000
    huge = rng.integers(1, 500, n)
    huge[rng.choice(n, 5, replace=False)] = 10**9  # five documents hold most of the tokens
    return {
        "uniform": (rng.random(n), rng.integers(1, 3000, n)),
        "heavy ties": (rng.integers(0, 6, n).astype(np.float64), rng.integers(1, 3000, n)),  # an int 0-5 score
        "skewed": (rng.beta(0.4, 6, n), rng.lognormal(5, 1.5, n).astype(np.int64) + 1),  # probabilities crowding at 0
        "huge weights": (rng.normal(2.5, 1.0, n), huge),  # a raw regression score: no known range
        "outlier": (np.r_[rng.random(n - 1), 1e6], rng.integers(1, 50, n)),  # one stray score stretches the range
    }


@pytest.mark.parametrize("case", list(_cases()))
def test_merged_histograms_are_within_their_stated_rank_error(case):
    scores, tokens = _cases()[case]
    weights = unit_weights(tokens)
    bins = 1024
    parts = [summary.build(s, w, bins) for s, w in zip(np.array_split(scores, 7), np.array_split(weights, 7))]
    merged = summary.merge(parts, bins)
    assert merged.bins <= bins and merged.documents == scores.size
    assert np.allclose(merged.weights.sum(axis=0), weights.sum(axis=0))
    for column, unit in enumerate(summary.UNITS):
        exact = buckets.weighted_quantiles(scores, weights[:, column], QS)
        found = summary.quantiles(merged, unit, QS)
        bound = summary.rank_error(merged, unit)
        error = np.abs(share_below(scores, weights[:, column], found) - share_below(scores, weights[:, column], exact))
        assert error.max() <= bound + 1e-12, (unit, error.max(), bound)
        assert np.all(found <= exact)  # the lowest score of the bin holding the exact quantile
        if case == "heavy ties":  # one distinct score per bin: exact
            assert bound == 0 and np.array_equal(found, exact)
        if case == "uniform":  # smooth scores: about one bin's share
            assert bound < 4 / bins


def test_non_finite_scores_sort_as_the_exact_quantiles_sort_them():
    scores = np.array([-np.inf, 0.5, 0.25, np.inf, np.nan, 0.75, np.nan, 0.5])
    weights = unit_weights(np.array([1, 1, 1, 1, 1, 1, 1, 1]))
    merged = summary.merge([summary.build(scores[:4], weights[:4], 256), summary.build(scores[4:], weights[4:], 256)], 256)
    exact = buckets.weighted_quantiles(scores, weights[:, 0], QS)
    found = summary.quantiles(merged, "tokens", QS)
    assert np.array_equal(found, exact, equal_nan=True)  # single-valued bins: exact, infinities and NaN included
    assert np.isnan(summary.quantiles(summary.empty(), "tokens", QS[:3])).all()  # nothing scored: NaN, as exact


def _score_shards(folder: Path, shards: int = 4, n: int = 40_000) -> tuple[list[str], dict[str, np.ndarray]]:
    """Score shards as the score step writes them: skewed probabilities (a), a 0-5 regression score (b)."""
    rng = np.random.default_rng(3)
    data = {"a": rng.beta(0.4, 6, n).astype(np.float32), "b": np.clip(rng.normal(2.0, 1.2, n), -1, 6).astype(np.float32),
            "tokens": rng.lognormal(5, 1.5, n).astype(np.int64) + 1,
            "language": rng.choice(["en", "fr", "xx"], n, p=[0.7, 0.2995, 0.0005])}
    urls = []
    for shard, rows in enumerate(np.array_split(np.arange(n), shards)):
        table = pa.table({"id": [f"d{i}" for i in rows], "language": data["language"][rows],
                          **{f"w_{unit}": data["tokens"][rows] * factor for unit, factor in UNIT_FACTORS.items()},
                          "quality_a": data["a"][rows], "quality_b": data["b"][rows]})
        urls.append(str(folder / f"scores-{shard}.parquet"))
        pq.write_table(table, urls[-1])
    return urls, data


def test_calibrate_from_histograms_stays_within_max_rank_error_of_exact(tmp_path):
    urls, data = _score_shards(tmp_path)
    params = {"scores": urls, "scorers": ["a", "b"], "weight": "tokens", "per_language": True, "min_docs": 50,
              "min_distinct_scores": 20}
    summaries = []
    for shard, url in enumerate(urls):
        summaries.append(str(tmp_path / f"summary-{shard}.parquet"))
        result = summarize_shard({"shard": shard, "scores": url}, {"scorers": ["a", "b"], "per_language": True, "bins": 512,
                                                                   "min_distinct_scores": 20}, summaries[-1], None)
        assert result["stats"]["summary_bins_max"] <= 512 and result["stats"]["summaries"] == 2 * 4  # * en fr xx
    exact = calibrate_shard({"shard": 0}, params, str(tmp_path / "exact.parquet"), None)["stats"]
    target = 0.002
    histogram = params | {"summary": "histogram", "bins": 512, "max_rank_error": target, "exact_max_docs": 0, "summaries": summaries}
    found = calibrate_shard({"shard": 0}, histogram, str(tmp_path / "histogram.parquet"), None)["stats"]
    assert found["summary"] == "histogram" and found["docs_in"] == exact["docs_in"] == data["tokens"].size
    assert found["per_language"]["scorers"]["a"]["xx"]["own_thresholds"] == 0  # the floor judged as the exact path does
    assert {k: {lang: e["own_thresholds"] for lang, e in v.items()} for k, v in found["per_language"]["scorers"].items()} == {
        k: {lang: e["own_thresholds"] for lang, e in v.items()} for k, v in exact["per_language"]["scorers"].items()}
    assert found["refine_rounds"] >= 1  # the skewed scores crowd into a few bins of 512: summarized again
    assert found["mean_score"] == pytest.approx(exact["mean_score"], abs=1e-5)
    exact_rows = pq.read_table(tmp_path / "exact.parquet").to_pylist()
    found_rows = pq.read_table(tmp_path / "histogram.parquet").to_pylist()
    assert [(r["scorer"], r["language"], r["unit"]) for r in found_rows] == [(r["scorer"], r["language"], r["unit"]) for r in exact_rows]
    for want, got in zip(exact_rows, found_rows):
        rows = np.ones(data["tokens"].size, bool) if want["language"] == "*" else data["language"] == want["language"]
        scores = data[want["scorer"]][rows].astype(np.float64)
        weights = unit_weights(data["tokens"][rows])[:, summary.UNITS.index(want["unit"])]
        error = np.abs(share_below(scores, weights, np.array(got["quantiles"])) - share_below(scores, weights, np.array(want["quantiles"])))
        assert error.max() <= target, (want["scorer"], want["language"], want["unit"], error.max())
        if want["unit"] == "tokens":
            assert error.max() <= found["rank_error"][want["scorer"]][want["language"]] + 1e-12
    # auto below exact_max_docs: the exact path, grids identical to exact mode's
    auto = calibrate_shard({"shard": 0}, histogram | {"summary": "auto", "exact_max_docs": 10**6}, str(tmp_path / "auto.parquet"), None)
    assert auto["stats"]["summary"] == "exact" and pq.read_table(tmp_path / "auto.parquet").equals(pq.read_table(tmp_path / "exact.parquet"))


def test_the_summary_settings_are_range_checked():
    from test_quality import fasttext_stage

    for bad in ({"bins": 100}, {"bins": 2**21}, {"max_rank_error": 0}, {"max_rank_error": 0.9}, {"summary": "sketch"},
                {"exact_max_docs": -1}, {"bins": float("nan")}):
        with pytest.raises(ValidationError):
            registry.validate_stage(fasttext_stage(calibrate=bad))
    config = registry.validate_stage(fasttext_stage()).calibrate
    assert (config.summary, config.bins, config.exact_max_docs) == ("auto", 16_384, 2_000_000)


def _documents(folder: Path, shards: int = 2, n: int = 400) -> None:
    from fineflow.manifest import shard_name

    rng = np.random.default_rng(5)
    good = ["a lesson about topic {} with words", "the lesson explains topic {} with more words and examples"]
    bad = ["buy now cheap deal {}", "cheap deal number {} buy today"]
    texts = [(good if rng.random() < 0.4 else bad)[int(rng.integers(2))].format(i) + " extra" * int(rng.integers(0, 30))
             for i in range(n)]
    folder.mkdir(parents=True)
    for shard, rows in enumerate(np.array_split(np.arange(n), shards)):
        pq.write_table(pa.table({"id": [f"d{i}" for i in rows], "text": [texts[i] for i in rows],
                                 "language": ["en"] * len(rows)}), folder / shard_name(shard))


def test_the_stage_in_both_modes_agrees_on_levels_within_the_error_band(tmp_path):
    """Two fastText scorers, in-process: exact and histogram calibrations bucket every document alike, except a
    document whose score lies between the two modes' thresholds (within the stated rank error of one)."""
    from stage_runner import run_plans
    from test_quality import _two_class_model

    from fineflow.planning import plan_stage
    from fineflow.steps import Source, StageInputs

    model = _two_class_model(tmp_path / "model.bin")
    _documents(tmp_path / "docs")
    inputs = StageInputs((Source("docs", "d" * 20, str(tmp_path / "docs"), 2),))
    scorers = {"a": {"fasttext": model, "label": "__label__hq"}, "b": {"fasttext": model, "label": "__label__hq", "max_chars": 30}}
    runs = {}
    for mode, extra in (("exact", {}), ("histogram", {"bins": 256, "max_rank_error": 0.05})):
        stage = registry.validate_stage({"stage": "quality", "scorers": scorers, "keep": [{"min_level": 1}],
                                         "calibrate": {"summary": mode, "weight": "tokens", **extra}})
        plans = plan_stage(stage, str(tmp_path / mode), inputs, "q")
        assert ("summarize" in [p.step for p in plans]) == (mode == "histogram")
        runs[mode] = run_plans(plans)
    exact_stats = runs["exact"]["calibrate"][1][0]["stats"]
    assert "summary" not in exact_stats  # exact mode: today's step, today's stats
    found_stats = runs["histogram"]["calibrate"][1][0]["stats"]
    outputs = {}
    for mode, run in runs.items():
        plan, _ = run["decide"]
        kept = pa.concat_tables([pq.read_table(plan.location.shard_url(n)) for n in range(2)])
        rejects = pa.concat_tables([pq.read_table(plan.location.rejects_url(n)) for n in range(2)])
        table = pa.concat_tables([kept.select(["id", "quality_a", "quality_b", "quality_a_bucket", "quality_b_bucket", "quality_level"]),
                                  rejects.select(["id", "quality_a", "quality_b", "quality_a_bucket", "quality_b_bucket", "quality_level"])])
        outputs[mode] = table.sort_by("id").to_pydict()
    exact, found = outputs["exact"], outputs["histogram"]
    assert exact["id"] == found["id"] and len(exact["id"]) == 400
    thresholds = {mode: {name: np.array(list(stats["percentiles"][name].values())) for name in ("a", "b")}
                  for mode, stats in (("exact", exact_stats), ("histogram", found_stats))}
    score_plan, _ = runs["exact"]["score"]
    weights = pa.concat_tables([pq.read_table(score_plan.location.shard_url(n)) for n in range(2)]).sort_by("id")
    assert weights["id"].to_pylist() == exact["id"]
    tokens = weights["w_tokens"].to_numpy().astype(np.float64)
    moved = np.zeros(400, bool)
    for name in ("a", "b"):
        low = np.minimum(thresholds["exact"][name], thresholds["histogram"][name])
        high = np.maximum(thresholds["exact"][name], thresholds["histogram"][name])
        scores = np.array(exact[f"quality_{name}"])
        differs = np.array(exact[f"quality_{name}_bucket"]) != np.array(found[f"quality_{name}_bucket"])
        band = (scores[:, None] >= low - 1e-6) & (scores[:, None] < high + 1e-6)  # documents x thresholds
        assert not (differs & ~band.any(axis=1)).any()  # a bucket moves only between the two modes' thresholds
        bound = found_stats["rank_error"][name]["*"]
        assert bound <= 0.05
        for column in range(band.shape[1]):  # each threshold moves less than its stated share of the tokens
            strictly = (scores >= low[column] + 1e-6) & (scores < high[column] - 1e-6)
            assert tokens[strictly].sum() <= bound * tokens.sum() + 1e-9
        moved |= differs
    level_differs = np.array(exact["quality_level"]) != np.array(found["quality_level"])
    assert not (level_differs & ~moved).any()  # a level changes only with a bucket in the band


def test_empty_and_unscored_shards_calibrate_as_the_exact_path_does(tmp_path):
    """A shard of no rows and one whose texts were all undecodable (null scores): no crash, the same counts and grids."""
    schema = pa.schema([("id", pa.string()), ("language", pa.string()), *((f"w_{u}", pa.int64()) for u in UNIT_FACTORS),
                        ("quality_a", pa.float32())])
    tables = [schema.empty_table(), pa.table({"id": ["x", "y"], "language": [None, "en"], **{f"w_{u}": [3, 4] for u in UNIT_FACTORS},
                                              "quality_a": pa.array([None, None], pa.float32())}, schema=schema)]
    urls, summaries = [], []
    for shard, table in enumerate(tables):
        urls.append(str(tmp_path / f"scores-{shard}.parquet"))
        summaries.append(str(tmp_path / f"summary-{shard}.parquet"))
        pq.write_table(table, urls[-1])
        summarize_shard({"shard": shard, "scores": urls[-1]}, {"scorers": ["a"], "per_language": True, "bins": 256,
                                                               "min_distinct_scores": 20}, summaries[-1], None)
    params = {"scores": urls, "scorers": ["a"], "weight": "tokens", "per_language": True, "min_docs": 1, "min_distinct_scores": 20}
    exact = calibrate_shard({"shard": 0}, params, str(tmp_path / "exact.parquet"), None)["stats"]
    found = calibrate_shard({"shard": 0}, params | {"summary": "histogram", "bins": 256, "max_rank_error": 0.001,
                                                    "exact_max_docs": 0, "summaries": summaries},
                            str(tmp_path / "histogram.parquet"), None)["stats"]
    assert found["docs_in"] == exact["docs_in"] == 2 and found["percentiles"] == exact["percentiles"] == {}
    assert found["per_language"] == exact["per_language"] and found["mean_score"] == exact["mean_score"] == {}
    want, got = pq.read_table(tmp_path / "exact.parquet").to_pylist(), pq.read_table(tmp_path / "histogram.parquet").to_pylist()
    assert [(r["language"], r["unit"], r["documents"]) for r in got] == [(r["language"], r["unit"], r["documents"]) for r in want]
    assert all(np.isnan(r["quantiles"]).all() for r in got + want)
