"""The Nemotron-CC preset end to end through Prefect + Dask with llama.cpp's server on SmolLM2 as
the rephrasing model: jusText, fuzzy + substring dedup, the quality ensemble, heuristics and
perplexity on low levels only, rephrasing by level, native and synthetic documents mixed by
level x kind, token files per level and kind, a release folder by kind. One run is shared by the
tests below; SmolLM2's rewrites are poor, so they assert the plumbing, not quality."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
import yaml
from test_quality_llm import server  # noqa: F401 (a module fixture: llama.cpp's server on SmolLM2)

from conftest import REPO

NATIVE_TASKS = ("wiki", "diverse_qa", "distill", "extract_knowledge", "knowledge_list")


def requests_in(log: Path) -> int:
    return log.read_text(errors="replace").count('"POST /v1/chat/completions')


@pytest.fixture(scope="module")
def nemotron(server, dask_address, prefect_api, tmp_path_factory):  # noqa: F811
    from test_pipeline_integration import run_pipeline

    tmp = tmp_path_factory.mktemp("nemotron")
    config = yaml.safe_load((REPO / "examples" / "nemotron-cc.yaml").read_text())
    for stage in config["stages"]:
        if stage["stage"] == "crawl":
            stage["inputs"] = [str(REPO / "examples" / "data" / "*.warc.gz")]
        if stage["stage"] == "rephrase":
            stage["server"]["base_url"] = server.base_url
        for rule in stage.get("filters", []):
            if rule["name"] == "perplexity":
                rule["model_files"] = {"en": str(REPO / "examples" / "models" / "en-handbook-unigram.arpa")}
    pipeline = tmp / "nemotron-cc.yaml"
    pipeline.write_text(yaml.safe_dump(config))
    root = str(tmp / "store")
    summary = run_pipeline(pipeline, root, dask_address, tmp)
    asked = requests_in(server.log)
    again = run_pipeline(pipeline, root, dask_address, tmp)
    return {"summary": summary, "again": again, "asked": asked, "asked_again": requests_in(server.log) - asked,
            "root": root, "stages": {stage["name"]: stage for stage in summary["stages"]}}


def output(stage: dict) -> pl.DataFrame:
    from test_pipeline_integration import read_output

    return read_output(stage["output"])


def test_native_and_synthetic_documents_of_every_task(nemotron):
    stages = nemotron["stages"]
    rephrase = stages["rephrase"]
    assert set(rephrase["tasks"]) == set(NATIVE_TASKS)
    out = output(rephrase)
    native, synthetic = out.filter(pl.col("kind") == "actual"), out.filter(pl.col("kind") == "synthetic")
    assert native.height == stages["heuristics"]["docs_out"]  # every input document passes through
    for task, figures in rephrase["tasks"].items():
        assert figures["chosen"] == 2 and figures["rewritten"] + figures["rejected"] == 2
        made = synthetic.filter(pl.col("synthetic_task") == task)
        assert made.height == figures["rewritten"]
        for row in made.iter_rows(named=True):
            source = native.filter(pl.col("id") == row["source_id"]).row(0, named=True)
            assert row["id"] == f"{row['source_id']}#{task}" and row["generator_model"] == "smollm2"
            assert row["quality_level"] == source["quality_level"] and row["language"] == "en"
            assert (row["quality_level"] <= 1) == (task == "wiki")  # low levels: wiki; high: the other four
            assert row["text"].strip() and row["text"] != source["text"]
    assert synthetic.height >= 1 and rephrase["synthetic"] == synthetic.height
    assert rephrase["llm_requests"] == nemotron["asked"] > 0
    # every chosen document is either written or rejected with a rephrase reason
    assert sum(rephrase["drop_reasons"].values()) == sum(t["rejected"] for t in rephrase["tasks"].values())
    assert all(reason.startswith("rephrase:") for reason in rephrase["drop_reasons"])


def test_heuristics_and_perplexity_judge_low_levels_only(nemotron):
    stages = nemotron["stages"]
    quality, heuristics = output(stages["nemotron"]), output(stages["heuristics"])
    high = quality.filter(pl.col("quality_level") >= 2)
    assert high.height and set(high["id"]) <= set(heuristics["id"])  # high levels keep everything
    assert stages["heuristics"]["docs_out"] < stages["heuristics"]["docs_in"]


def test_token_files_per_level_and_kind_and_a_release_by_kind(nemotron):
    from datasets import load_dataset

    files = nemotron["stages"]["tokens"]["token_files"]
    cells = files["tokens_by_cell"]
    assert files["files"] == len(cells)  # a .bin/.idx set per level x kind
    assert {c.split(".kind=")[1] for c in cells} == {"actual", "synthetic"}
    assert all(c.startswith("quality_level=") for c in cells)
    written = {Path(f.name).stem for f in Path(files["folder"]).rglob("*.bin")}
    assert all(any(cell in name for name in written) for cell in cells)
    release = Path(nemotron["root"]) / "release-nemotron-cc"
    configs = sorted(p.name for p in (release / "data").iterdir())
    assert {c.split(".kind-")[1] for c in configs} == {"actual", "synthetic"} and all(c.startswith("quality_level-") for c in configs)
    exported = {c: load_dataset(str(release), c, split="train") for c in configs}
    ids = {i for c, rows in exported.items() if c.endswith("kind-synthetic") for i in rows["id"]}
    made = output(nemotron["stages"]["rephrase"]).filter(pl.col("kind") == "synthetic")
    assert ids == set(made["id"])
    for config, rows in exported.items():  # each config holds its level's documents only
        level = int(config.split(".")[0].removeprefix("quality_level-"))
        assert set(made.filter(pl.col("id").is_in(rows["id"]))["quality_level"]) <= {level}


def test_a_second_run_is_cached_and_asks_the_llm_nothing(nemotron):
    again = nemotron["again"]
    assert all(step["cached_shards"] == step["shards"] for stage in again["stages"] for step in stage["steps"])
    assert nemotron["asked_again"] == 0
