"""Pipelines as DAGs, stage kinds as plug-ins, artifacts, and outputs dataset readers load.

One real run (``fineflow run`` in a subprocess, on the session's Dask cluster and Prefect API)
of ``examples/dag.yaml`` grown by a plug-in stage defined in ``tests/plugins/toy_stage.py``:

    sample ──┬─> dedup ─> filter ─> (filter.rejects) ─> second-look
    manpages ┘
    sample ───> words (the plug-in: counts words, commits artifacts)

The tests below read that run; the configuration errors need no run at all.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from conftest import BUCKET, REPO
from fineflow.manifest import step_folder_of

EXAMPLES = REPO / "examples"
PLUGIN = REPO / "tests" / "plugins" / "toy_stage.py"
PLUGINS = REPO / "tests" / "plugins"


@pytest.fixture(scope="module", autouse=True)
def _plugins_forgotten_after_this_module():
    """The plug-in kinds this module's in-process runs load stay out of the other modules' tests."""
    from fineflow import registry

    kinds, plugins, path = dict(registry._KINDS), dict(registry._PLUGINS), list(sys.path)
    loaded = registry._entry_points_loaded  # (restored with the kinds: else an empty registry counts as loaded)
    yield
    registry._entry_points_loaded = loaded
    registry._KINDS.clear()
    registry._KINDS.update(kinds)
    registry._PLUGINS.clear()
    registry._PLUGINS.update(plugins)
    sys.path[:] = path


def _cli(*args: str, cwd: Path | None = None):
    from fineflow.cli import app

    previous = Path.cwd()
    if cwd:
        os.chdir(cwd)
    try:
        return CliRunner().invoke(app, list(args))
    finally:
        os.chdir(previous)


def _pipeline(folder: Path, stages: list[dict], **top) -> Path:
    path = folder / f"p-{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump({"name": "t", "stages": stages, **top}, sort_keys=False))
    return path


CRAWL = {"stage": "crawl", "inputs": [str(EXAMPLES / "data" / "*.warc.gz")], "extractor": "resiliparse"}


# -- configuration errors: named, before any work ------------------------------------------


@pytest.mark.parametrize(
    ("stages", "message"),
    [
        ([CRAWL, {"stage": "dedup", "name": "a", "input": "b"}, {"stage": "dedup", "name": "b", "input": "a"}],
         "stage a: its inputs form a cycle: a -> b -> a"),
        ([CRAWL, {"stage": "dedup", "input": "crawler"}], "stage dedup: input crawler names no stage"),
        ([CRAWL, {"stage": "dedup", "input": "crawl.rejected"}], "input crawl.rejected names no stage"),
        ([CRAWL, {**CRAWL}], "stage name(s) used twice: crawl"),
        ([CRAWL, {"stage": "dedup", "name": "crawl"}], "stage name(s) used twice: crawl"),
        ([{"stage": "dedup"}, CRAWL], "stage dedup: it reads documents, but no stage comes before it"),
        ([CRAWL, {**CRAWL, "name": "b", "input": "crawl"}], "stage b: a crawl stage reads no documents"),
        ([CRAWL, {"stage": "dedup", "input": []}], "an empty list reads nothing"),
        ([CRAWL, {"stage": "dedup", "name": "Big.Name"}], "stages.1.name: String should match pattern"),
        ([CRAWL, {"stage": "wordcount"}], "does not match any of the expected tags"),
        ([CRAWL, {"stage": "quality", "classifiers": {"c": {"labels": {"positives": {"stage": "refs"}, "negatives": {"rest": True}}}},
                  "scorers": {"c": {"trained": "c"}}}], "stage quality: it reads stage refs, which is not a stage of this pipeline"),
        ([CRAWL, {"stage": "quality", "name": "q", "input": "crawl",
                  "classifiers": {"c": {"labels": {"positives": {"stage": "d"}, "negatives": {"rest": True}}}}, "scorers": {"c": {"trained": "c"}}},
          {"stage": "dedup", "name": "d", "input": "q"}], "stage q: its inputs form a cycle: q -> d -> q"),
    ],
)
def test_dag_configuration_errors_name_the_stage_before_any_work(tmp_path, stages, message):
    store = tmp_path / "store"
    result = _cli("run", str(_pipeline(tmp_path, stages)), "--storage", str(store), "--dry-run")
    assert result.exit_code == 2 and message in result.output, result.output
    assert "Traceback" not in result.output and not store.exists()


def test_a_plugin_that_cannot_be_found_is_a_configuration_error(tmp_path):
    result = _cli("run", str(_pipeline(tmp_path, [CRAWL], plugins=["no_such_stage_module"])), "--dry-run")
    assert result.exit_code == 2 and "plugins: module 'no_such_stage_module' cannot be imported" in result.output


BROKEN_PLUGINS = {
    "syntax": ("x = 1\ndef broken(:\n", ["syntax error at", ".py:2"]),
    "raises": ("import os\nraise RuntimeError('no licence key in ' + os.sep)\n", ["raised RuntimeError at", ".py:2", "no licence key"]),
    "planner": (
        "from typing import Literal\nfrom fineflow.registry import StageKind\nfrom fineflow.stage_config import StageConfig\n"
        "class C(StageConfig):\n    stage: Literal['brokenkind']\n"
        "KIND = StageKind(kind='brokenkind', config=C, planner=f'{__name__}:no_such_planner', document_step='x')\n",
        ["planner", ":no_such_planner", "does not resolve", "no attribute 'no_such_planner'"],
    ),
}


def _one_line(result) -> str:
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output, result.output
    return lines[0]


@pytest.mark.parametrize("broken", sorted(BROKEN_PLUGINS))
def test_a_broken_plugin_module_is_one_line_naming_it(tmp_path, broken):
    source, fragments = BROKEN_PLUGINS[broken]
    module = f"broken_{broken}_{uuid.uuid4().hex[:6]}"
    (tmp_path / f"{module}.py").write_text(source)
    line = _one_line(_cli("run", str(_pipeline(tmp_path, [CRAWL], plugins=[module])), "--dry-run"))
    assert f"plugins: module {module!r}" in line and all(fragment in line for fragment in fragments), line
    from fineflow import registry

    assert "brokenkind" not in registry.kinds()  # a kind whose planner does not resolve is not registered


@pytest.mark.parametrize("broken", ["syntax", "raises"])
def test_a_broken_entry_point_is_one_line_naming_it(tmp_path, monkeypatch, broken):
    from importlib.metadata import EntryPoint

    from fineflow import registry

    source, fragments = BROKEN_PLUGINS[broken]
    module = f"broken_ep_{broken}_{uuid.uuid4().hex[:6]}"
    (tmp_path / f"{module}.py").write_text(source)
    monkeypatch.syspath_prepend(str(tmp_path))
    installed = list(registry.entry_points(group=registry.ENTRY_POINT_GROUP))
    broken_point = EntryPoint(name="brokenkind", value=f"{module}:KIND", group=registry.ENTRY_POINT_GROUP)
    monkeypatch.setattr(registry, "entry_points", lambda group: [*installed, broken_point])
    monkeypatch.setattr(registry, "_entry_points_loaded", False)
    line = _one_line(_cli("run", str(_pipeline(tmp_path, [CRAWL])), "--dry-run"))
    assert f"stage kind 'brokenkind': entry point {module}:KIND" in line and all(f in line for f in fragments), line


def test_rejects_of_a_kind_that_writes_none_are_refused_with_the_configuration(tmp_path):
    stages = [CRAWL, {"stage": "tagword", "name": "tagged", "input": "crawl"}, {"stage": "dedup", "input": "tagged.rejects"}]
    store = tmp_path / "store"
    line = _one_line(_cli("run", str(_pipeline(tmp_path, stages, plugins=["tag_stage"], plugins_from=str(PLUGINS))),
                          "--storage", str(store), "--dry-run"))
    assert "stage dedup: input tagged.rejects: a tagword stage writes no rejects" in line and not store.exists()


def _committed_input(root: Path, name: str, table) -> object:
    """One committed single-shard step holding ``table``, as an input Source (its footers are what is checked)."""
    from fineflow.documents import commit_shard
    from fineflow.manifest import StepLocation, write_manifest
    from fineflow.steps import Source

    location = StepLocation(str(root), "tagword", "tag", f"fp-{name}")
    write_manifest(location, {}, [commit_shard(0, location.shard_url(0), table)])
    return Source(name, location.fingerprint, location.data_folder, 1)


def test_input_columns_and_fan_in_types_are_checked_against_the_committed_footers(tmp_path):
    import pyarrow as pa

    from fineflow import registry
    from fineflow.input_schemas import InputSchemaError, check_inputs
    from fineflow.steps import StageInputs

    registry.load_plugins(["tag_stage"], str(PLUGINS))
    counted = _committed_input(tmp_path, "counted", pa.table({"id": ["a"], "text": ["xy"], "tag": pa.array([2], pa.int64())}))
    spelled = _committed_input(tmp_path, "spelled", pa.table({"id": ["b"], "text": ["xy"], "tag": ["2"]}))
    unset = _committed_input(tmp_path, "unset", pa.table({"id": ["c"], "text": ["xy"], "tag": pa.nulls(1)}))
    reads = registry.validate_stage({"stage": "tagword", "column": "tag"})
    check_inputs("fine", reads, StageInputs((counted, unset)))  # a null column takes the other input's type
    with pytest.raises(InputSchemaError) as conflict:
        check_inputs("both", reads, StageInputs((counted, unset, spelled)))
    assert str(conflict.value).startswith("stage both: column 'tag' is int64 in input counted but string in input spelled")
    misread = registry.validate_stage({"stage": "tagword", "column": "nope"})
    with pytest.raises(InputSchemaError) as missing:
        check_inputs("misread", misread, StageInputs((counted,)))
    assert str(missing.value) == "stage misread: column: input counted has no column 'nope' (its columns: id, text, tag)"
    with pytest.raises(InputSchemaError, match=r"none of its inputs \(counted, unset\) has a column 'nope'"):
        check_inputs("misread", misread, StageInputs((counted, unset)))


def test_two_stages_of_one_kind_get_their_own_folders_and_history(tmp_path):
    from fineflow.config import load_config
    from fineflow.planning import plan_pipeline

    stages = [CRAWL, {"stage": "dedup", "name": "strict"}, {"stage": "dedup", "name": "loose", "input": "crawl", "bands": 9}]
    planned = plan_pipeline(load_config(_pipeline(tmp_path, stages), storage_override=str(tmp_path / "s")))
    folders = {node.name: plans[-1].location.folder for node, plans in planned}
    assert folders["strict"] != folders["loose"] and all("/dedup/remove/" in folders[n] for n in ("strict", "loose"))
    strict, loose = (plans for _, plans in planned[1:])
    assert [p.name for p in strict] == ["strict"] * 4 and loose[0].task_name(3) == "loose-signatures-00003"
    # both read the crawl's documents: the same upstream fingerprint, the same shard files
    assert strict[0].shards == loose[0].shards and strict[0].location.latest_url("strict") != loose[0].location.latest_url("loose")


def test_dry_run_of_the_example_dag_shows_each_stage_and_what_it_reads(tmp_path, monkeypatch):
    from fineflow import cli

    monkeypatch.setattr(cli.console, "_width", 250)  # one line per row (undone exactly: no width set)
    result = _cli("run", "dag.yaml", "--dry-run", "--storage", str(tmp_path / "s"), cwd=EXAMPLES)
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "│" in line]
    rows: dict[str, list[str]] = {}
    for cells in (line.split("│") for line in lines):
        if len(cells) > 4:
            rows.setdefault(cells[1].strip(), cells)  # the DAG table comes first, then the steps
    assert {"sample", "manpages", "dedup", "filter", "second-look"} <= set(rows)
    assert "sample, manpages" in rows["dedup"][3] and "filter.rejects" in rows["second-look"][3]
    assert all("recompute" in rows[name][4] for name in ("sample", "second-look"))


def test_a_union_reads_every_shard_with_the_union_of_the_columns(tmp_path):
    import pyarrow as pa

    from fineflow.documents import DOCUMENT_SCHEMA, read_input, write_table
    from fineflow.steps import Source, StageInputs

    plain = pa.Table.from_pylist([{"id": "a", "text": "x"}], schema=DOCUMENT_SCHEMA)
    counted = plain.append_column("words", pa.array([1], pa.int64())).set_column(0, "id", pa.array(["b"]))
    write_table(str(tmp_path / "one" / "part-00000.parquet"), plain)
    write_table(str(tmp_path / "two" / "part-00000.parquet"), counted)
    write_table(str(tmp_path / "two" / "part-00001.parquet"), counted.slice(0, 0))
    inputs = StageInputs((Source("one", "f1", str(tmp_path / "one"), 1), Source("two", "f2", str(tmp_path / "two"), 2)))
    shards = inputs.shards()
    assert [s["shard"] for s in shards] == [0, 1, 2] and inputs.fingerprint == ["f1", "f2"]
    tables = [read_input(shard) for shard in shards]
    assert all(t.schema == tables[1].schema for t in tables) and tables[1].schema.names[-1] == "words"
    assert tables[0].column("words").to_pylist() == [None] and tables[1].column("id").to_pylist() == ["b"]


def test_a_store_of_the_old_layout_is_refused_with_a_reason(tmp_path):
    old = tmp_path / "crawl" / "extract" / "0123456789abcdef0123"
    old.mkdir(parents=True)
    (old / "_manifest.json").write_text(json.dumps({"stage": "crawl", "step": "extract", "fingerprint": old.name, "shards": []}))
    result = _cli("inspect", str(old))
    assert result.exit_code == 1 and "written by an older fineflow" in result.output and "fineflow gc" in result.output


# -- one real run of a DAG with a plug-in stage ---------------------------------------------


@pytest.fixture(scope="module")
def dag_run(tmp_path_factory, dask_address, prefect_api):
    folder = tmp_path_factory.mktemp("dag")
    shutil.copytree(EXAMPLES / "data", folder / "data")
    shutil.copy(PLUGIN, folder / "toy_stage.py")
    config = yaml.safe_load((EXAMPLES / "dag.yaml").read_text())
    config["plugins"] = ["toy_stage"]
    config["stages"].append({"stage": "wordcount", "name": "words", "input": "sample", "min_words": 300})
    pipeline = folder / "dag.yaml"
    pipeline.write_text(yaml.safe_dump(config, sort_keys=False))
    store = folder / "store"
    summary = folder / "summary.json"
    command = [sys.executable, "-m", "fineflow.cli", "run", str(pipeline), "--storage", str(store),
               "--dask-address", dask_address, "--summary-json", str(summary)]
    done = subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=900, env={**os.environ, "COLUMNS": "200"})
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    result = json.loads(summary.read_text())
    return {"folder": folder, "pipeline": pipeline, "store": store, "summary": result, "api": prefect_api,
            "stages": {s["name"]: s for s in result["stages"]}, "stdout": done.stdout}


def test_a_plugin_stage_runs_and_shows_everywhere(dag_run):
    from fineflow.report import load_summary

    words = dag_run["stages"]["words"]
    sample = dag_run["stages"]["sample"]
    assert words["kind"] == "wordcount" and words["input"][0]["stage"] == "sample"
    assert words["docs_in"] == sample["docs_out"] and 0 < words["docs_out"] < words["docs_in"]  # some pages are short
    assert words["words"] > 10_000  # its own summary field
    names = sorted(url.rsplit("/", 1)[1] for url in words["artifacts"])
    assert names == [f"counts-{n:05d}.json" for n in range(sample["shards"])] + ["totals.json"]
    totals = json.loads(Path(next(u for u in words["artifacts"] if u.endswith("totals.json"))).read_text())
    assert sum(totals.values()) == words["words"]  # the second step read the first one's artifacts
    record = load_summary(str(dag_run["store"] / "_runs" / dag_run["summary"]["run_id"]))
    assert [s["name"] for s in record["stages"]] == ["sample", "manpages", "dedup", "filter", "second-look", "words"]
    page = (dag_run["store"] / "_runs" / dag_run["summary"]["run_id"] / "report.html").read_text()
    assert 'id="chart-words"' in page and 'id="chart-dag"' in page and 'id="chart-clusters"' in page
    assert "words" in dag_run["stdout"] and "second-look" in dag_run["stdout"]
    from test_operations import call

    tables = call("POST", f"{dag_run['api']}/artifacts/filter", json={"artifacts": {"key": {"any_": ["words-words", "words-stats"]}}}).json()
    assert {t["key"] for t in tables} == {"words-words", "words-stats"}


def test_the_plugin_stage_is_validated_and_planned_like_the_others(dag_run, monkeypatch):
    from fineflow import cli

    monkeypatch.setattr(cli.console, "_width", 250)
    again = _cli("run", str(dag_run["pipeline"]), "--storage", str(dag_run["store"]), "--dry-run")
    assert again.exit_code == 0, again.output
    rows = [line.split("│") for line in again.output.splitlines() if line.startswith("│")]
    states = {cells[1].strip(): (cells[2].strip(), cells[4].strip()) for cells in rows if len(cells) == 7}
    assert states["words"] == ("wordcount", "cached") and all(state == "cached" for _, state in states.values()), states
    config = yaml.safe_load(dag_run["pipeline"].read_text())
    config["stages"][-1]["min_words"] = -1
    bad = dag_run["folder"] / "bad.yaml"
    bad.write_text(yaml.safe_dump(config))
    refused = _cli("run", str(bad), "--dry-run")
    assert refused.exit_code == 2 and "stages.5.min_words: Input should be greater than or equal to 0" in refused.output


def test_fan_in_fan_out_and_rejects_inputs_carry_the_right_documents(dag_run):
    stages = dag_run["stages"]
    dedup, filter_, second = stages["dedup"], stages["filter"], stages["second-look"]
    assert [(i["stage"], i["rejects"]) for i in dedup["input"]] == [("sample", False), ("manpages", False)]
    assert dedup["docs_in"] == stages["sample"]["docs_out"] + stages["manpages"]["docs_out"]
    assert stages["words"]["docs_in"] == stages["sample"]["docs_out"]  # fan-out: sample read twice
    assert second["input"] == [{"stage": "filter", "rejects": True, "folder": filter_["rejects"], "shards": 4}]
    assert stages["sample"]["rejects"] is None  # the crawl dropped nothing: no rejects folder in the summary
    assert second["docs_in"] == filter_["rejected"] > 0
    import polars as pl

    kept = pl.scan_parquet(f"{second['output']}/*.parquet").collect()
    assert kept["drop_reason"].null_count() == 0  # a rescued document keeps why the first filter dropped it
    rejected = pl.scan_parquet(f"{second['rejects']}/*.parquet").collect()
    assert set(rejected["drop_reason"]) <= {"gopher_quality:short_doc"}  # its own verdict replaced the first


def test_independent_branches_ran_at_the_same_time(dag_run):
    from test_operations import call

    api = dag_run["api"]
    children = call("POST", f"{api}/flow_runs/filter", json={"flow_runs": {"parent_flow_run_id": {"any_": [dag_run["summary"]["run_id"]]}}}).json()
    assert {"sample", "manpages", "words"} <= {run["name"] for run in children}  # a subflow each
    # Both crawls were launched before either came back: neither waited for the other. (The
    # stages' own launch and return times: Prefect's subflow start times lag behind when its
    # API is busy, e.g. a SQLite server on a loaded machine.)
    a, b = dag_run["stages"]["sample"], dag_run["stages"]["manpages"]
    assert a["started_at"] < b["finished_at"] and b["started_at"] < a["finished_at"]
    dedup = dag_run["stages"]["dedup"]
    assert dedup["started_at"] >= max(a["finished_at"], b["finished_at"])  # the fan-in waited for both


def _folders(summary: dict) -> list[tuple[str, int]]:
    """Every output and rejects folder of a run, with the rows its manifest lists."""
    from fineflow.manifest import committed_entries

    found = []
    for stage in summary["stages"]:
        for key in ("output", "rejects"):
            if stage.get(key):
                found.append((stage[key], sum(entry.rows for entry in committed_entries(stage[key]))))
    return found


def _read_everywhere(folder: str, cache: Path) -> dict[str, int]:
    import datasets
    import polars as pl

    loaded = datasets.load_dataset("parquet", data_dir=folder, split="train", cache_dir=str(cache))
    counts = {"datasets": loaded.num_rows}
    counts["polars"] = pl.scan_parquet(f"{folder}/**/*.parquet").select(pl.len()).collect().item()
    return counts


def test_every_output_and_rejects_folder_loads_as_it_is(dag_run, tmp_path):
    import duckdb
    import pyarrow.parquet as pq

    folders = _folders(dag_run["summary"])
    assert len(folders) == 10  # every output, and the rejects of the stages that dropped any
    for folder, rows in folders:
        files = sorted(Path(folder).iterdir())
        assert all(f.suffix == ".parquet" for f in files), files  # nothing else in a document folder
        assert len({str(pq.read_schema(f)) for f in files}) == 1, folder  # one schema, empty shards included
        assert _read_everywhere(folder, tmp_path / "hf") == {"datasets": rows, "polars": rows}, folder
        assert duckdb.sql(f"select count(*) from read_parquet('{folder}/**/*.parquet')").fetchall()[0][0] == rows


def test_an_empty_shard_loads_beside_the_others(tmp_path):
    """Empty shards are files with the step's schema and no row group: every reader takes them."""
    import duckdb
    import polars as pl

    from fineflow.documents import DOCUMENT_SCHEMA, commit_shard

    folder = tmp_path / "data"
    one = {"id": "a", "url": "https://a.example/", "text": "some text", "language": "en"}
    commit_shard(0, str(folder / "part-00000.parquet"), pa_table([one]), str(tmp_path / "rejects" / "part-00000.parquet"))
    commit_shard(1, str(folder / "part-00001.parquet"), DOCUMENT_SCHEMA.empty_table(), str(tmp_path / "rejects" / "part-00001.parquet"))
    assert _read_everywhere(str(folder), tmp_path / "hf") == {"datasets": 1, "polars": 1}
    assert duckdb.sql(f"select count(*) from read_parquet('{folder}/**/*.parquet')").fetchall()[0][0] == 1
    assert pl.read_parquet(tmp_path / "rejects" / "part-00001.parquet").columns[-1] == "drop_reason"


def pa_table(rows: list[dict]):
    import pyarrow as pa

    from fineflow.documents import DOCUMENT_SCHEMA

    return pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA)


def test_outputs_on_s3_load_as_they_are(dag_run, seaweed, tmp_path):
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True)
    prefix = f"{BUCKET}/readers-{uuid.uuid4().hex[:6]}"
    fs.put(str(dag_run["store"]), prefix, recursive=True)  # the committed store, as a run on S3 leaves it
    options = {"key": os.environ["AWS_ACCESS_KEY_ID"], "secret": os.environ["AWS_SECRET_ACCESS_KEY"],
               "client_kwargs": {"endpoint_url": os.environ["AWS_ENDPOINT_URL"]}}
    polars_options = {"aws_access_key_id": options["key"], "aws_secret_access_key": options["secret"],
                      "aws_endpoint_url": os.environ["AWS_ENDPOINT_URL"], "aws_region": "us-east-1", "aws_allow_http": "true"}
    import datasets
    import polars as pl

    for folder, rows in _folders(dag_run["summary"])[::3]:  # a third of them: every kind of folder
        url = "s3://" + prefix + folder.removeprefix(str(dag_run["store"]))
        # datasets resolves `data_dir` as a local path; remote folders are given as `data_files`
        loaded = datasets.load_dataset(
            "parquet", data_files=f"{url}/*.parquet", split="train", storage_options=options, cache_dir=str(tmp_path / "hf")
        )
        assert loaded.num_rows == rows, url
        assert pl.scan_parquet(f"{url}/**/*.parquet", storage_options=polars_options).select(pl.len()).collect().item() == rows


def test_artifacts_are_inspected_verified_kept_and_collected(dag_run, tmp_path):
    words = dag_run["stages"]["words"]
    count_step = step_folder_of(words["output"])
    shown = _cli("inspect", count_step, "-n", "0")
    assert shown.exit_code == 0 and "counts-00000.json" in shown.output and "artifact(s)" in shown.output
    refused = _cli("inspect", count_step + "/artifacts")
    assert refused.exit_code == 1 and "artifacts, not documents" in refused.output

    store = tmp_path / "store"
    shutil.copytree(dag_run["store"], store)  # gc and damage on a copy
    artifact = Path(count_step.replace(str(dag_run["store"]), str(store))) / "artifacts" / "counts-00001.json"
    verify = _cli("verify", "--storage", str(store))
    assert verify.exit_code == 0, verify.output
    artifact.write_text(artifact.read_text().replace("}", ', "xx": 1}'))
    verify = _cli("verify", "--storage", str(store))
    assert verify.exit_code == 1 and "counts-00001.json is damaged" in verify.output
    from fineflow.manifest import StepLocation

    root, kind, step, fingerprint = str(store), *step_folder_of(words["output"]).split("/")[-3:]
    assert StepLocation(root, kind, step, fingerprint).intact_shards() == {0, 2}  # the cache check sees it

    from fineflow.gc import plan_gc

    kept = plan_gc(str(store), keep_last=1)
    assert not kept.removed_steps and (kind, step, fingerprint) in {s.key for s in kept.kept_steps}
    (store / "_runs" / dag_run["summary"]["run_id"] / "summary.json").unlink()  # the run is unfinished now ...
    (store / "_runs" / dag_run["summary"]["run_id"] / "config.yaml").write_text(yaml.safe_dump({"name": "other", "stages": [CRAWL]}))
    collected = plan_gc(str(store), keep_last=1)  # ... of another pipeline: nothing of this one is used
    assert (kind, step, fingerprint) in {s.key for s in collected.removed_steps}
    from fineflow.gc import execute

    execute(collected)
    assert not artifact.exists() and not artifact.parent.parent.exists()


def test_from_stage_recomputes_that_stage_and_its_descendants_only(dag_run, dask_address, tmp_path):
    summary = tmp_path / "again.json"
    result = _cli("run", str(dag_run["pipeline"]), "--storage", str(dag_run["store"]), "--dask-address", dask_address,
                  "--from-stage", "filter", "--summary-json", str(summary), cwd=dag_run["folder"])
    assert result.exit_code == 0, result.output
    stages = {s["name"]: s for s in json.loads(summary.read_text())["stages"]}
    for name in ("filter", "second-look"):
        assert stages[name]["cached_shards"] == 0, name
    for name in ("sample", "manpages", "dedup", "words"):  # the sibling branch and the ancestors: Cached
        assert stages[name]["cached_shards"] == stages[name]["shards"], name
    for name, stage in stages.items():
        assert stage["output"] == dag_run["stages"][name]["output"]


def test_a_document_in_two_inputs_of_a_union_is_an_error_naming_it_and_the_sibling_branch_commits(dag_run, dask_address, tmp_path):
    extra = str(dag_run["folder"] / "data" / "extra" / "*.warc.gz")
    stages = [
        {"stage": "crawl", "name": "a", "inputs": [extra], "extractor": "resiliparse"},
        {"stage": "crawl", "name": "b", "inputs": [extra], "extractor": "resiliparse"},
        {"stage": "dedup", "input": ["a", "b"]},
        {"stage": "dedup", "name": "solo", "input": "a", "url": False},  # a sibling branch: it still runs
    ]
    pipeline = _pipeline(tmp_path, stages)
    result = _cli("run", str(pipeline), "--storage", str(dag_run["store"]), "--dask-address", dask_address)
    assert result.exit_code == 1 and "share document id(s)" in result.output, result.output[-3000:]
    from fineflow.config import load_config
    from fineflow.manifest import read_manifest
    from fineflow.planning import plan_pipeline

    planned = {node.name: plans for node, plans in plan_pipeline(load_config(pipeline, storage_override=str(dag_run["store"])))}
    assert read_manifest(planned["solo"][-1].location.folder) is not None  # committed
    assert read_manifest(planned["dedup"][0].location.folder) is None  # never started


def test_a_failed_run_writes_its_summary_json_with_each_stage_status(tmp_path, dask_address):
    """Two branches fail before their shards run (a fan-in whose inputs type a column differently,
    a column no input has), one stage after them does not run, the others commit and are reported."""
    stages = [
        {"stage": "crawl", "name": "pages", "inputs": [str(EXAMPLES / "data" / "extra" / "*.warc.gz")], "extractor": "resiliparse"},
        {"stage": "tagword", "name": "counted", "input": "pages"},
        {"stage": "tagword", "name": "spelled", "input": "pages", "tag_type": "string"},
        {"stage": "dedup", "name": "both", "input": ["counted", "spelled"]},
        {"stage": "dedup", "name": "after", "input": "both"},
        {"stage": "tagword", "name": "misread", "input": "pages", "column": "nope"},
        {"stage": "dedup", "name": "solo", "input": "pages", "url": False},
    ]
    pipeline = _pipeline(tmp_path, stages, plugins=["tag_stage"], plugins_from=str(PLUGINS))
    store, summary = tmp_path / "store", tmp_path / "summary.json"
    result = _cli("run", str(pipeline), "--storage", str(store), "--dask-address", dask_address, "--summary-json", str(summary))
    assert result.exit_code == 1, result.output[-3000:]
    record = json.loads(summary.read_text())
    reported = {stage["name"]: stage for stage in record["stages"]}
    assert record["status"] == "failed" and list(reported) == [stage["name"] for stage in stages]
    assert {name: stage["status"] for name, stage in reported.items()} == {
        "pages": "done", "counted": "done", "spelled": "done", "both": "failed", "after": "not run", "misread": "failed", "solo": "done",
    }
    assert reported["both"]["error"] == (
        "InputSchemaError: stage both: column 'tag' is int64 in input counted but string in input spelled: "
        "a union needs one type per column (cast or rename it in one branch)"
    )
    assert reported["misread"]["error"].startswith("InputSchemaError: stage misread: column: input pages has no column 'nope' (its columns: id, ")
    from fineflow.manifest import read_manifest

    solo = reported["solo"]
    assert solo["docs_out"] > 0 and read_manifest(solo["output"]) is not None and solo["steps"][-1]["output"] == solo["output"]
    # the failed stages submitted no shard: only the committed stages have step folders
    assert len(list((store / "tagword" / "tag").glob("*/data"))) == 2
    assert [p.parent.name for p in (store / "dedup" / "remove").glob("*/data")] == [Path(step_folder_of(solo["output"])).name]
