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
from http_reply import reply
from llm_server import LlamaServer, kill_after_batches, require_server_python
from test_tokenize import REPO, documents, run_stage  # noqa: F401 (documents: a module fixture)

from fineflow import llm, storage
from fineflow.counters import merge_counts
from fineflow.tasks.quality.annotate import TooManyUnparsed, read_annotations

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
    """The annotate step's tasks' rows as one table (the sample's order) and their counters added up."""
    plan, results = steps["annotate"]
    table = read_annotations([plan.location.shard_url(n) for n in range(len(plan.shards))])
    return table, merge_counts(result["stats"] for result in results)


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
    # The grammar makes every answer a score by construction: what SmolLM2 would write unconstrained
    # (out of range, "9.2") varies with the CPU kernels llama.cpp was built with.
    # A stopped server refuses connections at once: generous limits keep a slow machine's answers in.
    config = annotate_stage(dying.base_url, 8, concurrency=1, retries=1, timeout_s=120, deadline_s=180,
                            answer_format="grammar")
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
    # grammar-constrained: every answer of SmolLM2 is a whole score from 0 to 5
    assert table["problem"].null_count == 16 and stats["annotated"] == 16
    assert set(table["score"].to_pylist()) <= {0.0, 1.0, 2.0, 3.0, 4.0, 5.0}


class _Garbage(http.server.BaseHTTPRequestHandler):
    status = 200
    body = b"<html>not an API</html>"
    seen = 0

    def do_POST(self):  # noqa: N802 (http.server's name)
        type(self).seen += 1
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        reply(self, self.status, self.body)

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
        # (concurrency 2: two tasks of 3 documents; the first to finish fails the step)
        with pytest.raises(TooManyUnparsed, match=r"3 of 3 answers \(task 1 of 2, 3 of the sample's 6\) have no readable "
                           r"score .*unreadable response"):
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


class _StandIn(http.server.BaseHTTPRequestHandler):
    """An OpenAI-compatible stand-in: ``answer(body) -> (status, text)``; no /models listing."""

    bodies: list

    def answer(self, body: dict) -> tuple[int, str]:
        raise NotImplementedError

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
        type(self).bodies.append(body)
        status, text = self.answer(body)
        data = json.dumps({"choices": [{"text": text, "message": {"content": text}, "finish_reason": "stop"}],
                           "usage": {"prompt_tokens": 10, "completion_tokens": 2}}).encode() if status == 200 else text.encode()
        reply(self, status, data)

    def log_message(self, *args):
        pass


def _stand_in(answer) -> type:
    return type("StandIn", (_StandIn,), {"answer": lambda self, body: answer(body), "bodies": []})


def test_answers_of_a_wrong_server_under_the_same_model_name_are_not_reused(server, documents, tmp_path):  # noqa: F811
    """A misconfigured endpoint serving another model as "smollm2" answers out of range; once the
    config points at the right server, its answers are asked again, not read from the cache,
    and `fineflow cache` shows and drops the wrong namespace."""
    from typer.testing import CliRunner

    from fineflow.cli import app

    wrong = _stand_in(lambda body: (200, " 9"))
    httpd, url = _serve(wrong)
    try:
        with pytest.raises(TooManyUnparsed, match="3 server answers are in the response cache"):
            run_stage(annotate_stage(url, 3), tmp_path, documents, "q")  # the first of two tasks fails the step
    finally:
        httpd.shutdown()
    assert len(wrong.bodies) == 3

    steps = run_stage(annotate_stage(server.base_url, 3, answer_format="grammar"), tmp_path, documents, "q")
    table, stats = annotations(steps)
    assert stats["llm_requests"] == 6 and stats["llm_cache_hits"] == 0
    assert table["problem"].null_count == 6

    runner = CliRunner(env={"COLUMNS": "250"})
    listed = runner.invoke(app, ["cache", "list", "--storage", str(tmp_path)])
    assert listed.exit_code == 0, listed.output
    spaces = sorted((tmp_path / "_cache" / "llm").iterdir())
    assert len(spaces) == 2 and all(space.name in listed.output for space in spaces)
    records = {space.name: json.loads((space / "namespace.json").read_text()) for space in spaces}
    assert {r["scheme"] for r in records.values()} == {llm.CACHE_SCHEME}
    (stale,) = [name for name, r in records.items() if r["reported"] is None]  # the stand-in lists no models
    assert records[next(n for n in records if n != stale)]["reported"]["id"] == "smollm2"
    refused = runner.invoke(app, ["cache", "drop", "--storage", str(tmp_path)])
    assert refused.exit_code == 2 and "explicit choice" in refused.output
    dropped = runner.invoke(app, ["cache", "drop", stale[:8], "--storage", str(tmp_path)])
    assert dropped.exit_code == 0 and "dropped 1 namespace" in dropped.output, dropped.output
    assert sorted(p.name for p in (tmp_path / "_cache" / "llm").iterdir()) == sorted(set(records) - {stale})


def test_a_document_the_server_refuses_is_rejected_alone_and_a_server_refusing_everything_fails(documents, tmp_path):  # noqa: F811
    require_server_python()  # the same CI-required group, though no model runs here
    long_first = {}

    def context_limit(body: dict) -> tuple[int, str]:
        # the first prompt seen stands for a document over the context: refused, as vLLM answers
        prompt = body["prompt"]
        long_first.setdefault("prompt", prompt)
        if prompt == long_first["prompt"]:
            return 400, '{"error": {"message": "This model\'s maximum context length is 2048 tokens"}}'
        return 200, " 2"

    httpd, url = _serve(_stand_in(context_limit))
    try:
        steps = run_stage(annotate_stage(url, 3), tmp_path / "a", documents, "q")
    finally:
        httpd.shutdown()
    table, stats = annotations(steps)
    problems = [p for p in table["problem"].to_pylist() if p]
    assert len(problems) == 1 and problems[0].startswith("refused (HTTP 400") and "context length" in problems[0]
    assert stats["annotated"] == 5 and stats["llm_refused"] == 1
    assert not any(p.startswith("refused") for p in _cached_answers(tmp_path / "a"))

    httpd, url = _serve(_stand_in(lambda body: (400, '{"error": "unknown parameter: seed"}')))
    try:
        with pytest.raises(llm.LLMError, match="the first 8 requests were all refused, none accepted"):
            run_stage(annotate_stage(url, 4, concurrency=1), tmp_path / "b", documents, "q")
    finally:
        httpd.shutdown()


def _cached_answers(root: Path) -> list[str]:
    return [a for f in (root / "_cache").rglob("batch-*.parquet") for a in pq.read_table(f)["answer"].to_pylist()]


def test_json_schema_constrained_answers_are_asked_for_and_read_back(documents, tmp_path):  # noqa: F811
    require_server_python()  # the same CI-required group, though no model runs here
    stand_in = _stand_in(lambda body: (200, json.dumps({"score": 4})))
    httpd, url = _serve(stand_in)
    try:
        config = annotate_stage(url, 2, answer_format="json_schema", endpoint="chat")
        del config["annotate"]["wrapper"], config["annotate"]["answer_prefix"]
        steps = run_stage(config, tmp_path, documents, "q")
    finally:
        httpd.shutdown()
    table, _ = annotations(steps)
    assert table["score"].to_pylist() == [4.0] * 4
    schema = stand_in.bodies[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["score"] == {"type": "integer", "minimum": 0, "maximum": 5}


def test_the_server_enters_fingerprints_and_cache_keys_but_a_loopback_port_does_not(documents, tmp_path):  # noqa: F811
    def fingerprint(**server) -> str:
        from fineflow.planning import plan_stage
        from fineflow.registry import validate_stage
        from fineflow.steps import Source, StageInputs

        config = validate_stage(annotate_stage(**server))
        plans = plan_stage(config, str(tmp_path), StageInputs((Source("docs", "f" * 20, str(documents), 3),)), "q")
        return next(p for p in plans if p.step == "annotate").fingerprint.value

    local = fingerprint(base_url="http://127.0.0.1:8080/v1", per_language=3)
    assert fingerprint(base_url="http://localhost:9999/v1", per_language=3) == local
    assert fingerprint(base_url="http://gpu-1.internal:8080/v1", per_language=3) != local
    assert fingerprint(base_url="http://gpu-1.internal:8080/v1", per_language=3) != fingerprint(
        base_url="http://gpu-2.internal:8080/v1", per_language=3)
    named = fingerprint(base_url="http://gpu-1.internal:8080/v1", per_language=3, identity="vllm smollm2-135m")
    assert fingerprint(base_url="http://gpu-2.internal:8000/v1", per_language=3, identity="vllm smollm2-135m") == named
    assert fingerprint(base_url="http://127.0.0.1:8080/v1", per_language=3, answer_format="grammar") != local


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


@pytest.mark.parametrize("field, value", [("timeout_s", float("inf")), ("deadline_s", float("nan")),
                                          ("temperature", float("inf")), ("max_tokens", 10**9), ("seed", 2**64)])
def test_server_numbers_are_finite_and_in_range(field, value):
    with pytest.raises(ValueError, match=field):
        llm.LLMServer(base_url="http://127.0.0.1:8080/v1", model="m", **{field: value})
