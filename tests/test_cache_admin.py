"""`fineflow cache list|drop` and `fineflow gc --cache-older-than-days` on response caches written
by fineflow.llm's ResponseCache (no server needed: the cache is written as a step writes it)."""

from __future__ import annotations

import json
import os
import time

from typer.testing import CliRunner

from fineflow import llm, storage
from fineflow.cli import app


def _namespace(root, model: str, base_url: str, answers: int, age_days: float = 0.0) -> str:
    server = llm.LLMServer(base_url=base_url, model=model)
    record = llm.namespace_record(server, "rate {text}")
    name = llm.namespace(server, "rate {text}")
    cache = llm.ResponseCache(storage.join(str(root), "_cache", "llm", name), flush_every=1000, record=record)
    for i in range(answers):
        cache.add(llm.text_key(f"text {i}"), f"Score: {i % 6}", 10, 2)
    cache.flush()
    folder = root / "_cache" / "llm" / name
    stamp = time.time() - age_days * 86400
    for file in folder.iterdir():
        os.utime(file, (stamp, stamp))
    return name


def _cli(*args: str):
    return CliRunner(env={"COLUMNS": "250"}).invoke(app, list(args), catch_exceptions=False)


def test_cache_list_shows_each_namespace_with_its_model_server_and_answers(tmp_path):
    fresh = _namespace(tmp_path, "smollm2", "http://127.0.0.1:8080/v1", 3)
    other = _namespace(tmp_path, "llama-70b", "http://gpu-1.internal:8000/v1", 5, age_days=40)
    listed = _cli("cache", "list", "--storage", str(tmp_path))
    assert listed.exit_code == 0, listed.output
    rows = {line.split("│")[2].strip(): line for line in listed.output.splitlines() if line.count("│") > 5}
    assert fresh in rows and other in rows
    assert "smollm2" in rows[fresh] and "http://loopback/v1" in rows[fresh] and " 3 " in rows[fresh]
    assert "gpu-1.internal:8000" in rows[other] and " 5 " in rows[other] and "40.0" in rows[other]
    record = json.loads((tmp_path / "_cache" / "llm" / fresh / "namespace.json").read_text())
    assert record["scheme"] == llm.CACHE_SCHEME and record["model"] == "smollm2"


def test_cache_drop_needs_a_criterion_and_removes_only_what_matches(tmp_path):
    keep = _namespace(tmp_path, "smollm2", "http://127.0.0.1:8080/v1", 2)
    wrong = _namespace(tmp_path, "smollm2", "http://10.0.0.9:8080/v1", 2)
    assert _cli("cache", "drop", "--storage", str(tmp_path)).exit_code == 2
    assert _cli("cache", "drop", "abc", "--storage", str(tmp_path)).exit_code == 2  # too short a name
    assert _cli("cache", "drop", "--model", "nobody", "--storage", str(tmp_path)).exit_code == 1
    dry = _cli("cache", "drop", "--server", "10.0.0.9", "--dry-run", "--storage", str(tmp_path))
    assert dry.exit_code == 0 and f"would drop llm/{wrong}" in dry.output
    assert (tmp_path / "_cache" / "llm" / wrong).exists()
    done = _cli("cache", "drop", "--server", "10.0.0.9", "--storage", str(tmp_path))
    assert done.exit_code == 0 and "dropped 1 namespace" in done.output
    assert sorted(p.name for p in (tmp_path / "_cache" / "llm").iterdir()) == [keep]


def test_gc_leaves_the_cache_alone_unless_asked_then_removes_stale_namespaces(tmp_path):
    fresh = _namespace(tmp_path, "smollm2", "http://127.0.0.1:8080/v1", 2, age_days=1)
    stale = _namespace(tmp_path, "old-model", "http://127.0.0.1:8080/v1", 2, age_days=90)
    plain = _cli("gc", "--storage", str(tmp_path))
    assert plain.exit_code == 0, plain.output
    assert {p.name for p in (tmp_path / "_cache" / "llm").iterdir()} == {fresh, stale}
    dry = _cli("gc", "--storage", str(tmp_path), "--cache-older-than-days", "30", "--dry-run")
    assert dry.exit_code == 0 and f"would remove {tmp_path}/_cache/llm/{stale}" in dry.output.replace("\n", "")
    done = _cli("gc", "--storage", str(tmp_path), "--cache-older-than-days", "30")
    assert done.exit_code == 0 and "1 cache namespace(s)" in done.output
    assert {p.name for p in (tmp_path / "_cache" / "llm").iterdir()} == {fresh}
