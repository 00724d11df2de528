"""``fineflow export``: a committed step's documents as a Hugging Face dataset folder that
``datasets`` loads by config, with a card ``huggingface_hub`` parses. Documents are committed
in-process (no flow); the demo's own export is checked in test_pipeline_integration."""

from __future__ import annotations

import io
import json
import random
import re
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from conftest import BUCKET, REPO
from fineflow import storage
from fineflow.documents import DOCUMENT_SCHEMA, commit_shard
from fineflow.export.columns import project, release_schema, select
from fineflow.export.options import ExportOptions
from fineflow.export.release import MARKER, export_release
from fineflow.export.source import ExportError
from fineflow.manifest import StepLocation, write_manifest

LANGUAGES = {"de": 23, "en": 41, "sr-Latn": 9}  # documents per language
CC = "s3://commoncrawl/crawl-data/CC-MAIN-2024-10/segments/17/warc/CC-MAIN-20240220-00{:03d}.warc.gz"


def documents(seed: int = 0) -> pa.Table:
    """Documents of three languages, with fineflow's columns, a token count and a provenance column."""
    rng = random.Random(seed)
    vocabulary = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9))) for _ in range(5000)]
    rows = []
    for language, count in LANGUAGES.items():
        for k in range(count):
            local = rng.random() < 0.3
            path = f"/data/sample-{k}.warc.gz" if local else CC.format(k)
            rows.append({
                "id": uuid.UUID(int=rng.getrandbits(128)).hex, "url": f"https://{language}.example/{k}",
                "text": f"{language} {k} " + " ".join(rng.choices(vocabulary, k=rng.randint(50, 3000))), "language": language,
                "language_score": rng.random(), "source": f"{path}@{rng.randint(0, 10**6)}",
                "crawl_date": datetime(2024, 2, 20, tzinfo=timezone.utc) + timedelta(seconds=rng.randint(0, 10**6), microseconds=7),
                "warc_record_id": f"<urn:uuid:{uuid.UUID(int=rng.getrandbits(128))}>", "content_type": "text/html", "charset": "utf-8",
            })
    rng.shuffle(rows)
    table = pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA)
    tokens = pa.array([len(text.split()) for text in table["text"].to_pylist()], pa.int64())
    return table.append_column("n_tokens_gpt2", tokens).append_column("dup_cluster_size", pa.array([1] * table.num_rows, pa.int32()))


def commit_step(root: str, table: pa.Table, shards: int = 3, fingerprint: str = "a" * 20) -> str:
    """``table`` committed as a step's shards with its manifest, as a stage's document step commits them."""
    location = StepLocation(root, "stage", "step", fingerprint)
    size = -(-table.num_rows // shards)
    results = [commit_shard(i, location.shard_url(i), table.slice(i * size, size)) for i in range(shards)]
    write_manifest(location, {"test": True}, results)
    return location.data_folder


def load(folder: str, config: str, cache: Path):
    from datasets import load_dataset

    return load_dataset(folder, config, split="train", cache_dir=str(cache))


def check_card(folder: str, configs: list[str]) -> None:
    """The card parses as a dataset card, and its configs are what ``datasets`` reads."""
    from datasets.utils.metadata import MetadataConfigs
    from huggingface_hub import DatasetCard

    card = DatasetCard(storage.read_bytes(storage.join(folder, "README.md")).decode())
    found = MetadataConfigs.from_dataset_card_data(card.data)
    assert sorted(found) == sorted(configs)
    for name, config in found.items():
        MetadataConfigs._raise_if_data_files_field_not_valid(config)
        assert config["data_files"] == [{"split": "train", "path": f"data/{name}/train-*"}]
    assert card.data.license == "odc-by" and card.data.size_categories == ["n<1K"]
    assert card.data.language == sorted({c.split("-")[0] for c in configs})


def shard_files(folder: str) -> dict[str, list[str]]:
    data = storage.join(folder, "data")
    return {config: sorted(storage.list_names(storage.join(data, config))) for config in storage.list_names(data)}


def test_fineweb_columns_are_derived_from_fineflows():
    table = documents()
    columns = select(table.schema, None)
    names = [column.name for column in columns]
    assert names[:9] == ["text", "id", "dump", "url", "date", "file_path", "language", "language_score", "token_count"]
    assert "crawl_date" not in names and "n_tokens_gpt2" not in names  # replaced by date and token_count
    assert {"source", "warc_record_id", "dup_cluster_size"} <= set(names)
    released = project(table, columns, release_schema(columns)).to_pylist()
    for row, original in zip(released, table.to_pylist()):
        path = original["source"].rsplit("@", 1)[0]
        assert row["file_path"] == path
        assert row["dump"] == ("CC-MAIN-2024-10" if path.startswith("s3://commoncrawl/") else None)
        assert row["date"] == original["crawl_date"].strftime("%Y-%m-%dT%H:%M:%SZ")
        assert row["token_count"] == original["n_tokens_gpt2"]
    with pytest.raises(ValueError, match="no column nope"):
        select(table.schema, ["text", "nope"])


def test_export_loads_each_config_and_re_export_leaves_no_stale_shard(tmp_path):
    table = documents()
    source = commit_step(str(tmp_path / "store"), table)
    folder = str(tmp_path / "release")
    options = ExportOptions(to=folder, license="odc-by", shard_bytes=40_000)
    release = export_release(source, options, str(tmp_path / "store"))
    configs = sorted(LANGUAGES)
    assert [plan.name for plan in release.configs] == configs and release.rows == table.num_rows
    check_card(folder, configs)
    files = shard_files(folder)
    assert sorted(files) == configs
    for plan in release.configs:
        names = files[plan.name]
        assert names == [f"train-{i:05d}-of-{plan.shards:05d}.parquet" for i in range(plan.shards)]
        sizes = [storage.size(storage.join(folder, "data", plan.name, name)) for name in names]
        assert max(sizes) < 3 * 40_000, sizes  # sized from the committed files' bytes
    assert max(plan.shards for plan in release.configs) > 1
    for config in configs:
        loaded = load(folder, config, tmp_path / "cache")
        expected = table.filter(pc.equal(table["language"], config))
        assert loaded["id"] == expected["id"].to_pylist()  # exactly its documents, in their order
        assert loaded["token_count"] == expected["n_tokens_gpt2"].to_pylist()
    card = storage.read_bytes(storage.join(folder, "README.md")).decode()
    assert "a" * 20 in card and f"{sum(len(t.split()) for t in table['text'].to_pylist()):,}" in card

    # The same export again: nothing rewritten. Larger shards: fewer files, none of the old ones left.
    before = {name: storage.modified(storage.join(folder, "data", "en", name)) for name in files["en"]}
    assert export_release(source, options, str(tmp_path / "store")).up_to_date
    assert {name: storage.modified(storage.join(folder, "data", "en", name)) for name in files["en"]} == before
    bigger = export_release(source, options.model_copy(update={"shard_bytes": 10**9, "config_by": "none"}), str(tmp_path / "store"))
    assert shard_files(folder) == {"default": ["train-00000-of-00001.parquet"]}
    assert load(folder, "default", tmp_path / "cache")["id"] == table["id"].to_pylist() and bigger.rows == table.num_rows
    marker = json.loads(storage.read_bytes(storage.join(folder, MARKER)))
    assert sorted(f["path"] for f in marker["files"]) == ["README.md", "data/default/train-00000-of-00001.parquet"]


def test_export_to_s3_loads_with_data_files(seaweed, tmp_path):
    from datasets import load_dataset

    table = documents(seed=1)
    root = f"s3://{BUCKET}/export-{uuid.uuid4().hex[:8]}"
    source = commit_step(root, table, fingerprint="b" * 20)
    folder = f"{root}/release"
    release = export_release(source, ExportOptions(to=folder, license="odc-by", shard_rows=10, columns=["text", "id", "language"]), root)
    check_card(folder, sorted(LANGUAGES))
    options = {"key": seaweed.access_key, "secret": seaweed.secret_key, "client_kwargs": {"endpoint_url": seaweed.endpoint}}
    for plan in release.configs:
        loaded = load_dataset("parquet", data_files=f"{folder}/data/{plan.name}/train-*.parquet", split="train",
                              storage_options=options, cache_dir=str(tmp_path / "cache"))
        expected = table.filter(pc.equal(table["language"], plan.name))
        assert loaded.column_names == ["text", "id", "language"]
        assert loaded["id"] == expected["id"].to_pylist() and plan.shards == -(-expected.num_rows // 10)
    for file in release.files:  # at most --shard-rows documents in a shard, as the marker and the file say
        if file.path.startswith("data/"):
            assert 0 < file.rows <= 10 and pq.read_metadata(io.BytesIO(storage.read_bytes(f"{folder}/{file.path}"))).num_rows == file.rows


def test_one_line_errors(tmp_path):
    from fineflow.cli import app

    root = tmp_path / "store"
    source = commit_step(str(root), documents())
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("not an export")
    stats = StepLocation(str(root), "stage", "stats", "c" * 20)  # a step with artifacts only: no documents
    write_manifest(stats, {}, [{"shard": 0, "output": None, "stats": {}}])

    def fails(*args: str) -> str:
        result = CliRunner().invoke(app, ["export", *args], catch_exceptions=False)
        assert result.exit_code != 0
        lines = [line for line in result.output.splitlines() if line.strip()]
        assert len(lines) == 1, result.output
        return re.sub(r"\s+", " ", lines[0])

    assert "holds files that no fineflow export wrote (notes.txt)" in fails(source, "--to", str(tmp_path / "mine"))
    assert "no run 'nope'" in fails("nope", "--storage", str(root), "--to", str(tmp_path / "out"))
    assert "has no document output" in fails(stats.folder, "--to", str(tmp_path / "out"))
    assert "--shard-bytes" in fails(source, "--to", str(tmp_path / "out"), "--shard-bytes", "10")
    assert "--license" in fails(source, "--to", str(tmp_path / "out"), "--license", "CC BY 4.0")
    assert "no column nope" in fails(source, "--to", str(tmp_path / "out"), "--columns", "text,nope")
    assert "--config-by language_score" in fails(source, "--to", str(tmp_path / "out"), "--config-by", "language_score")
    assert not (tmp_path / "out").exists()  # nothing written by a refused export
    with pytest.raises(ExportError, match="neither a finished run's folder"):
        export_release(str(tmp_path / "mine"), ExportOptions(to=str(tmp_path / "out")), str(root))


def test_a_pipelines_export_folder_is_checked_before_its_run(workdir, tmp_path):
    from fineflow.config import load_config
    from fineflow.export.release import release_url
    from fineflow.preflight import PreflightError, preflight

    demo = (workdir / "demo.yaml").read_text()
    config = load_config(workdir / "demo.yaml", storage_override=str(tmp_path / "store"))
    assert release_url(config.export, config.storage) == str(tmp_path / "store" / "release")  # the demo's: in its storage
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "notes.txt").write_text("not an export")
    (workdir / "demo.yaml").write_text(demo.replace("to: release", f"to: {tmp_path / 'foreign'}"))
    with pytest.raises(PreflightError, match=r"^export.to: .*foreign holds files that no fineflow export wrote \(notes.txt\)"):
        preflight(load_config(workdir / "demo.yaml", storage_override=str(tmp_path / "store")))


def test_a_pipeline_with_several_final_stages_must_name_the_one_to_export(tmp_path):
    """Told when the config is read, not after the whole run (the export takes the one stage no other reads)."""
    import yaml

    from fineflow.config import ConfigError, load_config

    (tmp_path / "data").mkdir()
    sample = next((REPO / "examples" / "data").glob("*.warc.gz"))
    (tmp_path / "data" / sample.name).write_bytes(sample.read_bytes())
    two = {"name": "two", "storage": "./store", "stages": [
        {"stage": "crawl", "name": "a", "inputs": ["data/*.warc.gz"]},
        {"stage": "crawl", "name": "b", "inputs": ["data/*.warc.gz"]}]}
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump({**two, "export": {"to": "release"}}))
    with pytest.raises(ConfigError, match=r"export: the pipeline ends in 2 stages \(a, b\): name the one"):
        load_config(path)
    path.write_text(yaml.safe_dump({**two, "export": {"to": "release", "stage": "b"}}))
    assert load_config(path).export.stage == "b"


def test_configs_by_several_columns_one_per_combination(tmp_path):
    from datasets import load_dataset

    table = documents()
    level = pa.array([k % 3 for k in range(table.num_rows)], pa.int64())
    kind = pa.array(["synthetic" if k % 4 == 0 else "actual" for k in range(table.num_rows)], pa.string())
    table = table.append_column("quality_level", level).append_column("kind", kind)
    source = commit_step(str(tmp_path / "store"), table)
    folder = tmp_path / "release"
    options = ExportOptions.model_validate({"to": str(folder), "config_by": ["quality_level", "kind"]})
    assert options.config_by == "quality_level,kind"
    release = export_release(source, options, str(tmp_path / "store"))
    expected = {(lv, kd): 0 for lv in range(3) for kd in ("actual", "synthetic")}
    for lv, kd in zip(level.to_pylist(), kind.to_pylist()):
        expected[(lv, kd)] += 1
    assert {plan.name: plan.rows for plan in release.configs} == {f"quality_level-{lv}.kind-{kd}": n for (lv, kd), n in expected.items()}
    loaded = load_dataset(str(folder), "quality_level-2.kind-synthetic", split="train")
    rows = table.to_pylist()
    assert sorted(loaded["id"]) == sorted(r["id"] for r in rows if r["quality_level"] == 2 and r["kind"] == "synthetic")
    with pytest.raises(ValueError, match="named twice"):
        ExportOptions.model_validate({"config_by": ["kind", "kind"]})
