"""The demo pipeline end to end on real components: SeaweedFS S3, a Prefect API server and a
Dask LocalCluster, all started by the fixtures. The CLI runs in-process, as a user runs it."""

from __future__ import annotations

import io
import json
import re
import shutil
import uuid
from pathlib import Path

import polars as pl
import pytest
from typer.testing import CliRunner

from conftest import BUCKET
from fineflow.manifest import step_folder_of

pytestmark = pytest.mark.integration


def run_cli(*args: str) -> dict:
    from fineflow.cli import app

    result = CliRunner().invoke(app, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result


def run_pipeline(pipeline, storage_url: str, dask_address: str, tmp_path, *extra: str) -> dict:
    summary_path = tmp_path / f"summary-{uuid.uuid4().hex}.json"
    result = run_cli("run", str(pipeline), "--storage", storage_url, "--dask-address", dask_address, "--summary-json", str(summary_path), *extra)
    return {**json.loads(summary_path.read_text()), "cli_output": result.output}


def crawl_only(workdir) -> None:
    """Cut the demo to its crawl stage, for tests about crawling and storage only."""
    demo = (workdir / "demo.yaml").read_text()
    (workdir / "demo.yaml").write_text(demo[: demo.index("  - stage: dedup")])


def s3():
    import s3fs

    return s3fs.S3FileSystem(skip_instance_cache=True, use_listings_cache=False)


def read_output(url: str) -> pl.DataFrame:
    from fineflow import storage
    from fineflow.manifest import committed_files

    return pl.concat([pl.read_parquet(io.BytesIO(storage.read_bytes(f))) for f in committed_files(url)])


def task_states(run_id: str, prefix: str = "crawl-extract-") -> list[str]:
    """States of one step's shard tasks in a pipeline run, as the Prefect UI shows them."""
    return sorted(t.state_name for t in task_runs(run_id) if t.name.startswith(prefix))


def task_runs(run_id: str) -> list:
    """The task runs of a pipeline run's stage subflows, from the Prefect API."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId, FlowRunFilterParentFlowRunId

    with get_client(sync_client=True) as client:
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[uuid.UUID(run_id)]))
        )
        return client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[c.id for c in children])))


@pytest.fixture
def s3_root(seaweed) -> str:
    return f"s3://{BUCKET}/runs/{uuid.uuid4().hex[:8]}"


def test_demo_on_s3_then_cached_then_changed(workdir, s3_root, dask_address, tmp_path):
    first = run_pipeline(workdir / "demo.yaml", s3_root, dask_address, tmp_path)
    crawl = first["stages"][0]
    assert crawl["name"] == "crawl" and crawl["cached_shards"] == 0 and crawl["shards"] >= 2
    assert crawl["docs_out"] >= 150
    assert len([lang for lang, n in crawl["languages"].items() if n > 0]) >= 7
    assert crawl["docs_in"] == crawl["docs_out"] + sum(crawl["skips"].values())
    assert crawl["output"].startswith(s3_root + "/crawl/extract/")

    # The artifacts are really in the bucket: manifest, every shard it lists, each shard's receipt.
    fs = s3()
    manifest = json.loads(fs.cat(step_folder_of(crawl["output"]) + "/_manifest.json"))
    assert len(manifest["shards"]) == crawl["shards"]
    for shard in manifest["shards"]:
        assert fs.size(f"{crawl['output']}/{shard['file']}") == shard["bytes"]
    assert len(fs.find(step_folder_of(crawl["output"]) + "/_receipts")) == crawl["shards"]
    assert fs.exists(f"{s3_root}/_runs/{first['run_id']}/config.yaml")
    docs = read_output(crawl["output"])
    assert docs.height == crawl["docs_out"]

    # What a new user reads at the end (issue 29): every bar at N/N, unwrapped tables, each reason once, where
    # the token files and the report are; and the report's "why" from the steps' own stats.
    out = first["cli_output"]
    bars = re.findall(r"^(\w+/\w+) +━+ +(\d+)/(\d+)", out, re.MULTILINE)
    assert len(bars) >= 10 and all(done == total for _, done, total in bars), bars
    assert re.search(r"│ filter +│ \d+ +│ \d+ +│ \d+ +│ \d+ +│ [\d.]+ +│ s3://\S+/filter/decide/\w+/data +│", out)
    assert "quality: quality:" not in out and "read with care: quality: classifier reference was evaluated on" in out
    assert re.search(r"tokenize: token files \(\d+ files, [\d,]+ tokens\): s3://", out) and "HTML report" in out
    stages = {stage["name"]: stage for stage in first["stages"]}
    assert sum(map(sum, (c.values() for c in stages["filter"]["drops_by_language"].values()))) == stages["filter"]["rejected"]
    assert set(stages["filter"]["drop_examples"]) == set(stages["filter"]["drop_reasons"])
    assert "@" not in json.dumps(stages["filter"]["drop_examples"])
    assert sum(stages["quality"]["score_histogram"]["reference"]["counts"].values()) == stages["quality"]["docs_in"]
    assert stages["quality"]["cut_lines"]["reference"]

    # The same run again: every shard committed, so no task runs (none in the Prefect API), same output.
    second = run_pipeline(workdir / "demo.yaml", s3_root, dask_address, tmp_path)
    again = second["stages"][0]
    assert again["cached_shards"] == again["shards"] == crawl["shards"]
    assert task_states(second["run_id"]) == []
    assert again["output"] == crawl["output"]
    assert read_output(again["output"]).equals(docs)

    # A deleted artifact behind a receipt and the manifest: only that shard recomputes, to the same bytes.
    fs.rm(f"{crawl['output']}/part-00001.parquet")
    third = run_pipeline(workdir / "demo.yaml", s3_root, dask_address, tmp_path)
    assert third["stages"][0]["cached_shards"] == crawl["shards"] - 1
    assert task_states(third["run_id"]) == ["Completed"]
    manifest_after = json.loads(fs.cat(step_folder_of(crawl["output"]) + "/_manifest.json"))
    assert [s["sha256"] for s in manifest_after["shards"]] == [s["sha256"] for s in manifest["shards"]]

    # A changed crawl parameter: crawl recomputes into a new fingerprint folder.
    changed = workdir / "changed.yaml"
    changed.write_text((workdir / "demo.yaml").read_text().replace("extractor: trafilatura", "extractor: resiliparse"))
    fourth = run_pipeline(changed, s3_root, dask_address, tmp_path)
    assert fourth["stages"][0]["cached_shards"] == 0
    assert fourth["stages"][0]["output"] != crawl["output"]


def test_dry_run_explains_what_changed_and_inspect_reads_output(workdir, tmp_path, dask_address):
    root = str(tmp_path / "store")
    summary = run_pipeline(workdir / "demo.yaml", root, dask_address, tmp_path)
    output = summary["stages"][0]["output"]
    shown = run_cli("inspect", output, "-n", "2", "--language", "de", "--where", "language_score>=0.5")
    expected = read_output(output).filter((pl.col("language") == "de") & (pl.col("language_score") >= 0.5)).height
    assert f"{expected} documents" in shown.output and "de=" in shown.output
    result = CliRunner().invoke(
        __import__("fineflow.cli", fromlist=["app"]).app, ["run", str(workdir / "demo.yaml"), "--storage", root, "--dry-run"]
    )
    assert result.exit_code == 0 and "cached" in result.output
    card = check_demo_release(summary, root, tmp_path)
    written = card.stat().st_mtime_ns
    # A re-run of the whole demo, its tokenizer training and token files included: every shard committed.
    again = run_pipeline(workdir / "demo.yaml", root, dask_address, tmp_path)
    assert again["export"] == summary["export"] and card.stat().st_mtime_ns == written  # the same documents: left as it is
    assert [s["name"] for s in again["stages"]] == ["crawl", "dedup", "filter", "quality", "tokenize"]
    assert task_states(again["run_id"], "") == []
    assert all(step["cached_shards"] == step["shards"] for stage in again["stages"] for step in stage["steps"])
    assert again["stages"][4]["tokens"] == summary["stages"][4]["tokens"]
    changed = workdir / "changed.yaml"
    changed.write_text((workdir / "demo.yaml").read_text().replace("shard_bytes: 1000000", "shard_bytes: 900000"))
    result = CliRunner(env={"COLUMNS": "250"}).invoke(
        __import__("fineflow.cli", fromlist=["app"]).app, ["run", str(changed), "--storage", root, "--dry-run"]
    )
    assert result.exit_code == 0 and "params.shard_bytes" in result.output


def check_demo_release(summary: dict, root: str, tmp_path) -> Path:
    """The demo's export: a dataset folder in the storage root whose configs are the languages of
    its last stage's documents, each loading exactly its documents; a card naming the run."""
    from datasets import load_dataset
    from huggingface_hub import DatasetCard

    folder = summary["export"]
    assert folder == f"{root}/release"
    documents = read_output(summary["stages"][-1]["output"])
    card = DatasetCard.load(f"{folder}/README.md")
    assert sorted(c["config_name"] for c in card.data.configs) == sorted(set(documents["language"]))
    assert summary["run_id"] in card.text and summary["stages"][-1]["steps"][0]["fingerprint"] in card.text
    # the funnel per config, the drop reasons and the tokens per config, from the run's summary
    stages = summary["stages"]
    assert "| en | " + " | ".join(f"{s['languages'].get('en', 0):,}" for s in stages) + " |" in card.text
    assert all(f"| {reason} | {count:,} |" in card.text for s in stages for reason, count in s.get("drop_reasons", {}).items())
    configs_row = card.text.split("| en | ")[1].split("\n")[0]  # the first: the configs table's
    assert configs_row.startswith(f"{len(documents.filter(pl.col('language') == 'en')):,} | ")
    assert f"| {stages[-1]['tokens_by_language']['gpt2']['en']:,} |" in configs_row
    for config in ("en", "de"):
        loaded = load_dataset(folder, config, split="train", cache_dir=str(tmp_path / "hf-cache"))
        assert loaded["id"] == documents.filter(pl.col("language") == config)["id"].to_list()
        assert loaded["token_count"] == documents.filter(pl.col("language") == config)["n_tokens_gpt2"].to_list()
    assert (Path(folder) / "pipeline.yaml").exists() and (Path(folder) / "report.html").exists()
    return Path(folder) / "README.md"


def test_corrupt_inputs_are_counted_and_no_good_record_is_lost(workdir, tmp_path, dask_address):
    from fineflow.tasks.crawl.warc import iter_gzip_records

    sample = workdir / "data" / "CC-MAIN-SAMPLE-00000.warc.gz"
    data = sample.read_bytes()
    members = list(iter_gzip_records(str(sample), 0, len(data), 1 << 30))
    offsets = [m.offset for m in members] + [len(data)]
    # A response whose WARC Content-Length lies (claims 500 bytes more than the record holds).
    import gzip
    import re

    k = next(i for i, m in enumerate(members) if b"WARC-Type: response" in m.data[:400] and b"text/html" in m.data[:600])
    liar = gzip.compress(re.sub(rb"Content-Length: (\d+)", lambda m: b"Content-Length: " + str(int(m.group(1)) + 500).encode(), members[k].data, count=1))
    (workdir / "data" / "liar.warc.gz").write_bytes(data[: offsets[k]] + liar + data[offsets[k + 1] :])
    (workdir / "data" / "truncated.warc.gz").write_bytes(data[: len(data) // 2])
    (workdir / "data" / "garbage.warc.gz").write_bytes(b"\x1f\x8b\x08not really gzip" + bytes(range(256)) * 40)
    crawl_only(workdir)

    summary = run_pipeline(workdir / "demo.yaml", str(tmp_path / "store"), dask_address, tmp_path)
    crawl = summary["stages"][0]
    skips = crawl["skips"]
    assert skips.get("corrupt_record", 0) >= 1 and skips.get("truncated", 0) >= 2
    assert crawl["docs_in"] == crawl["docs_out"] + sum(skips.values())

    clean_dir = tmp_path / "clean"
    (clean_dir / "data").mkdir(parents=True)
    shutil.copy(sample, clean_dir / "data")
    shutil.copy(workdir / "demo.yaml", clean_dir)
    clean = run_pipeline(clean_dir / "demo.yaml", str(tmp_path / "clean-store"), dask_address, tmp_path)
    good_urls = set(read_output(clean["stages"][0]["output"])["url"])
    docs = read_output(crawl["output"])
    by_file = docs.with_columns(pl.col("source").str.extract(r"/([^/]+)@").alias("file"))
    for name in ("CC-MAIN-SAMPLE-00000.warc.gz",):
        assert set(by_file.filter(pl.col("file") == name)["url"]) == good_urls
    liar_urls = set(by_file.filter(pl.col("file") == "liar.warc.gz")["url"])
    assert len(liar_urls) >= len(good_urls) - 1 and liar_urls <= good_urls


def test_s3_credentials_from_a_prefect_block(workdir, seaweed, prefect_api, tmp_path, monkeypatch):
    """No AWS_* anywhere (flow process or Dask workers): storage works through the block alone."""
    import logging
    import os

    import s3fs
    from distributed import Client, LocalCluster
    from prefect_aws import AwsCredentials
    from prefect_aws.client_parameters import AwsClientParameters

    from fineflow import storage

    AwsCredentials(
        aws_access_key_id=seaweed.access_key,
        aws_secret_access_key=seaweed.secret_key,
        region_name="us-east-1",
        aws_client_parameters=AwsClientParameters(endpoint_url=seaweed.endpoint),
    ).save("test-seaweed", overwrite=True)
    for key in seaweed.environment():
        monkeypatch.delenv(key)
    crawl_only(workdir)
    cluster = LocalCluster(n_workers=1, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0", silence_logs=logging.WARNING)
    try:
        with Client(cluster) as client:
            names = sorted(seaweed.environment())
            worker_aws = client.run(lambda: [k for k in names if k in os.environ])
        assert all(keys == [] for keys in worker_aws.values()), worker_aws  # no keys, no endpoint

        root = f"s3://{BUCKET}/creds-{uuid.uuid4().hex[:8]}"
        summary = run_pipeline(
            workdir / "demo.yaml", root, cluster.scheduler_address, tmp_path, "--credentials-block", "test-seaweed"
        )
    finally:
        cluster.close()
        storage.configure("s3")  # back to the environment for the other tests
    crawl = summary["stages"][0]
    assert crawl["docs_out"] >= 150
    fs = s3fs.S3FileSystem(
        key=seaweed.access_key, secret=seaweed.secret_key, client_kwargs={"endpoint_url": seaweed.endpoint},
        skip_instance_cache=True,
    )
    manifest = json.loads(fs.cat(step_folder_of(crawl["output"]) + "/_manifest.json"))
    assert all(fs.exists(f"{crawl['output']}/{s['file']}") for s in manifest["shards"])
    assert len(fs.find(step_folder_of(crawl["output"]) + "/_receipts")) == len(manifest["shards"])  # written by the workers
    stored_config = fs.cat(f"{root}/_runs/{summary['run_id']}/config.yaml").decode()
    assert "storage_credentials: test-seaweed" in stored_config and seaweed.secret_key not in stored_config
