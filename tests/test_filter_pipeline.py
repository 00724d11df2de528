"""The demo's dedup and filter stages in the pipeline on real components (Prefect API, Dask
LocalCluster): rejects as data, reasons in the summary and the UI, cluster sizes carried along,
and tag-then-decide caching."""

from __future__ import annotations

import polars as pl
import pytest
from test_pipeline_integration import read_output, run_cli, run_pipeline, task_states
from typer.testing import CliRunner

pytestmark = pytest.mark.integration


def read_rejects(folder: str) -> pl.DataFrame:
    import io

    from fineflow import storage
    from fineflow.manifest import committed_files

    return pl.concat([pl.read_parquet(io.BytesIO(storage.read_bytes(f))) for f in committed_files(folder, rejects=True)])


def artifact_keys(run_id: str) -> set[str]:
    import uuid

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterParentFlowRunId,
    )

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[uuid.UUID(run_id)]))
        )
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[c.id for c in children])))
    return {a.key for a in artifacts if a.key}


def test_filter_rejects_reasons_and_a_threshold_change_reruns_only_decide(workdir, tmp_path, dask_address):
    root = str(tmp_path / "store")
    first = run_pipeline(workdir / "demo.yaml", root, dask_address, tmp_path)
    crawl, dedup, filtered, quality, tokenized = first["stages"]
    assert [s["name"] for s in first["stages"]] == ["crawl", "dedup", "filter", "quality", "tokenize"]

    # dedup: the sample's copies (same page under tracking parameters or another encoding, English
    # pages repeated in other language editions) are removed; every kept document has a cluster size.
    assert 0 < dedup["docs_out"] < dedup["docs_in"] == crawl["docs_out"]
    assert set(dedup["drop_reasons"]) <= {"exact_duplicate", "url_duplicate", "near_duplicate"}
    deduped = read_output(dedup["output"])
    assert deduped["dup_cluster_size"].null_count() == 0 and deduped["dup_cluster_size"].min() == 1
    dedup_rejects = read_rejects(dedup["rejects"])
    assert dedup_rejects.height == dedup["docs_in"] - dedup["docs_out"] == sum(dedup["drop_reasons"].values())
    assert set(dedup_rejects["dup_cluster_id"]) <= set(deduped["id"])
    assert dedup["clusters"] == deduped.filter(pl.col("dup_cluster_size") > 1).height
    assert "dedup-clusters" in artifact_keys(first["run_id"])

    assert filtered["docs_in"] == dedup["docs_out"]
    assert 0 < filtered["docs_out"] < filtered["docs_in"]
    assert [s["step"] for s in filtered["steps"]] == ["signals", "decide"]

    # Rejects are data: every input column, a reason for every document, the signals.
    kept = read_output(filtered["output"])
    rejects = read_rejects(filtered["rejects"])
    assert kept.height + rejects.height == filtered["docs_in"]
    assert set(deduped.columns) < set(rejects.columns)  # dup_cluster_size travels with dropped documents too
    assert "dup_cluster_size" in kept.columns
    assert rejects["drop_reason"].null_count() == 0 and rejects["drop_reason"].str.contains(":").all()
    assert "gopher_qual_stop_words_distinct" in rejects.columns
    counted = rejects.group_by("drop_reason").len()
    assert dict(zip(counted["drop_reason"], counted["len"])) == filtered["drop_reasons"]
    by_language = {lang: sum(reasons.values()) for lang, reasons in filtered["drops_by_language"].items()}
    assert by_language == dict(zip(*rejects.group_by("language").len().sort("language").to_dict().values()))
    assert {"filter-drop-reasons", "filter-languages", "filter-stats"} <= artifact_keys(first["run_id"])
    shown = run_cli("inspect", filtered["rejects"], "-n", "1", "--where", "drop_reason==language:low_score")
    assert f"{filtered['drop_reasons']['language:low_score']} documents" in shown.output

    # tokenize: token totals per language for GPT-2 and for the BPE trained in the run, equal to the
    # sums of the per-document counts and (GPT-2, the writer) to the tokens in the Megatron files.
    # quality: a fastText classifier trained in the run scores every filtered document; the best
    # 90% of the characters are kept, the rest rejected with their score.
    assert quality["docs_in"] == filtered["docs_out"] and 0 < quality["docs_out"] < quality["docs_in"]
    assert set(quality["drop_reasons"]) == {"quality:reference"}
    assert quality["classifiers"]["reference"]["held_out"] > 0
    scored, dropped = read_output(quality["output"]), read_rejects(quality["rejects"])
    assert scored["quality_reference"].min() >= dropped["quality_reference"].max()
    share = scored["text"].str.len_chars().sum() / (scored["text"].str.len_chars().sum() + dropped["text"].str.len_chars().sum())
    assert 0.9 <= share < 1

    counted = read_output(tokenized["output"])
    assert counted.height == tokenized["docs_out"] == quality["docs_out"]
    for tokenizer in ("gpt2", "demo_bpe"):
        per_language = counted.group_by("language").agg(pl.col(f"n_tokens_{tokenizer}").sum())
        assert dict(zip(per_language["language"], per_language[f"n_tokens_{tokenizer}"])) == tokenized["tokens_by_language"][tokenizer]
        assert tokenized["tokens"][tokenizer] == counted[f"n_tokens_{tokenizer}"].sum()
    assert set(tokenized["tokens_by_language"]["gpt2"]) == set(quality["languages"])
    assert tokenized["token_files"]["tokens"] == tokenized["tokens"]["gpt2"]
    assert tokenized["token_files"]["files"] == len(quality["languages"])  # partitioned by language
    assert tokenized["trained_tokenizers"]["demo_bpe"]["file"].endswith("demo_bpe.tokenizer.json")
    assert {"tokenize-tokens", "tokenize-domains"} <= artifact_keys(first["run_id"])
    report = (tmp_path / "store" / "_runs" / first["run_id"] / "report.html").read_text()
    assert "Tokens after each stage" in report and "gpt2 tokens" in report

    # A stricter word minimum: the dry run and the run agree that only decide recomputes.
    tuned = workdir / "tuned.yaml"
    tuned.write_text((workdir / "demo.yaml").read_text().replace("- name: gopher_quality", "- name: gopher_quality\n        min_doc_words: 200"))
    dry = CliRunner(env={"COLUMNS": "250"}).invoke(
        __import__("fineflow.cli", fromlist=["app"]).app, ["run", str(tuned), "--storage", root, "--dry-run"]
    )
    assert dry.exit_code == 0, dry.output
    lines = {tuple(line.split("│")[1:3]): line for line in dry.output.splitlines() if "│" in line}
    assert "cached" in next(row for key, row in lines.items() if "signals" in key[1])
    assert "params.filters" in next(row for key, row in lines.items() if "decide" in key[1])

    second = run_pipeline(tuned, root, dask_address, tmp_path)
    assert [s["cached_shards"] == s["shards"] for s in second["stages"][1]["steps"]] == [True] * 4  # dedup untouched
    signals_step, decide_step = second["stages"][2]["steps"]
    assert signals_step["cached_shards"] == signals_step["shards"] and signals_step["fingerprint"] == filtered["steps"][0]["fingerprint"]
    assert decide_step["cached_shards"] == 0
    assert task_states(second["run_id"], "filter-signals-") == []  # committed: not run again
    assert set(task_states(second["run_id"], "filter-decide-")) == {"Completed"}

    # The kept set changes exactly as the stored signals say it should.
    signals = read_output(filtered["steps"][0]["output"])
    short = set(signals.filter(pl.col("gopher_qual_non_symbol_words") < 200)["id"])
    expected = set(kept["id"]) - short
    assert set(read_output(second["stages"][2]["output"])["id"]) == expected
    assert len(expected) < kept.height
