"""LLM annotation against a real OpenAI-compatible server: llama.cpp's, serving SmolLM2-135M
(tests/llm_server.py). SmolLM2's judgements are poor: these tests assert the plumbing (what is
asked, cached, retried, recorded), never the quality of the scores. CI-sized: at most 16
documents of at most 400 characters, 3 answer tokens each."""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml
from llm_server import LlamaServer, kill_after_batches, require_server_python
from test_tokenize import REPO, documents, run_stage  # noqa: F401 (documents: a module fixture)

from fineflow import llm, storage
from fineflow.tasks.quality.annotate import TooManyUnparsed

WRAPPER = str(REPO / "examples" / "prompts" / "smollm2-chatml.txt")


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    require_server_python()
    running = LlamaServer(tmp_path_factory.mktemp("llama") / "server.log").start()
    yield running
    running.stop()


def annotate_stage(base_url: str, per_language: int, **server) -> dict:
    """Annotation of `per_language` English and German pages; the classifier needs no LLM labels
    (only the annotate step is under test here)."""
    return {
        "stage": "quality",
        "annotate": {
            "server": {"base_url": base_url, "model": "smollm2", "endpoint": "completions", "max_tokens": 3,
                       "concurrency": 2, "flush_every": 2, **server},
            "prompt": "edu", "wrapper": WRAPPER, "answer_prefix": "Score: ",
            "sample_size": per_language, "languages": ["en", "de"], "max_chars": 400,
        },
        "classifiers": {"ref": {"labels": {"positives": {"url": r"debian-handbook\.info"}, "negatives": {"rest": True}},
                                "fasttext": {"epoch": 5, "bucket": 1000}}},
        "scorers": {"ref": {"trained": "ref"}},
    }


def annotations(steps: dict):
    plan, results = steps["annotate"]
    return pq.read_table(plan.location.shard_url(0)), results[0]["stats"]


def test_annotation_end_to_end_and_an_overlapping_sample_asks_only_new_documents(server, documents, tmp_path):  # noqa: F811
    first = run_stage(annotate_stage(server.base_url, 3), tmp_path, documents, "q")
    table, stats = annotations(first)
    assert table.num_rows == 6 and sorted(set(table["language"].to_pylist())) == ["de", "en"]
    assert stats["llm_requests"] == 6 and stats["llm_cache_hits"] == 0
    assert stats["llm_prompt_tokens"] > 6 * 100 and stats["llm_requests_per_s"] > 0
    for score, problem, answer in zip(*(table[c].to_pylist() for c in ("score", "problem", "answer"))):
        assert (score is None) != (problem is None)  # a score, or the reason there is none
        assert answer is not None
        if score is not None:
            assert 0 <= score <= 5
    assert stats["annotated"] + sum(stats["unparsed"].values()) == 6

    # A larger sample with the same seed holds the first: a new fingerprint (not Prefect-Cached),
    # but the server is asked only about the 2 new documents.
    second = run_stage(annotate_stage(server.base_url, 4), tmp_path, documents, "q")
    assert second["annotate"][0].fingerprint.value != first["annotate"][0].fingerprint.value
    table2, stats2 = annotations(second)
    assert table2.num_rows == 8 and set(table["id"].to_pylist()) < set(table2["id"].to_pylist())
    assert stats2["llm_requests"] == 2 and stats2["llm_cache_hits"] == 6
    same = {i: s for i, s in zip(table["id"].to_pylist(), table["answer"].to_pylist())}
    assert all(same[i] == a for i, a in zip(table2["id"].to_pylist(), table2["answer"].to_pylist()) if i in same)


def test_a_server_killed_mid_step_fails_the_step_and_a_rerun_asks_only_the_rest(documents, tmp_path):  # noqa: F811
    log = tmp_path / "server.log"
    dying = LlamaServer(log).start()
    config = annotate_stage(dying.base_url, 8, concurrency=1, retries=1, timeout_s=10, deadline_s=15)
    # what is under test is the cache across a dying server, not SmolLM2's scores (how many it
    # writes out of range varies with the CPU kernels llama.cpp was built with)
    config["annotate"]["max_unparsed_share"] = 1.0
    cache = tmp_path / "_cache" / "llm"

    killer = kill_after_batches(dying, cache)
    with pytest.raises(llm.LLMError, match="gave up after 2 attempts|no answer within the deadline"):
        run_stage(config, tmp_path, documents, "q")
    killer.join()
    flushed = sum(pq.read_table(f).num_rows for f in cache.rglob("batch-*.parquet"))
    assert 4 <= flushed < 16

    restarted = LlamaServer(log, port=dying.port).start()
    try:
        steps = run_stage(config, tmp_path, documents, "q")
    finally:
        restarted.stop()
    table, stats = annotations(steps)
    assert table.num_rows == 16
    assert stats["llm_cache_hits"] == flushed and stats["llm_requests"] == 16 - flushed


class _Garbage(http.server.BaseHTTPRequestHandler):
    status = 200
    body = b"<html>not an API</html>"
    seen = 0

    def do_POST(self):  # noqa: N802 (http.server's name)
        type(self).seen += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(self.status)
        self.send_header("Content-Length", str(len(self.body)))
        self.end_headers()
        self.wfile.write(self.body)

    def log_message(self, *args):
        pass


def _serve(handler: type) -> tuple[http.server.HTTPServer, str]:
    httpd = http.server.HTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/v1"


def test_a_server_answering_garbage_or_errors_or_down_fails_clearly(documents, tmp_path):  # noqa: F811
    require_server_python()  # the same CI-required group, though no model runs here
    garbage = type("Garbage", (_Garbage,), {})
    httpd, url = _serve(garbage)
    try:
        with pytest.raises(TooManyUnparsed, match=r"6 of 6 answers have no readable score .*unreadable response"):
            run_stage(annotate_stage(url, 3), tmp_path / "a", documents, "q")
        assert not list((tmp_path / "a" / "_cache").rglob("batch-*.parquet"))  # garbage is never cached
    finally:
        httpd.shutdown()

    failing = type("Failing", (_Garbage,), {"status": 503, "body": b"overloaded"})
    httpd, url = _serve(failing)
    try:
        started = time.monotonic()
        with pytest.raises(llm.LLMError, match="gave up after 3 attempts; last: HTTP 503"):
            run_stage(annotate_stage(url, 1, retries=2, concurrency=1), tmp_path / "b", documents, "q")
        # Both documents were in flight (the window is twice the concurrency): three attempts each, then stop.
        assert failing.seen == 6 and time.monotonic() - started < 30
    finally:
        httpd.shutdown()

    refused = type("Refused", (_Garbage,), {"status": 404, "body": b'{"error": "model not found"}'})
    httpd, url = _serve(refused)
    try:
        with pytest.raises(llm.LLMError, match="refused the request .*HTTP 404"):
            run_stage(annotate_stage(url, 1), tmp_path / "c", documents, "q")
        assert refused.seen <= 2  # a 4xx is not retried (one request per document in flight)
    finally:
        httpd.shutdown()

    down = f"http://127.0.0.1:{_free_port()}/v1"
    with pytest.raises(llm.LLMError, match="ConnectError"):
        run_stage(annotate_stage(down, 1, retries=1, deadline_s=10), tmp_path / "d", documents, "q")


def _free_port() -> int:
    from llm_server import free_port

    return free_port()


@pytest.mark.integration
def test_fineweb_edu_preset_with_a_key_from_a_prefect_secret_block(prefect_api, dask_address, tmp_path):
    """The FineWeb-Edu preset through Prefect + Dask on the demo sample, against a server that
    wants an API key, which only a Prefect Secret block holds: the report shows the classifier's
    held-out agreement with the LLM labels; the key appears in no artifact."""
    from prefect.blocks.system import Secret
    from test_pipeline_integration import run_pipeline

    from fineflow.report import load_summary

    key = f"sk-test-{uuid.uuid4().hex}"
    Secret(value=key).save("test-llm-key", overwrite=True)
    protected = LlamaServer(tmp_path / "server.log", api_key=key).start()
    try:
        preset = yaml.safe_load((REPO / "examples" / "quality-fineweb-edu.yaml").read_text())
        quality = preset["stages"][-1]
        quality["annotate"]["server"].update(base_url=protected.base_url, api_key_block="test-llm-key", api_key_env=None)
        quality["annotate"]["wrapper"] = WRAPPER
        quality["annotate"]["sample_size"] = 4  # 4 languages x 4: 16 documents
        quality["annotate"]["max_chars"] = 400
        preset["stages"][0]["inputs"] = [str(REPO / "examples" / "data" / "*.warc.gz")]
        pipeline = tmp_path / "quality-fineweb-edu.yaml"
        pipeline.write_text(yaml.safe_dump(preset))
        summary = run_pipeline(pipeline, str(tmp_path / "store"), dask_address, tmp_path)
    finally:
        protected.stop()
    edu = summary["stages"][-1]
    assert edu["annotation"]["documents"] == 16 and edu["annotation"]["llm_requests"] == 16
    evaluation = edu["classifiers"]["edu"]
    assert evaluation["held_out"] >= 1 and evaluation["trained_on"] + evaluation["held_out"] <= 16
    assert "spearman" in evaluation and "f1" in evaluation
    decide = next(s for s in edu["steps"] if s["step"] == "decide")
    assert decide["docs_in"] == edu["docs_in"] and set(decide.get("drop_reasons", {})) <= {"quality:edu"}
    run_folder = storage.join(str(tmp_path / "store"), "_runs", summary["run_id"])
    report = Path(run_folder, "report.html").read_text()
    assert "held-out agreement" in report and "quality-classifiers" in report
    assert load_summary(run_folder)["stages"][-1]["classifiers"]["edu"]["held_out"] == evaluation["held_out"]
    for path in (tmp_path / "store").rglob("*"):
        if path.is_file() and path.stat().st_size < 50_000_000:
            assert key.encode() not in path.read_bytes(), path
    assert key not in json.dumps(summary)
