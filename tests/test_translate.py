"""The translate stage's steps in-process (as a Dask worker runs them): segmentation round trips,
the segment cache, the quality checks on planted failures, the CTranslate2 engine on a tiny
random model, and an HTTP NMT server speaking the `/translate` contract (a real server on
127.0.0.1 whose answers are planted). LLM backends: test_translate_llm.py."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from http_reply import reply
from pydantic import ValidationError
from stage_runner import run_plans
from test_tokenize import documents  # noqa: F401 (a module fixture: the sample's documents)

from fineflow import registry
from fineflow.manifest import shard_name
from fineflow.planning import plan_stage, preflight_stage
from fineflow.steps import Source, StageInputs
from fineflow.tasks.translate.segment import reassemble, segment_document, segments


def run(config: dict, root: Path, folder: Path, name: str = "translate") -> dict:
    shards = len(list(folder.glob("part-*.parquet")))
    stage = registry.validate_stage({"stage": "translate", **config})
    return run_plans(plan_stage(stage, str(root), StageInputs((Source("docs", "f" * 20, str(folder), shards),)), name))


def table_of(steps: dict, step: str, folder: str = "data_folder") -> pa.Table:
    plan, _ = steps[step]
    return pa.concat_tables([pq.read_table(f) for f in sorted(Path(getattr(plan.location, folder)).glob("*.parquet"))])


def totals(steps: dict, step: str) -> dict:
    from fineflow.counters import merge_counts

    return merge_counts(result["stats"] for result in steps[step][1])


def test_segments_keep_the_line_structure():
    text = ("Intro line. Second sentence here!\n\n- item one. item two\n    x = f(a); y = {b};\n"
            "https://example.org/x\n12 34 56 | 78\n  Indented words here.  ")
    pieces = segment_document(text, "en")
    assert segments(pieces) == ["Intro line.", "Second sentence here!", "item one.", "item two", "Indented words here."]
    assert reassemble(pieces, [s.upper() for s in segments(pieces)]) == (
        "INTRO LINE. SECOND SENTENCE HERE!\n\n- ITEM ONE. ITEM TWO\n    x = f(a); y = {b};\n"
        "https://example.org/x\n12 34 56 | 78\n  INDENTED WORDS HERE.  ")
    windows = segments(segment_document("One two three. Four five six. Seven eight nine ten eleven.", "en", "windows", 6))
    assert windows == ["One two three. Four five six.", "Seven eight nine ten eleven."]
    assert segments(segment_document("alpha beta gamma delta epsilon zeta eta theta", "en", "windows", 3)) == [
        "alpha beta gamma", "delta epsilon zeta", "eta theta"]


@pytest.mark.parametrize("mode", ["sentences", "windows", "lines"])
def test_the_identity_backend_gives_every_sample_document_back_byte_for_byte(documents, tmp_path, mode):  # noqa: F811
    steps = run({"targets": ["sw"], "select": {"languages": ["en", "de", "fr", "es", "ru", "ar", "zh"]},
                 "segment": {"mode": mode}, "backend": {"kind": "identity"}}, tmp_path, documents)
    sources = pa.concat_tables([pq.read_table(f) for f in sorted(documents.glob("*.parquet"))])
    by_id = dict(zip(sources["id"].to_pylist(), sources["text"].to_pylist()))
    translated = table_of(steps, "translate")
    assert translated.num_rows == totals(steps, "choose")["chosen"] > 100
    assert all(text == by_id[source] for text, source in zip(translated["text"].to_pylist(), translated["source_id"].to_pylist()))
    assert translated["id"].to_pylist() == [f"{s}#sw" for s in translated["source_id"].to_pylist()]
    # Unchanged copies are not translations: every one is rejected, as a copy or as the wrong language.
    assert table_of(steps, "decide").num_rows == 0
    assert set(table_of(steps, "decide", "rejects_folder")["drop_reason"].to_pylist()) <= {"translate:copy", "translate:language"}
    # The text is the source's, so every check but those two passes, in every mode (coverage once
    # rejected 33 of 90 in windows mode: a window of three sentences "translated" as one).
    failed = {check for checks in totals(steps, "decide")["failed_checks"].values() for check in checks}
    assert failed <= {"copy", "language"}, failed


# -- an HTTP NMT server with planted answers ----------------------------------------------------

FRENCH = ["Le système d'exploitation Debian est libre et contient des milliers de paquets.",
          "Chaque paquet est maintenu par des bénévoles qui suivent une charte commune.",
          "La distribution stable reçoit des mises à jour de sécurité pendant plusieurs années.",
          "Les utilisateurs installent les logiciels avec un gestionnaire de paquets très pratique.",
          "Cette documentation explique comment administrer un serveur au quotidien.",
          "Le projet publie aussi des notes de version détaillées pour chaque sortie."]


class PlantedNMT:
    """``/translate``: "" for a text holding DROPME, the text itself into German, English for a
    text holding WRONG, otherwise a French sentence chosen by the text's hash."""

    def __init__(self) -> None:
        self.received: list[str] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.received += body["texts"]
                out = [owner.answer(text, body["tgt_lang"]) for text in body["texts"]]
                data = json.dumps({"translations": out}).encode()
                reply(self, 200, data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"

    @staticmethod
    def answer(text: str, target: str) -> str:
        if "DROPME" in text:
            return ""
        if target == "deu_Latn":
            return text
        if "WRONG" in text:
            return "This answer is still plain English text and not a translation at all, sadly."
        return FRENCH[int(hashlib.sha256(text.encode()).hexdigest(), 16) % len(FRENCH)]

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def nmt():
    server = PlantedNMT()
    yield server
    server.close()


def write_documents(folder: Path, texts: dict[str, str], shards: int = 1) -> Path:
    folder.mkdir(parents=True)
    ids = sorted(texts)
    for n in range(shards):
        part = ids[n::shards]
        pq.write_table(pa.table({"id": part, "url": [f"https://example.org/{i}" for i in part], "text": [texts[i] for i in part],
                                 "language": ["en"] * len(part), "quality_score": [float(len(i)) for i in part],
                                 "dup_cluster_size": pa.array([1] * len(part), pa.int32())}), folder / shard_name(n))
    return folder


def http_backend(nmt: PlantedNMT) -> dict:
    return {"kind": "http", "url": nmt.url, "model_name": "planted", "batch_size": 2}


def test_quality_checks_reject_a_planted_copy_wrong_language_and_dropped_sentence(nmt, tmp_path):
    docs = write_documents(tmp_path / "docs", {
        # sources about as long as the planted French sentences (the en-fr band is measured)
        "a": "The Debian operating system is free and it contains many thousands of packages. "
             "Every package is maintained by volunteers who follow one common policy charter.",
        "b": "WRONG sentence one is written here, and it is rather long for a sentence. "
             "WRONG sentence two is written here, and it is also long for a sentence.",
        "c": "Keep this sentence please, as it is a perfectly ordinary sentence to translate. "
             "DROPME this sentence now, since the planted server answers it with nothing. "
             "Another sentence stays here, and it is translated like the first one was.",
    })
    steps = run({"targets": ["fr", "de"], "backend": http_backend(nmt)}, tmp_path / "store", docs)
    reasons = dict(zip(*(table_of(steps, "decide", "rejects_folder")[c].to_pylist() for c in ("id", "drop_reason"))))
    assert reasons == {"a#de": "translate:copy", "b#de": "translate:copy", "b#fr": "translate:language",
                       "c#de": "translate:coverage", "c#fr": "translate:coverage"}
    kept = table_of(steps, "decide")
    assert kept["id"].to_pylist() == ["a#fr"] and kept["language"].to_pylist() == ["fr"]
    row = kept.to_pylist()[0]
    assert row["source_id"] == "a" and row["source_language"] == "en" and row["translation_model"] == "http:planted"
    assert row["source_quality_score"] == 1.0 and row["source_dup_cluster_size"] == 1 and "quality_score" not in row
    assert row["language_score"] > 0.5 and row["text"].count(".") == 2
    checks = totals(steps, "decide")["failed_checks"]
    assert checks["fr"]["language"] == 1 and checks["de"]["copy"] == 3 and checks["fr"]["coverage"] == 1


def test_an_overlapping_selection_sends_only_new_segments_and_ids_are_stable(nmt, tmp_path):
    texts = {f"doc{i:02d}": f"Sentence number {i} is about packages. It continues with a second remark {i}." for i in range(12)}
    docs = write_documents(tmp_path / "docs", texts, shards=3)
    first = run({"targets": ["fr"], "select": {"max_documents": 4}, "backend": http_backend(nmt)}, tmp_path / "store", docs)
    sent_first = list(nmt.received)
    assert len(sent_first) == 8 and totals(first, "translate")["sent"] == 8
    nmt.received.clear()
    second = run({"targets": ["fr"], "select": {"max_documents": 7}, "backend": http_backend(nmt)}, tmp_path / "store", docs)
    assert len(nmt.received) == 6 and not set(nmt.received) & set(sent_first)  # only the 3 new documents' segments
    assert totals(second, "translate")["cache_hits"] == 8
    ids_first, ids_second = (table_of(s, "translate")["id"].to_pylist() for s in (first, second))
    assert set(ids_first) < set(ids_second)
    same = {r["id"]: r["text"] for r in table_of(second, "translate").to_pylist()}
    assert all(same[r["id"]] == r["text"] for r in table_of(first, "translate").to_pylist())
    # The whole selection again, in another storage root's steps but the same cache: nothing is sent.
    nmt.received.clear()
    again = run({"targets": ["fr"], "select": {"max_documents": 7}, "backend": http_backend(nmt)}, tmp_path / "store", docs, "again")
    assert nmt.received == [] and table_of(again, "translate")["id"].to_pylist() == table_of(second, "translate")["id"].to_pylist()


def test_the_dry_run_estimate_counts_cached_segments_and_measures_throughput(nmt, tmp_path):
    from fineflow.tasks.translate.estimate import estimate

    texts = {f"doc{i:02d}": f"Sentence number {i} is about packages. It continues with a second remark {i}." for i in range(12)}
    docs = write_documents(tmp_path / "docs", texts, shards=3)

    def plans(cap: int) -> tuple:
        stage = registry.validate_stage({"stage": "translate", "targets": ["fr", "en"], "select": {"max_documents": cap},
                                         "backend": http_backend(nmt)})
        return stage, plan_stage(stage, str(tmp_path / "store"), StageInputs((Source("docs", "f" * 20, str(docs), 3),)), "translate")

    before = estimate(*plans(4))
    assert before[0] == {**before[0], "target": "fr", "documents": 4, "segments": 8, "cached": 0, "to_send": 8}
    assert before[0]["throughput"].endswith("(assumed)") and before[1]["documents"] == 0  # English into English: nothing
    run({"targets": ["fr"], "select": {"max_documents": 4}, "backend": http_backend(nmt)}, tmp_path / "store", docs)
    after = estimate(*plans(7))
    assert after[0]["segments"] == 14 and after[0]["cached"] == 8 and after[0]["to_send"] == 6
    assert after[0]["throughput"].endswith("(measured)") and after[0]["server_hours"] >= 0
    from fineflow import cache_admin  # the namespace says what it holds, for `fineflow cache list`

    (space,) = cache_admin.list_namespaces(str(tmp_path / "store"))
    assert (space.family, space.answers, space.record["pair"]) == ("translate", 8, ["en", "fr"])
    assert space.model.startswith("http:") and space.record["scheme"] == 2
    fresh = tmp_path / "missing"
    stage = registry.validate_stage({"stage": "translate", "targets": ["fr"], "backend": http_backend(nmt)})
    unplanned = plan_stage(stage, str(tmp_path / "s2"), StageInputs((Source("docs", "f" * 20, str(fresh), 1),)), "translate")
    assert "not committed yet" in estimate(stage, unplanned)[0]["note"]


def test_a_changed_threshold_decides_again_without_translating(nmt, tmp_path):
    docs = write_documents(tmp_path / "docs", {"a": "The first sentence is here. The second sentence follows it."})
    config = {"targets": ["fr"], "backend": http_backend(nmt)}

    def fingerprints(extra: dict) -> dict:
        stage = registry.validate_stage({"stage": "translate", **config, **extra})
        plans = plan_stage(stage, str(tmp_path), StageInputs((Source("docs", "f" * 20, str(docs), 1),)), "translate")
        return {plan.step: plan.fingerprint.value for plan in plans}

    before, after = fingerprints({}), fingerprints({"qc": {"min_language_score": 0.9}})
    assert before["translate"] == after["translate"] and before["decide"] != after["decide"]
    moved = fingerprints({"backend": {**http_backend(nmt), "url": "http://elsewhere:1"}})
    assert moved == before  # where a server listens is not what it translates
    assert fingerprints({"backend": {**http_backend(nmt), "model_name": "other"}})["translate"] != before["translate"]


def test_the_ctranslate2_engine_batches_with_nllb_language_codes(tmp_path):
    from ct2_model import build

    texts = {f"d{i}": f"Debian packages are free software number {i}. The system works well." for i in range(5)}
    model = build(tmp_path / "model", list(texts.values()))
    docs = write_documents(tmp_path / "docs", texts, shards=2)
    backend = {"kind": "ctranslate2", "model": str(model), "beam_size": 2, "batch_size": 3}  # max_tokens derived: room for its ~22 tokens
    steps = run({"targets": ["fr", "de"], "backend": backend}, tmp_path / "store", docs)
    out = table_of(steps, "translate")
    assert out.num_rows == 10 and set(out["translation_model"].to_pylist()) == {"ctranslate2:model"}
    assert all(text.strip() for text in out["text"].to_pylist())
    # 5 first sentences and one they share, per target; the second shard finds the shared one cached.
    assert totals(steps, "translate")["sent"] == 2 * 6 and totals(steps, "translate")["cache_hits"] == 2
    vocabulary = json.loads((model / "tokenizer.json").read_text())["model"]["vocab"]
    assert all(word in vocabulary for text in out["text"].to_pylist() for word in text.split())  # decoded from its vocabulary
    with pytest.raises(ValueError, match="does not exist"):
        preflight_stage(registry.validate_stage({"stage": "translate", "targets": ["fr"],
                                                 "backend": {**backend, "model": str(tmp_path / "missing")}}))


@pytest.mark.parametrize(("fields", "message"), [
    ({"targets": []}, "at least 1 item"),
    ({"targets": ["fr", "fr"]}, "listed twice"),
    ({"backend": {"kind": "openai"}}, "backend openai needs server"),
    ({"backend": {"kind": "http", "url": "http://x"}}, "needs model_name"),
    ({"backend": {"kind": "llama", "model": "m.gguf", "prompt": "no placeholder"}}, "must hold {text}"),
    ({"select": {"where": [{"column": "q"}]}}, "give min, max or values"),
])
def test_config_errors_are_clear(fields, message):
    with pytest.raises(ValidationError, match=message):
        registry.validate_stage({"stage": "translate", "targets": ["fr"], "backend": {"kind": "identity"}, **fields})
