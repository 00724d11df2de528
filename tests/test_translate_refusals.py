"""The translate stage under hostile input (issue #27): one document never fails a step. A
punctuation-less 17k-character line is cut to the hard window instead of being refused for the
context length; a document a server still refuses, or whose text is not UTF-8, is rejected with
its own reason and the specifics in ``drop_detail``; configs that would reject every document,
or check nothing, are refused before any work."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from http_reply import reply
from pydantic import ValidationError
from test_translate import PlantedNMT, http_backend, run, table_of, totals, write_documents

from fineflow import registry
from fineflow.manifest import shard_name
from fineflow.tasks.translate import window
from fineflow.tasks.translate.segment import reassemble, segment_document, segments

LONG_LINE = " ".join(f"word{i % 97} alpha beta gamma delta" for i in range(600))[:17_000]  # no sentence punctuation
FRENCH = "Le système fonctionne très bien sur ce serveur et les paquets sont installés correctement."


class RefusingOpenAI:
    """``/v1/chat/completions`` that answers 400 as vLLM does for a prompt over its context
    (``context`` bytes here) or one holding REFUSEME, else a French sentence."""

    def __init__(self, context: int = 2048) -> None:
        self.prompts: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                prompt = json.loads(self.rfile.read(int(self.headers["Content-Length"])))["messages"][0]["content"]
                owner.prompts.append(prompt)
                if len(prompt.encode()) > context:
                    status, body = 400, {"error": {"message": f"This model's maximum context length is {context} tokens"}}
                elif "REFUSEME" in prompt:
                    status, body = 400, {"error": {"message": "the prompt was flagged by the content filter"}}
                else:
                    status, body = 200, {"choices": [{"message": {"content": FRENCH}}], "usage": {"prompt_tokens": 1}}
                data = json.dumps(body).encode()
                reply(self, status, data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        self.context = context

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def refusing():
    server = RefusingOpenAI()
    yield server
    server.close()


def rejects_by_id(steps: dict) -> dict[str, tuple[str, str | None]]:
    table = table_of(steps, "decide", "rejects_folder")
    return {row["id"]: (row["drop_reason"], row["drop_detail"]) for row in table.to_pylist()}


def test_a_long_line_is_sent_in_windows_and_a_refused_document_is_rejected_alone(refusing, tmp_path):
    docs = write_documents(tmp_path / "docs", {
        "long": LONG_LINE,
        "refused": "REFUSEME please translate this sentence. It is a perfectly normal text.",
        "plain": "The package is installed on the server. It works well.",
    })
    backend = {"kind": "openai", "server": {"base_url": refusing.base_url, "model": "m", "max_tokens": 64, "retries": 0}}
    steps = run({"targets": ["fr"], "segment": {"mode": "sentences"}, "backend": backend}, tmp_path / "store", docs)
    assert max(len(p.encode()) for p in refusing.prompts) <= refusing.context  # nothing over the context was sent
    translated = {row["id"]: row for row in table_of(steps, "translate").to_pylist()}
    assert translated["long#fr"]["translate_failure"] is None and translated["long#fr"]["translate_segments"] > 8
    # every window answered (none refused), each by one short sentence: none has its length, none covered
    assert translated["long#fr"]["translate_coverage"] == 0.0
    rejected = rejects_by_id(steps)
    assert rejected["refused#fr"][0] == "translate:refused"
    assert "HTTP 400" in rejected["refused#fr"][1] and "content filter" in rejected["refused#fr"][1]
    assert "1 of 2 segments" in rejected["refused#fr"][1]
    assert all(reason != "translate:refused" for key, (reason, _) in rejected.items() if key != "refused#fr")
    assert totals(steps, "decide")["drop_reasons"]["translate:refused"] == 1
    assert totals(steps, "translate")["by_target"]["fr"]["refused"] == 1


def test_an_http_nmt_server_refusing_one_text_of_a_batch_rejects_only_its_document(tmp_path):
    class Refusing(PlantedNMT):
        def answer(self, text: str, target: str) -> str:
            if "REFUSEME" in text:
                raise ValueError("refuse")
            return super().answer(text, target)

    nmt = Refusing()
    handler = nmt.server.RequestHandlerClass
    planted = handler.do_POST

    def do_post(self: BaseHTTPRequestHandler) -> None:
        try:
            planted(self)
        except ValueError:
            reply(self, 422, b'{"error": "no good"}')

    handler.do_POST = do_post
    try:
        texts = {f"d{i}": f"The first sentence {i} is here. The second sentence follows it {i}." for i in range(5)}
        texts["d2"] = "REFUSEME sentence one is written here. Sentence two is written here."
        docs = write_documents(tmp_path / "docs", texts)
        steps = run({"targets": ["fr"], "backend": http_backend(nmt)}, tmp_path / "store", docs)
    finally:
        nmt.close()
    rejected = rejects_by_id(steps)
    assert rejected["d2#fr"][0] == "translate:refused" and "HTTP 422" in rejected["d2#fr"][1]
    assert table_of(steps, "decide").num_rows + len(rejected) == 5
    assert all(reason != "translate:refused" for key, (reason, _) in rejected.items() if key != "d2#fr")


def test_a_text_that_is_not_utf8_is_rejected_undecodable_and_the_others_translate(tmp_path):
    folder = tmp_path / "docs"
    folder.mkdir()
    raw = [b"Good text is here. Another sentence follows.", b"Bad \xff\xfe bytes are here. And more text."]
    pq.write_table(pa.table({"id": ["a", "b"], "text": pa.array(raw, pa.binary()).view(pa.string()),
                             "language": ["en", "en"]}), folder / shard_name(0))
    steps = run({"targets": ["fr", "de"], "backend": {"kind": "identity"}}, tmp_path / "store", folder)
    rejected = rejects_by_id(steps)
    for target in ("fr", "de"):
        assert rejected[f"b#{target}"] == ("translate:undecodable", "text is not valid UTF-8 (invalid start byte at byte 4)")
        assert rejected[f"a#{target}"][0] in {"translate:copy", "translate:language"}  # the identity's copy, decided
    assert table_of(steps, "decide", "rejects_folder")["text"].to_pylist()[1] == "Bad \ufffd\ufffd bytes are here. And more text."


@pytest.mark.parametrize("text", [LONG_LINE, "字" * 5000, "a" * 9000, "x" * 3000 + " " + "é" * 4000, "ae\u0301" * 3000])
def test_the_hard_window_cuts_every_segment_to_fit_and_keeps_the_text(text):
    for mode in ("sentences", "windows", "lines"):
        pieces = segment_document(text, "en", mode, 200, None, 64, window.estimate)
        parts = segments(pieces)
        assert len(parts) > 1 and all(window.estimate(part) <= 64 for part in parts)
        assert reassemble(pieces, parts) == text
        assert not any(part[0].isspace() or part[-1].isspace() for part in parts)
        assert not any(part[0] == "\u0301" for part in parts)  # a combining mark stays with its letter


@pytest.mark.parametrize(("fields", "message"), [
    ({"targets": ["xx"]}, "targets: 'xx' is not a language code fineflow knows"),
    ({"targets": ["fr"], "select": {"languages": ["qaa"]}}, "select.languages: 'qaa' is not a language code"),
    ({"targets": ["fr"], "qc": {"length_ratio": [3.0, 0.3]}}, "qc.length_ratio: the lower bound 3 is over the upper bound 0.3"),
    ({"targets": ["fr"], "qc": {"length_ratios": {"en-fr": [2, 1]}}}, "qc.length_ratios.en-fr: the lower bound 2"),
    ({"targets": ["fr"], "qc": {"length_ratio": [0.3, float("inf")]}}, "finite number"),
    ({"targets": ["fr"], "qc": {"min_language_score": float("nan")}}, "finite number"),
    ({"targets": ["fr"], "qc": {"max_segment_ratio": float("inf")}}, "finite number"),
    ({"targets": ["fr"], "throughput": float("inf")}, "finite number"),
    ({"targets": ["fr"], "select": {"where": [{"column": "q", "min": float("nan")}]}}, "finite number"),
    ({"targets": ["fr"], "select": {"where": [{"column": "q", "min": 3, "max": 1}]}}, "min 3 is over max 1"),
    ({"targets": ["fr"], "backend": {"kind": "identity", "max_input_tokens": 2}}, "greater than or equal to 8"),
    ({"targets": ["fr"], "backend": {"kind": "http", "url": "http://x", "model_name": "m", "timeout_s": float("inf")}},
     "finite number"),
])
def test_configs_that_would_reject_everything_are_refused_naming_the_key(fields, message):
    with pytest.raises(ValidationError, match=message):
        registry.validate_stage({"stage": "translate", "backend": {"kind": "identity"}, **fields})


def test_a_code_only_the_model_knows_is_accepted_through_its_code_map():
    stage = registry.validate_stage({"stage": "translate", "targets": ["tlh"],
                                     "backend": {"kind": "identity", "language_codes": {"tlh": "tlh_Latn"}}})
    assert stage.targets == ["tlh"]


def test_the_hard_window_enters_the_translate_fingerprint(tmp_path: Path):
    from fineflow.planning import plan_stage
    from fineflow.steps import Source, StageInputs

    docs = write_documents(tmp_path / "docs", {"a": "The first sentence is here."})

    def fingerprint(extra: dict) -> str:
        stage = registry.validate_stage({"stage": "translate", "targets": ["fr"], "backend": {"kind": "identity", **extra}})
        plans = plan_stage(stage, str(tmp_path), StageInputs((Source("docs", "f" * 20, str(docs), 1),)), "translate")
        return next(p.fingerprint.value for p in plans if p.step == "translate")

    assert fingerprint({}) == fingerprint({"max_input_tokens": 512}) != fingerprint({"max_input_tokens": 64})
