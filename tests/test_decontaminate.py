"""The decontaminate stage on real pages of the sample with benchmark items planted in them:
verbatim, re-cased and re-spaced, split over lines, inside longer pages, a whole page of benchmark
text, and a French benchmark in French pages. Each is found in every mode, nothing else is; the
index is built once, keyed by the benchmark files' content; benchmark files and index on S3."""

from __future__ import annotations

import json
import re

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from stage_runner import run_plans

from fineflow import registry, storage
from fineflow.counters import merge_counts
from fineflow.documents import read_table, write_table
from fineflow.steps import PlanContext, Source, StageInputs
from fineflow.tasks.crawl.inputs import describe_files, plan_shards
from fineflow.tasks.crawl.stage import extract_shard
from fineflow.tasks.decontaminate import report
from fineflow.tasks.decontaminate.benchmarks import BenchmarkError
from fineflow.tasks.decontaminate.config import EXAMPLES, DecontaminateStage
from fineflow.tasks.decontaminate.ngrams import ngram_hashes, normalize, word_hashes, words
from fineflow.tasks.decontaminate.plan import plan_decontaminate

CRAWL_PARAMS = dict(
    extractor="resiliparse", extraction_timeout_s=30.0, include_text_plain=False, keep_truncated=False,
    max_record_bytes=64 << 20, langid_model="lid.176", url_filter=None, url_filter_options={},
)
EN, FR = "handbook-cloze-en", "handbook-cloze-fr"
BENCHMARKS = [
    {"name": EN, "path": f"{EXAMPLES}/handbook-cloze-en.jsonl", "columns": ["question", "answer"], "language": "en"},
    {"name": FR, "path": f"{EXAMPLES}/handbook-cloze-fr.jsonl", "columns": ["question", "answer"], "language": "fr"},
]


def items(name: str) -> list[dict]:
    return [json.loads(line) for line in storage.read_bytes(f"{EXAMPLES}/{name}.jsonl").decode().splitlines()]


def respaced(text: str) -> str:
    """Upper case, doubled spaces, a tab and a line break inside: the same words, other bytes."""
    words_ = text.upper().split(" ")
    middle = len(words_) // 2
    return "  ".join(words_[:middle]) + "\n\t" + "   ".join(words_[middle:])


@pytest.fixture(scope="module")
def pages(sample_warc, tmp_path_factory) -> list[dict]:
    out = tmp_path_factory.mktemp("crawl")
    shard = plan_shards(describe_files([str(sample_warc)], None, True), 1 << 30)[0]
    extract_shard(shard, CRAWL_PARAMS, str(out / "part-00000.parquet"), str(out / "rejects.parquet"))
    return pq.read_table(out / "part-00000.parquet").to_pylist()


@pytest.fixture(scope="module")
def planted(pages) -> tuple[list[dict], dict[str, tuple[str, str]]]:
    """The sample's pages, some with benchmark text: {id: (benchmark, how)} for those."""
    en, fr = items(EN), items(FR)
    longer = lambda language: [p for p in pages if p["language"] == language and p["text"].count("\n") >= 6]  # noqa: E731
    english, french = longer("en"), longer("fr")
    docs = [dict(page, n_tokens_gpt2=len(page["text"].split())) for page in pages]
    by_id = {doc["id"]: doc for doc in docs}
    expected: dict[str, tuple[str, str]] = {}

    def plant(page: dict, text: str, benchmark: str, how: str) -> None:
        lines = by_id[page["id"]]["text"].split("\n")
        middle = len(lines) // 2
        by_id[page["id"]]["text"] = "\n".join(lines[:middle] + [text] + lines[middle:])
        expected[page["id"]] = (benchmark, how)

    plant(english[0], f"{en[0]['question']} {en[0]['answer']}", EN, "verbatim")
    plant(english[1], respaced(f"{en[1]['question']} {en[1]['answer']}"), EN, "re-cased and re-spaced")
    plant(english[2], en[2]["answer"].replace(" ", "  ") + " (" + en[2]["question"].split(":", 1)[1] + ")", EN, "answer first")
    plant(french[0], f"{fr[0]['question']} {fr[0]['answer']}", FR, "verbatim, French")
    plant(french[1], respaced(fr[3]["answer"] + " " + fr[3]["question"]), FR, "re-cased and re-spaced, French")
    whole = dict(pages[0], id="whole-item", text=f"{en[4]['question']}\n{en[4]['answer']}", language="en", n_tokens_gpt2=60)
    docs.append(whole)
    expected["whole-item"] = (EN, "the whole document")
    return docs, expected


def _upstream(root: str, docs: list[dict]) -> StageInputs:
    folder = storage.join(root, "upstream", "data")
    half = len(docs) // 2
    for number, part in enumerate((docs[:half], docs[half:])):
        write_table(storage.join(folder, f"part-{number:05d}.parquet"), pa.Table.from_pylist(part))
    return StageInputs((Source("upstream", "f" * 20, folder, 2),))


def run_stage(root: str, docs: list[dict], benchmarks: list[dict] = BENCHMARKS, **options) -> dict:
    config = DecontaminateStage.model_validate({"stage": "decontaminate", "benchmarks": benchmarks, **options})
    plans = registry.get("decontaminate").plan(config, root, "decontaminate", _upstream(root, docs))  # as a run plans it
    steps = run_plans(plans)
    assert [plan.step for plan in plans] == ["index", "scan", "items"]
    scan_plan, _ = steps["scan"]
    kept = read_table([scan_plan.location.shard_url(n) for n in range(2)]).to_pylist()
    rejects = read_table([scan_plan.location.rejects_url(n) for n in range(2)]).to_pylist()
    totals = {step: merge_counts(result["stats"] for result in results) for step, (_, results) in steps.items()}
    summary = {"name": "decontaminate", "rejects": scan_plan.location.rejects_folder, **report.summary_fields(totals)}
    return {"kept": kept, "rejects": rejects, "summary": summary, "plans": plans}


@pytest.fixture(scope="module")
def audit(planted, tmp_path_factory):
    return run_stage(str(tmp_path_factory.mktemp("audit")), planted[0], mode="audit")


def test_the_planted_items_and_nothing_else_are_found(planted, audit):
    docs, expected = planted
    assert len(audit["kept"]) == len(docs) and not audit["rejects"]
    found = {doc["id"]: doc for doc in audit["kept"] if doc["decontam_benchmarks"]}
    assert {doc_id: doc["decontam_benchmarks"] for doc_id, doc in found.items()} == {
        doc_id: [benchmark] for doc_id, (benchmark, _) in expected.items()
    }, "every planted item found, in its own benchmark only; no page of the sample flagged"
    for doc_id, doc in found.items():
        assert doc["decontam_ngrams"] >= 10, expected[doc_id]
        assert 0 < doc["decontam_overlap"] <= 1
    assert found["whole-item"]["decontam_overlap"] == pytest.approx(1.0)
    others = [doc for doc in audit["kept"] if doc["id"] not in expected]
    assert others and all(doc["decontam_ngrams"] == 0 and doc["decontam_overlap"] == 0 for doc in others)
    assert [doc["n_tokens_gpt2"] for doc in audit["kept"]] == [doc["n_tokens_gpt2"] for doc in docs]  # audit rewrites nothing


def test_audit_summary_counts_each_benchmark(planted, audit):
    _, expected = planted
    contamination = audit["summary"]["contamination"]
    for name in (EN, FR):
        mine = [doc_id for doc_id, (benchmark, _) in expected.items() if benchmark == name]
        assert contamination[name]["documents"] == len(mine)
        assert contamination[name]["paragraphs"] >= len(mine)
        assert contamination[name]["items"] == len(items(name))
        assert contamination[name]["ngrams"] > 0 and contamination[name]["items_too_short"] == 0
    assert contamination[FR]["languages"] == {"fr": 2}
    assert audit["summary"]["documents_contaminated"] == len(expected)
    assert audit["summary"]["docs_in"] == len(planted[0])
    # one entry per distinct n-gram of each item (the items share none here)
    assert audit["summary"]["index_entries"] == contamination[EN]["ngrams"] + contamination[FR]["ngrams"]
    (table,) = report.contamination_tables(audit["summary"])
    assert [row["benchmark"] for row in table.rows] == [EN, FR]
    assert table.rows[0]["documents matched"] == contamination[EN]["documents"]
    ((chart, figure),) = report.figures(audit["summary"])
    assert chart == "contamination" and list(figure.data[1].y) == [contamination[EN]["documents"], contamination[FR]["documents"]]


def test_the_items_found_are_listed(planted, audit):
    """Each planted item is found, by its number in its benchmark, in the documents it was planted in."""
    items_plan = audit["plans"][2]
    found = read_table([items_plan.location.shard_url(0)]).to_pylist()
    # planted: en items 0, 1, 2, 4 (one document each), fr items 0 and 3
    assert [(row["benchmark"], row["item"], row["documents"]) for row in found] == [
        (EN, 0, 1), (EN, 1, 1), (EN, 2, 1), (EN, 4, 1), (FR, 0, 1), (FR, 3, 1)]
    assert found[0]["text"].startswith(items(EN)[0]["question"][:100])
    assert {name: audit["summary"]["contamination"][name]["items_found"] for name in (EN, FR)} == {EN: 4, FR: 2}
    (table,) = report.contamination_tables(audit["summary"])
    assert [row["items found"] for row in table.rows] == [4, 2]


def test_drop_rejects_exactly_the_planted_documents(planted, tmp_path):
    docs, expected = planted
    result = run_stage(str(tmp_path), docs, mode="drop")
    assert {doc["id"]: doc["drop_reason"] for doc in result["rejects"]} == {
        doc_id: f"decontaminate:{benchmark}" for doc_id, (benchmark, _) in expected.items()
    }
    assert len(result["kept"]) == len(docs) - len(expected)
    assert result["summary"]["documents_dropped"] == len(expected)
    assert result["summary"]["drop_reasons"] == {f"decontaminate:{EN}": 4, f"decontaminate:{FR}": 2}


def test_min_overlap_keeps_pages_that_only_quote_a_little(planted, audit, tmp_path):
    overlap = {doc["id"]: doc["decontam_overlap"] for doc in audit["kept"]}
    heavy = {doc_id for doc_id in planted[1] if overlap[doc_id] >= 0.25}
    assert "whole-item" in heavy and len(heavy) < len(planted[1])  # (the threshold splits the planted pages)
    result = run_stage(str(tmp_path), planted[0], mode="drop", min_overlap=0.25)
    assert {doc["id"] for doc in result["rejects"]} == heavy


def test_remove_paragraphs_restores_the_pages_and_rejects_an_emptied_one(planted, pages, tmp_path):
    docs, expected = planted
    result = run_stage(str(tmp_path), docs, mode="remove_paragraphs")
    assert {doc["id"]: doc["drop_reason"] for doc in result["rejects"]} == {"whole-item": f"decontaminate:{EN}:emptied"}
    originals = {page["id"]: page["text"] for page in pages}
    kept = {doc["id"]: doc for doc in result["kept"]}
    for doc_id in set(expected) - {"whole-item"}:
        # only the planted lines went: the page is the sample's page again
        assert kept[doc_id]["text"] == originals[doc_id], expected[doc_id]
        assert kept[doc_id]["decontam_paragraphs_removed"] == (2 if "re-spaced" in expected[doc_id][1] else 1)
    untouched = [doc for doc in result["kept"] if doc["id"] not in expected]
    assert all(doc["text"] == originals[doc["id"]] and doc["decontam_paragraphs_removed"] == 0 for doc in untouched)
    # a token count measured on the old text does not survive the rewrite (StageKind.rewrites_text)
    assert "n_tokens_gpt2" not in result["kept"][0]
    assert result["summary"]["documents_rewritten"] == len(expected) - 1
    assert result["summary"]["documents_emptied"] == 1
    assert result["summary"]["paragraphs_removed"] == sum(doc["decontam_paragraphs_removed"] for doc in result["kept"]) + 2


def test_a_benchmark_in_a_language_without_spaces(pages, tmp_path):
    """Chinese: the n-grams are jieba's words, in the benchmark and in the pages; found are exactly
    the pages that hold the benchmark's sentence."""
    page = next(p for p in pages if p["language"] == "zh" and len(p["text"]) > 2000)
    sentences = [part.strip() for part in re.split(r"(?<=。)|\n", page["text"]) if not re.search(r"[A-Za-z]", part)]
    sentence = max(sentences, key=len)  # the longest all-Chinese sentence
    assert len(words(sentence, "jieba")) > 2 * len(sentence.split()) >= 2  # words, not whitespace runs
    (tmp_path / "zh.jsonl").write_text(json.dumps({"text": sentence}, ensure_ascii=False) + "\n")
    benchmark = [{"name": "zh-sentence", "path": str(tmp_path / "zh.jsonl"), "language": "zh"}]
    result = run_stage(str(tmp_path / "run"), pages, benchmarks=benchmark, mode="audit")
    holding = {p["id"] for p in pages if normalize(sentence) in normalize(p["text"])}
    assert page["id"] in holding
    assert {doc["id"] for doc in result["kept"] if doc["decontam_benchmarks"] == ["zh-sentence"]} == holding


def test_normalization_and_hashes():
    assert normalize("Ｆｕｌｌ-width  TEXT,\tSTRASSE…\n«Straße»") == "full width text strasse strasse"
    a = ngram_hashes(word_hashes("one two three four five".split()), 3)
    assert len(a) == 3 and len(set(a.tolist())) == 3
    assert ngram_hashes(word_hashes("one two".split()), 3).size == 0
    b = ngram_hashes(word_hashes("zero one two three four five".split()), 3)
    assert b[1:].tolist() == a.tolist()  # a position's hash depends on its words only


def test_the_index_is_built_once_and_keyed_by_content(tmp_path):
    folder = tmp_path / "bench"
    folder.mkdir()
    rows = items(EN)
    pq.write_table(pa.Table.from_pylist(rows[:8]), folder / "part-0.parquet")
    pa_csv.write_csv(pa.Table.from_pylist([{"question": r["question"], "answer": r["answer"]} for r in rows[8:]]), folder / "part-1.csv")
    (folder / "README.md").write_text("not a benchmark file")

    def plans(path: str, **options):
        config = DecontaminateStage.model_validate({"stage": "decontaminate", "benchmarks": [
            {"name": "mine", "path": path, "columns": ["question", "answer"]}], **options})
        upstream = StageInputs((Source("upstream", "f" * 20, str(tmp_path / "up"), 1),))
        return plan_decontaminate(config, PlanContext(root=str(tmp_path / "root"), name="d", kind="decontaminate", inputs=upstream))

    first = plans(str(folder))
    (_, (built,)), = run_plans(first[:1]).values()
    assert built["stats"]["benchmarks"] == {"mine": {"files": 2, "items": len(rows), "items_too_short": 0, "ngrams": built["stats"]["index_entries"]}}
    moved = tmp_path / "moved"
    folder.rename(moved)
    assert plans(str(moved))[0].fingerprint.value == first[0].fingerprint.value  # the same files elsewhere
    assert plans(str(moved), mode="audit")[0].fingerprint.value == first[0].fingerprint.value  # a mode is the scan's
    assert plans(str(moved), n=8)[0].fingerprint.value != first[0].fingerprint.value
    (moved / "part-1.csv").write_text((moved / "part-1.csv").read_text().replace("Debian", "Ubuntu"))
    assert plans(str(moved))[0].fingerprint.value != first[0].fingerprint.value  # a changed benchmark
    scan = plans(str(moved))[1]
    assert {shard["shard"] for shard in scan.shards} == {0}
    assert scan.params["index"].endswith("/artifacts/ngrams.bin")
    assert plans(str(moved))[2].params["found"] == [scan.location.artifact_url("found-00000.parquet")]


def test_bad_benchmarks_are_one_line_errors(tmp_path):
    def config(**benchmark):
        return DecontaminateStage.model_validate({"stage": "decontaminate", "benchmarks": [{"name": "b", **benchmark}]})

    with pytest.raises(ValidationError, match="less than or equal to 50"):
        DecontaminateStage.model_validate({"stage": "decontaminate", "n": 51, "benchmarks": [{"name": "b", "path": "x"}]})
    with pytest.raises(ValidationError, match="more than once"):
        DecontaminateStage.model_validate({"stage": "decontaminate", "benchmarks": [{"name": "b", "path": "x"}] * 2})
    (tmp_path / "b.jsonl").write_text('{"q": "a question"}\n')
    context = PlanContext(root=str(tmp_path / "root"), name="d", kind="decontaminate",
                          inputs=StageInputs((Source("upstream", "f" * 20, str(tmp_path), 1),)))
    with pytest.raises(BenchmarkError, match="holds no .jsonl"):
        plan_decontaminate(config(path=str(tmp_path / "none")), context)
    index = plan_decontaminate(config(path=str(tmp_path / "b.jsonl"), columns=["question"]), context)[0]
    with pytest.raises(BenchmarkError, match=r"b\.jsonl has no column question \(it has: q\)"):
        run_plans([index])
    index = plan_decontaminate(config(path=str(tmp_path / "b.jsonl"), columns=["q"]), context)[0]
    with pytest.raises(BenchmarkError, match="none of its 1 items has 13 words"):
        run_plans([index])


def test_benchmark_files_and_index_on_s3(seaweed, planted):
    docs, expected = planted
    root = f"s3://{seaweed.bucket}/decontaminate-test"
    for benchmark in BENCHMARKS:  # a folder per benchmark, as a dataset's files
        storage.write_bytes(f"{root}/benchmarks/{benchmark['name']}/test.jsonl", storage.read_bytes(benchmark["path"]))
    on_s3 = [dict(benchmark, path=f"{root}/benchmarks/{benchmark['name']}") for benchmark in BENCHMARKS]
    some = [doc for doc in docs if doc["id"] in expected][:3] + [doc for doc in docs if doc["id"] not in expected][:5]
    result = run_stage(root, some, benchmarks=on_s3, mode="drop")
    assert storage.exists(result["plans"][0].location.artifact_url("ngrams.bin"))
    assert result["plans"][1].params["index"].startswith("s3://")
    assert {doc["id"] for doc in result["rejects"]} == {doc["id"] for doc in some[:3]}
    assert len(result["kept"]) == 5


def test_an_input_read_from_another_stages_rejects_gets_its_own_reason_and_detail(planted, tmp_path):
    """Documents from another stage's rejects carry drop_reason and drop_detail: the scan replaces both."""
    docs, expected = planted
    docs = [dict(doc, drop_reason="quality:reference", drop_detail="score 0.1") for doc in docs]
    result = run_stage(str(tmp_path), docs, mode="drop")
    assert {r["id"] for r in result["rejects"]} == set(expected)
    assert all(r["drop_reason"].startswith("decontaminate:") and r["drop_detail"] is None for r in result["rejects"])


def test_a_local_benchmark_is_named_for_the_shared_nothing_check_and_a_builtin_is_not(tmp_path):
    """Workers on other machines resolve only object storage and packaged files (flows/cluster_checks.py)."""
    from flows.cluster_checks import local_paths

    config = DecontaminateStage.model_validate({"stage": "decontaminate", "benchmarks": [
        {"name": "mine", "path": str(tmp_path / "b.jsonl"), "columns": ["q"]},
        {"name": "shipped", "path": "builtin:handbook-cloze-en", "columns": ["question", "answer"]},
        {"name": "shared", "path": "s3://bucket/b/*.parquet", "columns": ["q"]}]})
    assert local_paths("s3://bucket/run", [config]) == [("stages.decontaminate", str(tmp_path / "b.jsonl"))]


def test_the_output_and_rejects_folders_load_as_they_are(planted, tmp_path):
    """What a summary names loads with datasets (data_dir), polars and DuckDB, exactly its rows (list columns too)."""
    import duckdb
    from test_dag import _read_everywhere

    docs, _ = planted
    result = run_stage(str(tmp_path / "r"), docs, mode="remove_paragraphs")
    location = result["plans"][1].location
    for folder, rows in ((location.data_folder, len(result["kept"])), (location.rejects_folder, len(result["rejects"]))):
        assert rows and _read_everywhere(folder, tmp_path / "hf") == {"datasets": rows, "polars": rows}
        assert duckdb.sql(f"select count(*) from read_parquet('{folder}/**/*.parquet')").fetchall()[0][0] == rows


def test_benchmark_files_are_read_in_batches_in_every_format(tmp_path):
    """Items across several batches (JSON Lines gzipped, Parquet, CSV) come out in order, each
    once; a column no row has is an error naming the file."""
    import gzip
    import json

    from fineflow.tasks.decontaminate import benchmarks

    count = 2 * benchmarks.BATCH_ROWS + 17
    rows = [{"q": f"question {n}", "a": None if n % 5 == 0 else f"answer {n}"} for n in range(count)]
    expected = [f"question {n}" + ("" if n % 5 == 0 else f"\nanswer {n}") for n in range(count)]
    with gzip.open(tmp_path / "items.jsonl.gz", "wt", encoding="utf-8") as handle:
        handle.writelines(json.dumps(row) + "\n" for row in rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "items.parquet", row_group_size=1000)
    pa_csv.write_csv(pa.Table.from_pylist(rows), tmp_path / "items.csv")
    for name in ("items.jsonl.gz", "items.parquet", "items.csv"):
        found = list(benchmarks.read_items("b", str(tmp_path / name), ["q", "a"], "auto"))
        assert found == expected, name
    with pytest.raises(benchmarks.BenchmarkError, match="items.parquet has no column nope"):
        list(benchmarks.read_items("b", str(tmp_path / "items.parquet"), ["q", "nope"], "auto"))
