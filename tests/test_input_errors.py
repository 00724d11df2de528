"""Input and environment errors are one line naming the key or option, before anything starts;
readers explain what they were pointed at; messages are printed literally."""

from __future__ import annotations

import gc
import io
import os

import polars as pl
import pytest
from typer.testing import CliRunner

from fineflow.cli import app
from fineflow.manifest import committed_entries, write_manifest
from fineflow.planning import plan_stage
from fineflow.steps import run_shard

STARTED = "Prefect API"  # what `fineflow run` prints once it has connected to (or started) Prefect


def _invoke(*args: str, env: dict | None = None):
    # Finalize what earlier tests left for the garbage collector first (an S3 client of another
    # event loop logs "Task exception was never retrieved" when collected): inside the call that
    # text would land in the output these tests read as the CLI's.
    gc.collect()
    return CliRunner(env={"COLUMNS": "300", **(env or {})}).invoke(app, list(args), catch_exceptions=False)


def _one_line_error(result, *fragments: str, code: int = 2) -> str:
    assert result.exit_code == code, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output  # one line, no traceback
    assert STARTED not in result.output
    for fragment in fragments:
        assert fragment in lines[0], lines[0]
    return lines[0]


def _pipeline(workdir, inputs: str = "[data/*.warc.gz]", extra: str = "") -> str:
    text = (workdir / "demo.yaml").read_text().replace("inputs: [data/*.warc.gz]", f"inputs: {inputs}{extra}")
    path = workdir / "pipeline.yaml"
    path.write_text(text)
    return str(path)


@pytest.mark.parametrize("dry_run", [False, True])
@pytest.mark.parametrize(
    ("storage", "fragments"),
    [
        ("bogus://bucket/prefix", ["storage", "unsupported protocol bogus://"]),
        ("ftp:///no-host", ["storage", "names no host"]),
        ("s3://", ["storage", "names no bucket"]),
    ],
)
def test_bad_storage_urls(workdir, storage, fragments, dry_run):
    result = _invoke("run", _pipeline(workdir), "--storage", storage, *(["--dry-run"] if dry_run else []))
    _one_line_error(result, *fragments)


def test_s3_without_credentials(workdir, tmp_path):
    env = {key: None for key in os.environ if key.startswith("AWS_")}
    env |= {"AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    for dry_run in ([], ["--dry-run"]):
        result = _invoke("run", _pipeline(workdir), "--storage", "s3://bucket/prefix", *dry_run, env=env)
        _one_line_error(result, "storage", "needs S3 credentials", "AWS_ACCESS_KEY_ID")


def test_s3_endpoint_unreachable(workdir):
    env = {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "not-a-secret", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    result = _invoke("run", _pipeline(workdir), "--storage", "s3://bucket/prefix", env=env)
    _one_line_error(result, "storage", "cannot reach the S3 endpoint at http://127.0.0.1:9")


@pytest.mark.integration
def test_s3_bucket_missing(workdir, seaweed):
    result = _invoke("run", _pipeline(workdir), "--storage", "s3://no-such-bucket/prefix")
    _one_line_error(result, "storage", "bucket no-such-bucket does not exist")


@pytest.mark.parametrize("dry_run", [False, True])
def test_missing_inputs_and_models(workdir, tmp_path, dry_run):
    flag = ["--dry-run"] if dry_run else []
    store = str(tmp_path / "store")
    missing = _invoke("run", _pipeline(workdir, "[data/gone.warc.gz]"), "--storage", store, *flag)
    _one_line_error(missing, "stages.crawl.inputs", "gone.warc.gz does not exist")
    nothing = _invoke("run", _pipeline(workdir, "[data/*.wet.gz]"), "--storage", store, *flag)
    _one_line_error(nothing, "stages.crawl.inputs", "*.wet.gz match no file")
    model = _invoke("run", _pipeline(workdir, extra="\n    langid_model: models/lid.218.bin"), "--storage", store, *flag)
    _one_line_error(model, "stages.crawl.langid_model", "lid.218.bin")
    summary = _invoke("run", _pipeline(workdir), "--storage", store, "--summary-json", str(tmp_path / "no" / "s.json"), *flag)
    _one_line_error(summary, "--summary-json", str(tmp_path / "no"))
    assert not (tmp_path / "store").exists()  # nothing ran


def test_an_empty_glob_among_others_warns_and_strict_makes_it_an_error(workdir, tmp_path):
    pipeline = _pipeline(workdir, "[data/*.warc.gz, data/*.wet.gz]")
    dry = _invoke("run", pipeline, "--storage", str(tmp_path / "store"), "--dry-run")
    assert dry.exit_code == 0 and "warning: crawl: inputs: the glob" in dry.output and "*.wet.gz matches no file" in dry.output
    strict = _invoke("run", pipeline, "--storage", str(tmp_path / "store"), "--dry-run", "--strict")
    _one_line_error(strict, "strict", "*.wet.gz matches no file")


def test_messages_are_printed_literally(workdir, tmp_path):
    (workdir / "data" / "[red]").mkdir()
    result = _invoke("run", _pipeline(workdir, '["data/[red]/x[/red].warc.gz"]'), "--storage", str(tmp_path / "s"))
    _one_line_error(result, "data/[red]/x[/red].warc.gz")  # a glob (brackets), shown as written
    weird = tmp_path / "[bold]store[/bold]"
    result = _invoke("gc", "--storage", str(weird))
    _one_line_error(result, f"{weird} does not exist")


def test_gc_and_verify_on_a_storage_root_that_does_not_exist(tmp_path):
    _one_line_error(_invoke("gc", "--storage", str(tmp_path / "nowhere")), "--storage", "does not exist")
    _one_line_error(_invoke("verify", "--storage", str(tmp_path / "nowhere")), "--storage", "does not exist")


@pytest.fixture(scope="module")
def committed_step(tmp_path_factory):
    """A crawl step committed by its pure functions (no orchestration needed), with rejects."""
    import shutil

    from conftest import DEMO, SAMPLE
    from fineflow.config import load_config

    workdir = tmp_path_factory.mktemp("committed")
    tmp_path = workdir
    (workdir / "data").mkdir()
    shutil.copy(SAMPLE, workdir / "data" / SAMPLE.name)
    shutil.copy(DEMO, workdir / "demo.yaml")
    blocklist = workdir / "domains.txt"
    blocklist.write_text("docs.python.org\n")
    extra = (
        "\n    url_filter: fineflow.tasks.crawl.url_hooks:domain_blocklist"
        f"\n    url_filter_options: {{domains_file: {blocklist}}}"
        "\n    extractor: resiliparse"
    )
    config = load_config(_pipeline(workdir, extra=extra), storage_override=str(tmp_path / "store"))
    (plan,) = plan_stage(config.stages[0], config.storage, None)
    results = [run_shard(plan.function, shard, plan.params, plan.location) for shard in plan.shards]
    write_manifest(plan.location, plan.fingerprint.components, results)
    (tmp_path / "store" / "_runs").mkdir()
    return plan.location, results


def test_inspect_explains_what_it_cannot_read(committed_step, workdir, tmp_path):
    location, results = committed_step
    root = location.root
    _one_line_error(_invoke("inspect", root), "is a storage root", code=1)
    _one_line_error(_invoke("inspect", os.path.join(root, "_runs")), "run records", code=1)
    _one_line_error(_invoke("inspect", str(workdir / "data" / "CC-MAIN-SAMPLE-00000.warc.gz")), "not a Parquet file", code=1)
    _one_line_error(_invoke("inspect", location.folder, "--where", "nope>1"), "no column 'nope'")
    _one_line_error(_invoke("inspect", location.folder, "--where", "language_score>=high"), "cannot compare column 'language_score'")
    _one_line_error(_invoke("inspect", location.folder, "--language", "de", "--where", "url==3"), "cannot compare column 'url'")

    # Documents and rejects are never mixed: each view shows exactly its committed rows.
    kept = sum(r["output"]["rows"] for r in results)
    rejected = sum(r["rejects"]["rows"] for r in results)
    assert rejected > 0
    assert f"{kept} documents in" in _invoke("inspect", location.folder, "-n", "0").output
    assert f"{rejected} documents in" in _invoke("inspect", location.folder, "--rejects", "-n", "0").output
    assert f"{rejected} documents in" in _invoke("inspect", location.rejects_folder, "-n", "0").output


def test_inspect_refuses_uncommitted_and_damaged_files(committed_step, tmp_path):
    import shutil

    from fineflow.manifest import StepLocation

    shared, results = committed_step
    shutil.copytree(shared.root, tmp_path / "store")  # damaged below: a copy, not the module's step
    location = StepLocation(str(tmp_path / "store"), shared.stage, shared.step, shared.fingerprint)

    partial = tmp_path / "partial"
    shutil.copytree(location.folder, partial)
    (partial / "_manifest.json").unlink()
    _one_line_error(_invoke("inspect", str(partial)), "is uncommitted", "--uncommitted", code=1)
    forced = _invoke("inspect", str(partial), "--uncommitted", "-n", "0")
    kept = sum(r["output"]["rows"] for r in results)
    assert forced.exit_code == 0 and "is uncommitted" in forced.output and f"{kept} documents in" in forced.output

    damaged = location.shard_url(1)
    data = bytearray(open(damaged, "rb").read())
    data[len(data) // 2] ^= 0xFF  # same size, different content
    open(damaged, "wb").write(bytes(data))
    _one_line_error(_invoke("inspect", location.folder), "part-00001.parquet is damaged", "sha256", code=1)
    assert location.intact_shards() == {s["shard"] for s in results} - {1}  # the cache check sees it too
    entries = committed_entries(location.folder)
    assert pl.read_parquet(io.BytesIO(entries[0].read())).height == results[0]["output"]["rows"]


def test_summary_json_of_a_damaged_run_record_is_a_clear_error(tmp_path):
    run = tmp_path / "store" / "_runs" / "abc"
    run.mkdir(parents=True)
    (run / "summary.json").write_text('{"run_id": "abc", "stages": [')  # cut short
    _one_line_error(_invoke("report", str(run)), "summary.json is damaged", code=1)


def test_s3_inputs_are_checked_before_anything_starts(workdir, tmp_path):
    env = {key: None for key in os.environ if key.startswith("AWS_")}
    env |= {"AWS_CONFIG_FILE": str(tmp_path / "none"), "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none")}
    pipeline = _pipeline(workdir, "[s3://crawl-bucket/warc/*.warc.gz]")
    for dry_run in ([], ["--dry-run"]):
        result = _invoke("run", pipeline, "--storage", str(tmp_path / "store"), *dry_run, env=env)
        _one_line_error(result, "stages.crawl.inputs", "s3://crawl-bucket", "needs S3 credentials")
    unreachable = {"AWS_ACCESS_KEY_ID": "key", "AWS_SECRET_ACCESS_KEY": "not-a-secret", "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}
    result = _invoke("run", pipeline, "--storage", str(tmp_path / "store"), env=unreachable)
    _one_line_error(result, "stages.crawl.inputs", "cannot reach the S3 endpoint")


def test_rich_markup_in_a_storage_path_is_printed_as_it_is(tmp_path):
    root = tmp_path / "s[/x]"
    (root / "_runs").mkdir(parents=True)
    result = _invoke("gc", "--storage", str(root), "--dry-run")
    assert result.exit_code in (0, 2) and "Traceback" not in result.output and "MarkupError" not in result.output


def test_inspect_marks_artifacts_that_differ_from_their_manifest(tmp_path):
    import pyarrow as pa

    from fineflow.artifacts import commit_artifact
    from fineflow.documents import commit_shard
    from fineflow.manifest import StepLocation

    location = StepLocation(str(tmp_path / "store"), "toy", "count", "f" * 20)
    results = []
    for shard in range(3):
        output = location.shard_url(shard)
        artifact = commit_artifact(output, f"counts-{shard}.json", b'{"en": 12}')
        results.append(commit_shard(shard, output, pa.table({"id": [str(shard)], "text": ["a b"]}), artifacts=[artifact]))
    write_manifest(location, {}, results)
    intact = _invoke("inspect", location.folder, "-n", "0")
    assert intact.exit_code == 0 and intact.output.count("matches") == 3 and "DIFFERS" not in intact.output, intact.output

    (tmp_path / "store/toy/count" / ("f" * 20) / "artifacts/counts-1.json").write_bytes(b'{"en": 99}')  # same size
    (tmp_path / "store/toy/count" / ("f" * 20) / "artifacts/counts-2.json").unlink()
    shown = _invoke("inspect", location.folder, "-n", "0")
    assert shown.exit_code == 0, shown.output
    rows = {line.split("│")[1].strip(): line for line in shown.output.splitlines() if line.startswith("│") and "counts-" in line}
    assert "matches" in rows["counts-0.json"]
    assert "DIFFERS: content differs: sha256" in rows["counts-1.json"] and "DIFFERS: missing" in rows["counts-2.json"], shown.output
    assert "2 artifact(s) differ from the manifest (counts-1.json, counts-2.json)" in shown.output
