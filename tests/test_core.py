"""Fingerprints, storage atomicity, manifests and config validation."""

from __future__ import annotations

import os

import pytest

from fineflow import storage
from fineflow.config import ConfigError, load_config, parse_config
from fineflow.fingerprint import file_content_hash, step_fingerprint
from fineflow.manifest import StepLocation, committed_files, write_manifest


def _fp(**overrides):
    args = dict(stage="crawl", step="extract", step_version="1", params={"a": 1}, inputs={"files": ["x"]})
    args.update(overrides)
    return step_fingerprint(**args)


def test_fingerprint_changes_with_each_part_and_names_it():
    base = _fp()
    assert _fp().value == base.value
    for change, expected in [
        (dict(params={"a": 2}), "params.a"),
        (dict(step_version="2"), "code.step"),
        (dict(inputs={"files": ["y"]}), "inputs.files"),
        (dict(resources={"model": "h"}), "code.resources.model"),
    ]:
        other = _fp(**change)
        assert other.value != base.value
        assert expected in other.changed_components(base.components)


def test_content_hash_ignores_mtime_and_follows_content(tmp_path):
    path = tmp_path / "in.warc.gz"
    path.write_bytes(b"abc")
    first = file_content_hash(str(path), memo_root=str(tmp_path / "store"))
    os.utime(path, (1, 1))  # touched, same content: same fingerprint input
    assert file_content_hash(str(path), memo_root=str(tmp_path / "store")) == first
    path.write_bytes(b"abd")
    assert file_content_hash(str(path), memo_root=str(tmp_path / "store"))["blake2b"] != first["blake2b"]


def test_atomic_local_write_leaves_no_temporary_files(tmp_path):
    target = str(tmp_path / "a" / "part-00000.parquet")
    storage.write_bytes(target, b"one")
    storage.write_bytes(target, b"two")
    assert storage.read_bytes(target) == b"two"
    assert os.listdir(tmp_path / "a") == ["part-00000.parquet"]


def test_readers_trust_only_the_manifest(tmp_path):
    location = StepLocation(str(tmp_path), "crawl", "extract", "f" * 20)
    storage.write_bytes(location.shard_url(0), b"x")
    with pytest.raises(FileNotFoundError):
        committed_files(location.folder)  # shards exist, but the step never committed
    result = {"shard": 0, "output": {"file": "part-00000.parquet", "rows": 1, "bytes": 1, "sha256": "0"}, "rejects": None}
    write_manifest(location, {"k": 1}, [result])
    storage.write_bytes(location.shard_url(1), b"stray")  # e.g. a concurrent or crashed writer
    assert committed_files(location.folder) == [location.shard_url(0)]


def _config(**crawl):
    return {"name": "t", "stages": [{"stage": "crawl", "inputs": ["x.warc.gz"], **crawl}]}


def test_invalid_config_names_the_key_and_reason():
    with pytest.raises(ConfigError, match=r"stages\.0\.extractor: Input should be 'trafilatura', 'resiliparse' or 'justext'"):
        parse_config(_config(extractor="lynx"))
    with pytest.raises(ConfigError, match=r"stages\.0\.shard_byte: Extra inputs are not permitted"):
        parse_config(_config(shard_byte=5))
    with pytest.raises(ConfigError, match=r"stages\.0: Input tag 'nonsense' found using 'stage'"):
        parse_config({"name": "t", "stages": [{"stage": "nonsense"}]})
    with pytest.raises(ConfigError, match=r"stages: List should have at least 1 item"):
        parse_config({"name": "t", "stages": []})


def test_inputs_resolve_relative_to_the_pipeline_file(tmp_path):
    (tmp_path / "p.yaml").write_text("name: t\nstages:\n  - stage: crawl\n    inputs: [data/*.warc.gz]\n")
    config = load_config(tmp_path / "p.yaml", storage_override=str(tmp_path / "out"))
    assert config.stages[0].inputs == [str(tmp_path / "data" / "*.warc.gz")]
    assert config.storage == str(tmp_path / "out")
