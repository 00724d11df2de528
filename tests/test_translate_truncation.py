"""Truncated translations are caught (issue #28): fineflow.llm reads ``finish_reason`` and keeps it
in the response cache, a request's own ``max_tokens`` keys its cache entry (scheme-2 namespaces
keep their digests), and the translate stage derives each segment's budget, retries a cut
segment once with twice the room and rejects one still cut as ``translate:truncated``: with a
stand-in OpenAI server whose answers are planted, the tiny CTranslate2 model, and llama.cpp's
server on SmolLM2."""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from http_reply import reply
from pydantic import ValidationError
from test_translate import run, table_of, totals, write_documents
from test_translate_refusals import rejects_by_id

from fineflow import llm, registry
from fineflow.tasks.translate import budget
from fineflow.tasks.translate.plan import model_identity
from fineflow.tasks.translate.segment import segment_document, segments

FRENCH = "Le système fonctionne très bien sur ce serveur et les paquets sont installés correctement."
NEED = re.compile(r"NEED(\d+)")


class PlantedOpenAI:
    """``/v1/chat/completions`` and ``/v1/completions``: an answer "needs" the tokens a ``NEED<n>``
    in its prompt says (else 10); under a ``max_tokens`` below that it is cut, ``finish_reason``
    "length" (``reason`` overrides what a whole answer says; None leaves the field out)."""

    def __init__(self, reason: str | None = "stop") -> None:
        self.bodies: list[dict] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.bodies.append(body)
                prompt = body["messages"][0]["content"] if "messages" in body else body["prompt"]
                found = NEED.search(prompt)
                need = int(found.group(1)) if found else 10
                cut = body["max_tokens"] < need
                text = FRENCH[: max(1, len(FRENCH) * body["max_tokens"] // need)] if cut else FRENCH
                choice = {"message": {"role": "assistant", "content": text}} if "messages" in body else {"text": text}
                if cut or reason is not None:
                    choice["finish_reason"] = "length" if cut else reason
                usage = {"prompt_tokens": 20, "completion_tokens": min(need, body["max_tokens"])}
                reply(self, 200, json.dumps({"choices": [choice], "usage": usage}).encode())

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def limits(self) -> list[int]:
        return [body["max_tokens"] for body in self.bodies]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def planted():
    server = PlantedOpenAI()
    yield server
    server.close()


# -- fineflow.llm ---------------------------------------------------------------------------------

@pytest.mark.parametrize("endpoint", ["chat", "completions"])
def test_finish_reason_is_read_from_chat_and_completions_answers(endpoint):
    for reason, expected in (("stop", "stop"), (None, None)):
        server = PlantedOpenAI(reason)
        try:
            config = llm.LLMServer(base_url=server.base_url, model="m", endpoint=endpoint, max_tokens=50)
            with llm.LLMClient(config, api_key="") as client:
                whole, cut = client.ask("translate NEED20"), client.ask("translate NEED80")
                assert whole.finish_reason == expected and not whole.truncated and whole.text == FRENCH
                assert cut.finish_reason == "length" and cut.truncated and len(cut.text or "") < len(FRENCH)
                assert client.stats.as_dict()["llm_truncated"] == 1
        finally:
            server.close()


def test_a_request_with_its_own_max_tokens_is_sent_with_it_and_cached_under_its_own_key(planted, tmp_path):
    config = llm.LLMServer(base_url=planted.base_url, model="m", max_tokens=30)
    key = llm.text_key("some text")
    with llm.LLMClient(config, api_key="") as client:
        cache = client.cache(str(tmp_path), "t {text}")
        answers = client.ask_all([(key, "NEED40 a"), ("k8", "NEED40 b", 8), ("k80", "NEED40 c", 80)], cache)
    assert sorted(planted.limits()) == [8, 30, 80]  # the server's max_tokens, unless the request sets its own
    assert answers[key].truncated and answers["k8"].truncated and not answers["k80"].truncated
    # The server's own limit is the namespace's (a bare key); a request's own is in the entry's key.
    assert cache.get(key).finish_reason == "length"
    assert cache.get("k8:max_tokens=8").finish_reason == "length" and cache.get("k8") is None
    assert cache.get(llm.entry_key("k80", 80)) == (FRENCH, 20, 40, "stop")
    with pytest.raises(ValueError, match="max_tokens 0"):
        llm.LLMClient(config, api_key="").ask("x", max_tokens=0)


def test_finish_reason_survives_the_cache_and_old_batch_files_read_as_unknown(planted, tmp_path):
    config = llm.LLMServer(base_url=planted.base_url, model="m", max_tokens=30)
    items = [("cut", "NEED40 a"), ("whole", "NEED10 b")]
    with llm.LLMClient(config, api_key="") as client:
        client.ask_all(items, client.cache(str(tmp_path), "t {text}"))
    sent = len(planted.bodies)
    with llm.LLMClient(config, api_key="") as client:
        again = client.ask_all(items, client.cache(str(tmp_path), "t {text}"))
        assert client.stats.as_dict()["llm_truncated"] == 1 and client.stats.cache_hits == 2
    assert len(planted.bodies) == sent  # nothing asked again
    assert again["cut"].cached and again["cut"].truncated and again["cut"].finish_reason == "length"
    assert again["whole"].finish_reason == "stop" and not again["whole"].truncated
    # A batch file written before the column existed still reads, its finish reasons unknown.
    folder = tmp_path / "old"
    folder.mkdir()
    old = pa.table({"key": ["a"], "answer": ["x"], "prompt_tokens": [1], "completion_tokens": [2]})
    pq.write_table(old, folder / "batch-20240101T000000-000000000000.parquet")
    cache = llm.ResponseCache(str(folder))
    assert cache.get("a") == ("x", 1, 2, None)
    cache.add("b", "y", 3, 4, "length")
    cache.flush()
    assert llm.ResponseCache(str(folder)).get("b").finish_reason == "length"
    assert llm.ResponseCache(str(folder)).get("a").finish_reason is None


def test_scheme_2_namespace_digests_are_unchanged():
    """Digests computed before #28: extending the scheme must not re-key an existing namespace
    (annotate's, with a fixed max_tokens, or the default one)."""
    server = llm.LLMServer(base_url="http://127.0.0.1:8080/v1", model="smollm2", max_tokens=8, endpoint="completions",
                           answer_format="grammar")
    form = llm.AnswerForm(grammar="root ::= [0-5]", json_schema={"type": "object"}, from_json=str)
    assert llm.namespace(server, "Score this: {text}", {"id": "smollm2", "object": "model"}, form) == "3d545ce1b23f6432906c0a27"
    default = llm.LLMServer(base_url="https://api.example.com/v1", model="m")
    assert llm.namespace(default, "t") == "a968cd66bf0965ee36b1a7c2"
    assert default.decoding()["max_tokens"] == llm.DEFAULT_MAX_TOKENS == 16
    assert llm.namespace_record(default, "t")["scheme"] == 2


# -- the translate stage --------------------------------------------------------------------------

def openai(base_url: str, **server) -> dict:
    return {"kind": "openai", "server": {"base_url": base_url, "model": "m", "retries": 0, **server}}


def test_the_budget_formula_v1():
    assert budget.derived("a" * 100) == 32 + 3 * 50 == budget.first(None, "a" * 100, 10_000)
    assert budget.first(None, "a" * 100, 100) == 100 and budget.first(7, "a" * 100, 100) == 7
    assert budget.retry(100, 1000) == 200 and budget.retry(100, 150) == 150 and budget.retry(100, 100) is None
    assert budget.retry(100, 50) is None  # an explicit budget over the context: no room for more
    assert budget.cap("llama", 2048, "x" * 100) == 2048 - 50 and budget.cap("ctranslate2", 2048, "x") == budget.DECODER_CAP


def test_a_cut_segment_is_retried_with_twice_the_budget_then_rejected_truncated(planted, tmp_path):
    texts = {
        "fits": "The package is installed on the server. It works well.",
        "retried": "NEED150 the second attempt has room for this one. It works well.",
        "cut": "NEED100000 this one never ends, whatever the budget is. It works well.",
    }
    docs = write_documents(tmp_path / "docs", texts)
    config = {"targets": ["fr"], "backend": openai(planted.base_url)}
    steps = run(config, tmp_path / "store", docs)
    first = {part: budget.derived(part) for text in texts.values() for part in segments(segment_document(text, "en"))}
    assert len(first) == 4 and first["NEED150 the second attempt has room for this one."] < 150  # "It works well." is shared
    sent = planted.limits()
    assert sorted(sent[:4]) == sorted(first.values())  # each segment's own budget
    retried = [first["NEED150 the second attempt has room for this one."], first["NEED100000 this one never ends, whatever the budget is."]]
    assert sorted(sent[4:]) == sorted(2 * limit for limit in retried)
    rejected = rejects_by_id(steps)
    reason, detail = rejected["cut#fr"]
    limit = first["NEED100000 this one never ends, whatever the budget is."]
    assert reason == "translate:truncated"
    assert detail.startswith(f"1 of 2 segments; first: cut at its token budget (max_tokens {limit}, then {2 * limit})")
    assert all(r != "translate:truncated" for key, (r, _) in rejected.items() if key != "cut#fr")
    assert totals(steps, "decide")["drop_reasons"]["translate:truncated"] == 1
    stats = totals(steps, "translate")
    assert stats["retried"] == 2 and stats["truncated"] == 1 and stats["sent"] == 6 and stats["by_target"]["fr"]["truncated"] == 1
    translated = {row["id"]: row for row in table_of(steps, "translate").to_pylist()}
    assert translated["retried#fr"]["translate_failure"] is None and FRENCH in translated["retried#fr"]["text"]

    # Re-run under another fingerprint, same segment cache: nothing is sent, the cut one is still cut.
    again = run({**config, "qc": {"max_segment_ratio": 7.0}}, tmp_path / "store", docs)
    assert len(planted.bodies) == 6
    assert rejects_by_id(again)["cut#fr"] == (reason, detail)
    stats = totals(again, "translate")
    assert stats["sent"] == 0 and stats["cache_hits"] == 4 and stats["retried"] == 2 and stats["truncated"] == 1


def test_an_explicit_max_tokens_is_the_namespace_s_and_the_retry_s_is_in_the_key(planted, tmp_path):
    docs = write_documents(tmp_path / "docs", {"a": "NEED12 a sentence that needs twelve tokens here."})
    steps = run({"targets": ["fr"], "backend": openai(planted.base_url, max_tokens=8)}, tmp_path / "store", docs)
    assert planted.limits() == [8, 16]
    assert table_of(steps, "translate")["translate_failure"].to_pylist() == [None]
    keys = pa.concat_tables([pq.read_table(f) for f in (tmp_path / "store").rglob("batch-*.parquet")])
    found = dict(zip(keys["key"].to_pylist(), keys["finish_reason"].to_pylist()))
    bare = next(k for k in found if ":" not in k)
    assert found == {bare: "length", f"{bare}:max_tokens=16": "stop"}


def test_derived_max_tokens_enter_the_fingerprint_by_formula_and_survive_a_config_round_trip(planted, tmp_path):
    stage = registry.validate_stage({"stage": "translate", "targets": ["fr"], "backend": openai(planted.base_url)})
    reloaded = registry.validate_stage(stage.model_dump(mode="json"))  # as a pipeline hands a stage its config
    for config in (stage, reloaded):
        identity, _ = model_identity(config, str(tmp_path))
        assert identity["decoding"]["max_tokens"] == "derived (formula v1)"
    fixed = registry.validate_stage({"stage": "translate", "targets": ["fr"], "backend": openai(planted.base_url, max_tokens=64)})
    assert model_identity(fixed, str(tmp_path))[0]["decoding"]["max_tokens"] == 64
    with pytest.raises(ValidationError, match="set server.max_tokens"):
        registry.validate_stage({"stage": "translate", "targets": ["fr"], "backend": {**openai(planted.base_url), "max_tokens": 9}})


def test_the_ctranslate2_engine_retries_a_hypothesis_without_its_end_token_then_rejects_it(tmp_path):
    """The tiny random model writes ~22 tokens and its end token: 3 tokens, then 6, cut it."""
    from ct2_model import build

    texts = {f"d{i}": f"Debian packages are free software number {i}. The system works well." for i in range(3)}
    model = build(tmp_path / "model", list(texts.values()))
    docs = write_documents(tmp_path / "docs", texts)
    backend = {"kind": "ctranslate2", "model": str(model), "beam_size": 2, "max_tokens": 3, "batch_size": 4}
    steps = run({"targets": ["fr"], "backend": backend}, tmp_path / "store", docs)
    rejected = rejects_by_id(steps)
    assert {reason for reason, _ in rejected.values()} == {"translate:truncated"} and len(rejected) == 3
    assert all("2 of 2 segments; first: cut at its token budget (max_tokens 3, then 6)" in d for _, d in rejected.values())
    stats = totals(steps, "translate")
    assert stats["sent"] == 8 and stats["retried"] == 4 and stats["truncated"] == 4


# -- llama.cpp's server on SmolLM2 ----------------------------------------------------------------

def test_a_real_llama_cpp_answer_cut_at_max_tokens_is_retried_rejected_and_known_from_the_cache(tmp_path):
    from llm_server import LlamaServer

    served = LlamaServer(tmp_path / "server.log").start()
    docs = write_documents(tmp_path / "docs", {
        "long": "The Debian project maintains thousands of free software packages for many computer architectures.",
    })
    config = {"targets": ["fr"], "segment": {"mode": "lines"},
              "backend": openai(served.base_url, model="smollm2", max_tokens=3, concurrency=1)}
    try:
        steps = run(config, tmp_path / "store", docs)
    finally:
        served.stop()
    reason, detail = rejects_by_id(steps)["long#fr"]
    assert reason == "translate:truncated" and "cut at its token budget (max_tokens 3, then 6)" in detail
    stats = totals(steps, "translate")
    assert stats["sent"] == 2 and stats["retried"] == 1 and stats["llm_truncated"] == 2
    cached = pa.concat_tables([pq.read_table(f) for f in (tmp_path / "store").rglob("batch-*.parquet")])
    assert cached["finish_reason"].to_pylist() == ["length", "length"]
    # The server is gone: a re-run that sent anything would fail; it reads both cut answers instead.
    again = run({**config, "qc": {"max_segment_ratio": 7.0}}, tmp_path / "store", docs)
    assert rejects_by_id(again)["long#fr"] == (reason, detail)
    assert totals(again, "translate")["sent"] == 0 and totals(again, "translate")["cache_hits"] == 1
