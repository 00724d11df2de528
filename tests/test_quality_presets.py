"""The DCLM, PreSelect and Nemotron-CC quality presets, run as shipped on the demo sample through
Prefect + Dask, one storage root (their crawl stages are the same, so computed once, and so are
DCLM's and PreSelect's dedup; Nemotron-CC's dedups on 24-character shingles).
The FineWeb-Edu preset needs an LLM server: test_quality_llm.py runs it."""

from __future__ import annotations

import shutil

import polars as pl
import pytest
from test_pipeline_integration import run_pipeline

from conftest import REPO

pytestmark = pytest.mark.integration


def test_dclm_preselect_and_nemotron_presets_run_on_the_demo_sample(dask_address, tmp_path):
    shutil.copytree(REPO / "examples", tmp_path / "examples", ignore=shutil.ignore_patterns("*.md"))
    root = str(tmp_path / "store")
    summaries = {name: run_pipeline(tmp_path / "examples" / f"quality-{name}.yaml", root, dask_address, tmp_path)
                 for name in ("dclm", "preselect", "nemotron-cc")}

    for name in ("dclm", "preselect"):
        stage = summaries[name]["stages"][-1]
        evaluation = stage["classifiers"][name]
        assert evaluation["held_out"] >= 10 and 0 <= evaluation["f1"] <= 1
        # The top 10% of the run's characters are kept (plus at most the document crossing the line).
        kept = pl.read_parquet(f"{stage['output']}/*.parquet")
        rejects = pl.read_parquet(f"{stage['rejects']}/*.parquet")
        kept_chars, rejected_chars = (frame["text"].str.len_chars().sum() for frame in (kept, rejects))
        assert 0.1 <= kept_chars / (kept_chars + rejected_chars) < 0.3
        assert set(rejects["drop_reason"]) == {f"quality:{name}"} == set(stage["drop_reasons"])
        assert kept[f"quality_{name}"].min() >= rejects[f"quality_{name}"].max()
    # Crawl and dedup ran once for DCLM and PreSelect; Nemotron-CC's crawl was cached, its dedup was not.
    assert all(s["cached_shards"] == s["shards"] for st in summaries["preselect"]["stages"][:2] for s in st["steps"])

    crawl, dedup = summaries["nemotron-cc"]["stages"][:2]
    assert all(s["cached_shards"] == s["shards"] for s in crawl["steps"])
    assert not any(s["cached_shards"] for s in dedup["steps"])  # character shingles: another fingerprint
    nemotron = {stage["name"]: stage for stage in summaries["nemotron-cc"]["stages"]}
    levels = nemotron["nemotron"]["levels"]
    assert sum(level["documents"] for level in levels.values()) == nemotron["nemotron"]["docs_out"]  # keeps every level
    assert {"low", "high"} <= set(levels)
    # quality_level is a key of the tokenize stage's aggregates and of its token files.
    counts = pl.read_parquet(nemotron["by_level"]["token_counts"])
    assert "quality_level" in counts.columns
    by_level = counts.group_by("quality_level").agg(pl.col("documents").sum()).sort("quality_level")
    assert by_level["documents"].sum() == nemotron["by_level"]["docs_out"]
    assert set(nemotron["by_level"]["token_files"]["tokens_by_cell"]) == {f"quality_level={v}" for v in by_level["quality_level"]}
