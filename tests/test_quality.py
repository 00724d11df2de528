"""The quality stage's steps on real documents (the bundled sample, extracted once per module) and
its pure parts (percentiles, buckets, levels, answers), run in-process the way a Dask worker runs
them; the Prefect + Dask path runs in the demo test and the presets' test. The LLM steps are in
test_quality_llm.py (a real llama.cpp server)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from stage_runner import run_plans
from test_tokenize import documents, output_table, run_stage  # noqa: F401 (documents: a module fixture)

from fineflow import registry
from fineflow.planning import plan_stage, preflight_stage
from fineflow.steps import Source, StageInputs
from fineflow.tasks.quality import buckets, embedding, fasttext_model
from fineflow.tasks.quality.metrics import evaluate
from fineflow.tasks.quality.prompts import parse_score
from fineflow.tasks.quality.train import TrainingDataError

HANDBOOK = {"positives": {"url": r"debian-handbook\.info"}, "negatives": {"rest": True}}


def stage(**fields) -> dict:
    return {"stage": "quality", **fields}


def fasttext_stage(**extra) -> dict:
    return stage(classifiers={"ref": {"model": "fasttext", "labels": HANDBOOK, "fasttext": {"epoch": 25, "lr": 1.0, "bucket": 20000}}},
                 scorers={"ref": {"trained": "ref"}}, **extra)


def plans_of(config: dict, root: Path, shards: int = 3) -> dict:
    plans = plan_stage(registry.validate_stage(config), str(root), StageInputs((Source("docs", "f" * 20, "/nowhere", shards),)), "q")
    return {plan.step: plan for plan in plans}


# -- pure parts ---------------------------------------------------------------------------------


def test_weighted_percentiles_on_a_known_distribution():
    scores = np.arange(1, 101, dtype=float)  # 1..100, each weighing the same
    assert buckets.weighted_quantiles(scores, np.ones(100), np.array([0.05, 0.5, 0.95])).tolist() == [5, 50, 95]
    # Weight moves the percentiles: the top document holds half of all tokens.
    weights = np.ones(100)
    weights[-1] = 99
    assert buckets.weighted_quantiles(scores, weights, np.array([0.5, 0.51]))[0] == 99
    assert buckets.weighted_quantiles(scores, weights, np.array([0.51]))[0] == 100
    grid = buckets.quantile_grid(scores, np.ones(100))
    assert buckets.bucket_thresholds(grid).tolist() == list(range(5, 100, 5))
    assert buckets.top_share_threshold(grid, 0.1) == 90  # keep 90..100: 11 of 100 documents (>= the share)


def test_buckets_and_the_nemotron_levels_by_hand():
    thresholds = np.arange(5, 100, 5, dtype=float)
    assert buckets.buckets(np.array([0, 4.9, 5, 50, 94.9, 95, 1000]), thresholds).tolist() == [0, 0, 1, 10, 18, 19, 19]
    # Paper's table: 19 high, 18 medium-high, 12-17 medium, 7-11 medium-low, 0-6 low.
    expected = [0] * 7 + [1] * 5 + [2] * 6 + [3, 4]
    assert buckets.levels(np.arange(20)).tolist() == expected


def test_answers_are_read_or_refused_with_a_reason():
    assert parse_score("Score: 4") == (4.0, None)
    assert parse_score("The extract is useful. **Score: 2**\nScore: 3") == (3.0, None)
    assert parse_score(" 5.") == (5.0, None)
    assert parse_score("Score: 9") == (None, "score 9 outside 0-5")
    assert parse_score("") == (None, "empty answer")
    assert parse_score("MKFS.FAT") == (None, "no score in the answer")
    assert parse_score(None) == (None, "no answer")


def test_metrics_at_the_threshold_and_rank_correlation():
    labels = np.array([0, 1, 2, 3, 4, 5, 3, 1])
    predicted = np.array([0.2, 1.1, 2.4, 2.6, 4.2, 4.9, 1.0, 3.2])
    result = evaluate(labels, predicted, 3, regression=True)
    # truth >= 3: idx 3,4,5,6; predicted rounded >= 3: idx 3,4,5,7
    assert result["confusion"] == {"tp": 3, "fp": 1, "fn": 1, "tn": 3}
    assert result["f1"] == 0.75 and result["held_out"] == 8
    assert result["confusion_scores"][3][3] == 1 and result["confusion_scores"][3][1] == 1
    ranks_labels, ranks_predicted = np.array([1, 2.5, 4, 5.5, 7, 8, 5.5, 2.5]), np.array([1, 3, 4, 5, 7, 8, 2, 6])
    assert result["spearman"] == pytest.approx(np.corrcoef(ranks_labels, ranks_predicted)[0, 1], abs=1e-4)  # Pearson on ranks


# -- training ----------------------------------------------------------------------------------


def test_fasttext_learns_a_separable_task_and_trains_identically(documents, tmp_path):  # noqa: F811
    first = run_stage(fasttext_stage(), tmp_path / "a", documents, "q")
    second = run_stage(fasttext_stage(), tmp_path / "b", documents, "q")
    (train_plan, results) = first["train"]
    evaluation = json.loads(Path(train_plan.location.artifact_url("ref.eval.json")).read_text())
    assert evaluation["held_out"] >= 10 and evaluation["trained_on"] > evaluation["held_out"]
    # Balanced classes: chance is F1 ~0.5; handbook pages against the rest are easy.
    assert evaluation["positives"] * 3 > evaluation["held_out"]
    assert evaluation["f1"] >= 0.7, evaluation
    model_a = Path(train_plan.location.artifact_url("ref.bin")).read_bytes()
    model_b = Path(second["train"][0].location.artifact_url("ref.bin")).read_bytes()
    assert hashlib.sha256(model_a).digest() == hashlib.sha256(model_b).digest()
    # Every document got a score, and the scores separate the classes on the whole input.
    scored = output_table(first, "decide")
    handbook = np.array(["debian-handbook.info" in url for url in scored["url"].to_pylist()])
    values = scored["quality_ref"].to_numpy()
    assert scored.num_rows == first["score"][1][0]["stats"]["docs_in"] + sum(r["stats"]["docs_in"] for r in first["score"][1][1:])
    assert values[handbook].mean() > values[~handbook].mean()


def test_embedding_head_trains_scores_and_matches_the_encoder(documents, tmp_path):  # noqa: F811
    config = stage(
        classifiers={"emb": {"model": "embedding", "labels": HANDBOOK, "embedding": {"max_tokens": 64}, "max_chars": 1500}},
        scorers={"emb": {"trained": "emb", "max_chars": 1500}},
        keep=[{"scorer": "emb", "top_share": 0.5, "unit": "docs"}],
    )
    steps = run_stage(config, tmp_path, documents, "q")
    plan = steps["train"][0]
    head = json.loads(Path(plan.location.artifact_url("emb.head.json")).read_text())
    assert len(head["weights"]) == 385  # 384 dimensions + bias
    evaluation = json.loads(Path(plan.location.artifact_url("emb.eval.json")).read_text())
    assert evaluation["f1"] >= 0.7, evaluation
    kept = output_table(steps, "decide")
    rejects = pa.concat_tables([pq.read_table(f) for f in sorted(Path(steps["decide"][0].location.rejects_folder).glob("*.parquet"))])
    total = kept.num_rows + rejects.num_rows
    assert abs(kept.num_rows - total / 2) <= 2  # the top half of the documents
    assert set(rejects["drop_reason"].to_pylist()) == {"quality:emb"}
    assert "quality_emb" in rejects.column_names  # rejects carry the score
    # A stored score is what the encoder and head give for that text.
    encoder = embedding.encoder("all-minilm-l6-v2", 64)
    text = kept["text"][0].as_py()[:1500]
    again = embedding.apply_head(encoder.embed([text]), np.asarray(head["weights"]))[0]
    assert again == pytest.approx(kept["quality_emb"][0].as_py(), abs=1e-4)


def test_a_threshold_change_re_runs_only_decide(tmp_path):
    before = plans_of(fasttext_stage(keep=[{"scorer": "ref", "top_share": 0.1}]), tmp_path)
    after = plans_of(fasttext_stage(keep=[{"scorer": "ref", "top_share": 0.2, "unit": "tokens"}]), tmp_path)
    changed = [step for step in before if before[step].fingerprint.value != after[step].fingerprint.value]
    assert changed == ["decide"]
    retrained = plans_of(fasttext_stage(keep=[{"scorer": "ref", "top_share": 0.1}]) | {
        "classifiers": {"ref": {"model": "fasttext", "labels": HANDBOOK, "fasttext": {"epoch": 3}}}}, tmp_path)
    assert [s for s in before if before[s].fingerprint.value != retrained[s].fingerprint.value] == [
        "train", "score", "summarize", "calibrate", "decide"]


def test_levels_need_two_scorers_and_keep_rules_their_scorer():
    with pytest.raises(ValidationError, match="min_level needs the ensemble"):
        registry.validate_stage(fasttext_stage(keep=[{"min_level": 2}]))
    with pytest.raises(ValidationError, match="not one of scorers"):
        registry.validate_stage(fasttext_stage(keep=[{"scorer": "nope", "min": 0.5}]))
    with pytest.raises(ValidationError, match="not a 0-5 regressor"):
        registry.validate_stage(fasttext_stage(keep=[{"scorer": "ref", "min_int": 3}]))
    with pytest.raises(ValidationError, match="exactly one of min, min_int, top_share or min_level"):
        registry.validate_stage(fasttext_stage(keep=[{"scorer": "ref", "min": 0.5, "top_share": 0.1}]))
    with pytest.raises(ValidationError, match="labels from annotations need an `annotate` section"):
        registry.validate_stage(stage(classifiers={"x": {"labels": {"annotations": True}}}, scorers={"x": {"trained": "x"}}))
    with pytest.raises(ValidationError, match="fastText model is a classifier"):
        registry.validate_stage(stage(classifiers={"x": {"labels": HANDBOOK, "regression": True}}, scorers={"x": {"trained": "x"}}))


# -- bad input ---------------------------------------------------------------------------------


def test_missing_or_wrong_models_are_errors_before_any_work(tmp_path):
    missing = registry.validate_stage(stage(scorers={"dclm": {"fasttext": str(tmp_path / "absent.bin")}}))
    with pytest.raises(ValueError, match="scorers.dclm.fasttext: model not found"):
        preflight_stage(missing)
    wrong = tmp_path / "not-a-model.bin"
    wrong.write_bytes(b"this is text, not a fastText model\n" * 10)
    with pytest.raises(ValueError, match=r"^scorers.dclm.fasttext: not-a-model.bin is not a loadable fastText model \(no fastText header\)$"):
        preflight_stage(registry.validate_stage(stage(scorers={"dclm": {"fasttext": str(wrong)}})))
    with pytest.raises(ValueError, match="no config.json"):
        preflight_stage(registry.validate_stage(stage(scorers={"edu": {"hf": str(tmp_path)}})))
    model = tmp_path / "ref.bin"
    fasttext_model.train(["a lesson"] * 4 + ["buy now"] * 4, [True] * 4 + [False] * 4, registry.validate_stage(
        fasttext_stage()).classifiers["ref"].fasttext.model_dump(), 0, str(model))
    with pytest.raises(ValueError, match="scorers.m.fasttext: ref.bin: the fastText model has no label '__label__cc'"):
        preflight_stage(registry.validate_stage(stage(scorers={"m": {"fasttext": str(model), "label": "__label__cc"}})))
    assert preflight_stage(registry.validate_stage(stage(scorers={"m": {"fasttext": str(model)}}))) == []


def test_one_class_and_empty_label_sets_say_so(documents, tmp_path):  # noqa: F811
    only_positives = stage(classifiers={"ref": {"labels": {"positives": {"url": "."}, "negatives": {"url": "^nothing$"}}}},
                           scorers={"ref": {"trained": "ref"}})
    with pytest.raises(TrainingDataError, match="only positive documents"):
        run_stage(only_positives, tmp_path / "a", documents, "q")
    column = stage(classifiers={"ref": {"labels": {"column": "language_score"}, "positive_from": 2}}, scorers={"ref": {"trained": "ref"}})
    with pytest.raises(TrainingDataError, match="only negative documents"):
        run_stage(column, tmp_path / "b", documents, "q")
    text_column = stage(classifiers={"ref": {"labels": {"column": "language"}}}, scorers={"ref": {"trained": "ref"}})
    with pytest.raises(ValueError, match="holds numbers or booleans"):
        run_stage(text_column, tmp_path / "c", documents, "q")


def test_a_hugging_face_classifier_by_path_scores_as_transformers_does(tmp_path):
    """A FineWeb-Edu-style one-output model (regressor: raw logit, clip-and-round int) and a two-class
    model (probability of the label), tiny and random, built here; torch is optional, so this runs
    where `fineflow[hf-models]` is installed."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from fineflow.tasks.quality.scorers import HFScorer, int_score

    tokenizer = transformers.BertTokenizerFast.from_pretrained(str(embedding.model_folder(embedding.PACKAGED)))
    texts = ["A lesson on fractions for pupils.", "Buy cheap shoes now! " * 50, "short"]
    for labels in (1, 2):
        torch.manual_seed(0)
        config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                         intermediate_size=64, num_labels=labels, id2label={0: "lq", 1: "hq"} if labels == 2 else None)
        model = transformers.BertForSequenceClassification(config).eval()
        model.save_pretrained(tmp_path / str(labels))
        tokenizer.save_pretrained(tmp_path / str(labels))
        scorer = HFScorer(str(tmp_path / str(labels)), "__label__hq", "cpu", 2)
        with torch.no_grad():
            logits = model(**tokenizer(texts, return_tensors="pt", padding=True, truncation=True)).logits
        expected = logits[:, 0] if labels == 1 else torch.softmax(logits, -1)[:, 1]
        assert scorer.regression == (labels == 1)
        assert np.abs(scorer.score(texts) - expected.numpy()).max() < 1e-5
    assert int_score(np.array([-1.0, 2.5, 3.5, 7.0])).tolist() == [0, 2, 4, 5]  # banker's rounding, as FineWeb-Edu


def test_an_empty_annotation_sample_says_so_before_asking(documents, tmp_path):  # noqa: F811
    from fineflow.tasks.quality.annotate import EmptySample

    config = stage(annotate={"server": {"base_url": "http://127.0.0.1:9/v1", "model": "m"}, "languages": ["xx"], "sample_size": 4},
                   classifiers={"edu": {"model": "embedding", "labels": {"annotations": True}}}, scorers={"edu": {"trained": "edu"}})
    with pytest.raises(EmptySample, match="no document of xx in this stage's input"):
        run_stage(config, tmp_path, documents, "q")


def test_positives_and_negatives_from_other_stages_of_the_dag(documents, tmp_path):  # noqa: F811
    """Two stages of the DAG as the classes: the planner runs them first, and the classifier trains
    on their committed documents, chained on their fingerprints."""
    from fineflow.dag import build_dag, plan_dag

    crawl = {"stage": "crawl", "inputs": [str(p) for p in sorted((Path(__file__).parent.parent / "examples" / "data").glob("*.warc.gz"))],
             "extractor": "resiliparse"}
    split = {"stage": "filter", "name": "split", "filters": [{"name": "url", "domains_file": str(tmp_path / "domains.txt"),
             **{key: None for key in ("urls_file", "banned_words_file", "soft_banned_words_file", "banned_subwords_file")}}]}
    (tmp_path / "domains.txt").write_text("debian-handbook.info\n")
    quality = stage(name="q", input="crawl", scorers={"ref": {"trained": "ref"}}, classifiers={"ref": {
        "labels": {"positives": {"stage": "split.rejects"}, "negatives": {"stage": "split"}}, "fasttext": {"epoch": 25, "lr": 1.0, "bucket": 20000}}})
    configs = [registry.validate_stage(c) for c in (quality, crawl, split)]  # quality first in the file: the DAG orders it last
    assert [node.name for node in build_dag(configs)] == ["crawl", "split", "q"]
    planned = dict((node.name, plans) for node, plans in plan_dag(configs, str(tmp_path / "store")))
    train_plan = next(p for p in planned["q"] if p.step == "train")
    split_decide = next(p for p in planned["split"] if p.step == "decide")
    assert train_plan.fingerprint.components["params"]["label_stages"] == {
        "ref.positives": f"{split_decide.fingerprint.value}:rejects", "ref.negatives": split_decide.fingerprint.value}
    assert train_plan.params["label_stages"]["ref.positives"][0].startswith(split_decide.location.rejects_folder)
    for name in ("crawl", "split", "q"):  # run them in DAG order, in-process
        run_plans(planned[name])
    evaluation = json.loads(Path(train_plan.location.artifact_url("ref.eval.json")).read_text())
    assert evaluation["held_out"] >= 10 and evaluation["f1"] >= 0.7, evaluation


def test_the_cli_prints_each_classifiers_held_out_agreement():
    from rich.console import Console

    from fineflow.cli import _classifier_table

    stage = {"name": "edu", "classifiers": {"edu": {"model": "embedding", "trained_on": 12, "held_out": 4, "precision": 0.5,
                                                    "recall": 1.0, "f1": 0.6667, "spearman": None}}}
    console = Console(width=200, record=True)
    console.print(_classifier_table(stage))
    row = next(line for line in console.export_text().splitlines() if "embedding" in line)
    assert [cell.strip() for cell in row.split("│")[1:-1]] == ["edu", "embedding", "12", "4", "0.5", "1", "0.6667", "-"]


def test_a_bad_url_pattern_is_a_configuration_error_and_documents_without_text_are_counted(documents, tmp_path):  # noqa: F811
    with pytest.raises(ValidationError, match="url: not a regular expression"):
        registry.validate_stage(stage(classifiers={"c": {"labels": {"positives": {"url": "debian-(handbook"}, "negatives": {"rest": True}}}},
                                      scorers={"c": {"trained": "c"}}))
    folder = tmp_path / "docs"
    folder.mkdir()
    for n, path in enumerate(sorted(documents.glob("part-*.parquet"))):
        table = pq.read_table(path)
        if n == 0:  # the first two documents lose their text
            table = table.set_column(table.schema.get_field_index("text"), "text",
                                     pa.array([None, None] + table["text"].to_pylist()[2:], pa.string()))
        pq.write_table(table, folder / path.name)
    steps = run_stage(fasttext_stage(), tmp_path / "store", folder, "q")
    first = steps["sample"][1][0]["stats"]
    assert first["skips"] == {"no_text": 2} and first["docs_in"] == pq.read_metadata(folder / "part-00000.parquet").num_rows
    # Not sampled for training, but still scored and decided: no document is lost.
    assert output_table(steps, "decide").num_rows == sum(pq.read_metadata(p).num_rows for p in folder.glob("*.parquet"))


def test_a_text_that_is_not_utf8_is_rejected_by_itself_and_the_shard_goes_on(tmp_path):
    """Bytes from another writer: quality failed its shard with ArrowInvalid naming no document."""
    from test_quality_properties import INVALID_UTF8, document_table, run_steps

    model = tmp_path / "model.bin"
    fasttext_model.train(["a lesson about cells"] * 4 + ["buy now cheap"] * 4, [True] * 4 + [False] * 4,
                         {"epoch": 5, "lr": 1.0, "dim": 10, "word_ngrams": 2, "min_count": 1, "ws": 5, "bucket": 2000}, 0, str(model))
    docs = document_table([b"a lesson about cells", INVALID_UTF8, b"buy now cheap"], ["en", "en", None])
    result, kept, rejects = run_steps(docs, str(model), tmp_path / "run", keep=[{"scorer": "ft", "min": 0.0}], ensemble=True,
                                      scorers=2, per_language=True)
    assert kept["id"].to_pylist() == ["d0", "d2"]
    assert rejects.select(["id", "drop_reason", "drop_detail"]).to_pylist() == [
        {"id": "d1", "drop_reason": "quality:undecodable", "drop_detail": "text is not valid UTF-8 (invalid continuation byte at byte 3)"}]
    assert rejects["text"].to_pylist() == ["caf\ufffd \ufffd\ufffd"]  # readable, with replacement characters
    assert rejects["quality_ft"].to_pylist() == [None] and rejects["quality_level"].to_pylist() == [None]
    assert result["stats"]["drop_reasons"] == {"quality:undecodable": 1}


def test_the_sample_step_leaves_out_a_text_that_is_not_utf8_and_counts_it(tmp_path):
    from test_quality_properties import INVALID_UTF8, document_table

    from fineflow.tasks.quality.sample import sample_shard

    pq.write_table(document_table([b"a lesson", INVALID_UTF8, None], ["en", "en", "en"]), tmp_path / "in.parquet")
    params = {"annotate": {"sample_size": 5, "per_language": False, "languages": None, "max_chars": 100, "seed": 0}}
    result = sample_shard({"shard": 0, "input": str(tmp_path / "in.parquet")}, params, str(tmp_path / "out.parquet"), None)
    assert result["stats"]["skips"] == {"no_text": 1, "undecodable": 1} and result["stats"]["docs_in"] == 3
    assert pq.read_table(tmp_path / "out.parquet")["text"].to_pylist() == ["a lesson"]


# -- calibration floor, full texts, hf models (issue 28) ------------------------------------------


def _two_class_model(path: Path) -> str:
    texts = [f"a lesson about topic {i} with words" for i in range(40)] + [f"buy now cheap deal {i}" for i in range(40)]
    fasttext_model.train(texts, [True] * 40 + [False] * 40, {"epoch": 5, "lr": 1.0, "dim": 10, "word_ngrams": 2, "min_count": 1,
                                                             "ws": 5, "bucket": 2000}, 0, str(path))
    return str(path)


def test_a_language_below_the_floor_uses_the_global_thresholds_and_says_why(tmp_path):
    """One document of xx (a low score) and 60 tied documents of yy got percentiles of their own: every one of
    them at or above its language's 95th percentile, bucket 19, level 4, which rebalance upsamples."""
    from test_quality_properties import document_table, run_steps

    from fineflow.tasks.quality.report import figures, quality_tables, summary_fields

    model = _two_class_model(tmp_path / "model.bin")
    english = [f"a lesson about topic {i} with words" if i % 2 else f"buy now cheap deal number {i} today" for i in range(60)]
    texts = [*english, "buy now cheap deal", *["buy now cheap shoes"] * 60]
    languages = ["en"] * 60 + ["xx"] + ["yy"] * 60
    result, kept, _ = run_steps(document_table([t.encode() for t in texts], languages), model, tmp_path / "run", keep=[],
                                scorers=2, ensemble=True, per_language=True)
    level = dict(zip(kept["id"].to_pylist(), kept["quality_level"].to_pylist()))
    bucket = dict(zip(kept["id"].to_pylist(), kept["quality_bucket"].to_pylist()))
    assert bucket["d60"] < 19 and level["d60"] < 4  # xx: the global thresholds place its low score
    assert all(bucket[f"d{n}"] < 19 for n in range(61, 121))  # yy: tied, also judged globally
    assert max(bucket.values()) == 19  # en kept its own thresholds: its best documents still reach the top
    per_language = result["calibrate"]["stats"]["per_language"]
    english_counts = per_language["scorers"]["ft"]["en"]
    assert english_counts["documents"] == 60 and english_counts["distinct_scores"] >= 20 and english_counts["own_thresholds"] == 1
    assert per_language["scorers"]["ft"]["yy"] == {"documents": 60, "distinct_scores": 1, "own_thresholds": 0}
    summary = {"name": "q", **summary_fields({"calibrate": result["calibrate"]["stats"], "decide": result["stats"]})}
    assert summary["calibration"]["fallbacks"] == [
        "language xx: 1 document (< min_docs 50), global thresholds used",
        "language yy: 1 distinct score of ft (< min_distinct_scores 20), global thresholds used",
        "language yy: 1 distinct score of ft2 (< min_distinct_scores 20), global thresholds used",
    ]
    table = next(t for t in quality_tables(summary) if t.key == "calibration")
    assert {(r["language"], r["scorer"], r["thresholds"], r["why"]) for r in table.rows if r["language"] == "xx"} == {
        ("xx", "ft", "global", "1 document (< min_docs 50)"), ("xx", "ft2", "global", "1 document (< min_docs 50)")}
    chart = dict(figures(summary))["quality-calibration"]
    assert "1 distinct score (< min_distinct_scores 20)" in chart.data[1].text
    # With a floor of one document and one score, xx's own percentiles come back (the old behaviour, by choice).
    result, kept, _ = run_steps(document_table([t.encode() for t in texts], languages), model, tmp_path / "floorless", keep=[],
                                scorers=2, ensemble=True, per_language=True, min_docs=1, min_distinct_scores=1)
    assert dict(zip(kept["id"].to_pylist(), kept["quality_bucket"].to_pylist()))["d60"] == 19


def test_the_floor_is_range_checked():
    for bad in ({"min_docs": 0}, {"min_distinct_scores": 0}, {"min_docs": 10**9}, {"min_docs": 1.5}):
        with pytest.raises(ValidationError, match="min_d"):
            registry.validate_stage(fasttext_stage(calibrate={"per_language": True, **bad}))
    floor = registry.validate_stage(fasttext_stage(calibrate={"per_language": True})).calibrate
    assert (floor.min_docs, floor.min_distinct_scores) == (50, 20)


def _preset_stage(name: str) -> dict:
    import yaml

    pipeline = yaml.safe_load((Path(__file__).parent.parent / "examples" / f"quality-{name}.yaml").read_text())
    return next(stage for stage in pipeline["stages"] if stage["stage"] == "quality")


def test_the_dclm_preset_scores_the_whole_text(documents, tmp_path):  # noqa: F811
    """DCLM and PreSelect score whole documents; the first 10,000 characters were scored. Two documents that
    differ only after their first 10,000 characters got the same score."""
    folder = tmp_path / "docs"
    folder.mkdir()
    shards = sorted(documents.glob("part-*.parquet"))
    for path in shards:
        pq.write_table(pq.read_table(path), folder / path.name)
    table = pa.concat_tables([pq.read_table(p) for p in shards])
    urls, texts = table["url"].to_pylist(), table["text"].to_pylist()
    handbook = "\n".join(t for u, t in zip(urls, texts) if "debian-handbook.info" in u)[:20_000]
    other = "\n".join(t for u, t in zip(urls, texts) if "debian-handbook.info" not in u)
    filler = other[:10_000]
    assert len(filler) == 10_000 and len(handbook) == 20_000
    probes = table.slice(0, 2)
    probes = probes.set_column(probes.schema.get_field_index("id"), "id", pa.array(["probe-handbook", "probe-other"]))
    probes = probes.set_column(probes.schema.get_field_index("url"), "url", pa.array(["https://probe.example/a", "https://probe.example/b"]))
    probes = probes.set_column(probes.schema.get_field_index("text"), "text",
                               pa.array([filler + "\n" + handbook, filler + "\n" + other[10_000:30_000]]))
    pq.write_table(probes.cast(table.schema), folder / f"part-{len(shards):05d}.parquet")

    config = _preset_stage("dclm")
    steps = run_stage(config, tmp_path / "store", folder, "dclm")
    kept, rejects = output_table(steps, "decide"), pa.concat_tables(
        [pq.read_table(f) for f in sorted(Path(steps["decide"][0].location.rejects_folder).glob("*.parquet"))])
    scores = {i: s for t in (kept, rejects) for i, s in zip(t["id"].to_pylist(), t["quality_dclm"].to_pylist())}
    assert scores["probe-handbook"] > scores["probe-other"]  # decided by the text after 10,000 characters
    assert steps["score"][0].params["scorers"]["dclm"]["max_chars"] == 1_000_000  # the whole text, to a memory ceiling


def test_presets_score_whole_texts_and_encoders_keep_their_window(tmp_path):
    for name in ("dclm", "preselect"):
        config = registry.validate_stage(_preset_stage(name))
        assert [config.scored_chars(s) for s in config.scorers] == [1_000_000]
        assert [c.train_chars for c in config.classifiers.values()] == [1_000_000]
    config = registry.validate_stage(stage(classifiers={"emb": {"model": "embedding", "labels": HANDBOOK}},
                                           scorers={"emb": {"trained": "emb"}, "own": {"trained": "emb", "max_chars": 700}}))
    assert (config.scored_chars("emb"), config.scored_chars("own"), config.classifiers["emb"].train_chars) == (10_000, 700, 10_000)
    plans = plans_of(fasttext_stage() | {"scorers": {"ref": {"trained": "ref"}, "cut": {"trained": "ref", "max_chars": 500}}}, tmp_path)
    assert plans["score"].params["max_chars"] == 1_000_000
    assert {n: s["max_chars"] for n, s in plans["score"].params["scorers"].items()} == {"ref": 1_000_000, "cut": 500}


def test_scoring_runs_in_bounded_batches_and_reads_past_them(tmp_path):
    """Whole texts are scored a few million characters at a time, a longer document alone; its end still counts."""
    from test_quality_properties import document_table, run_steps

    model = _two_class_model(tmp_path / "model.bin")
    neutral = "the of and to in is " * 700_000  # 14 M characters: more than three batches' limit
    docs = document_table([(neutral + "a lesson about topic 3 with words " * 30).encode(), (neutral + "buy now cheap deal " * 30).encode(),
                           b"short"], ["en"] * 3)
    result, kept, _ = run_steps(docs, model, tmp_path / "run", keep=[], max_chars=20_000_000)  # as a user may set it
    lesson, buy = kept["quality_ft"].to_pylist()[:2]
    assert lesson > buy
    assert result["score"]["stats"]["docs_cut"] == {"ft": 0}
    # By default a document is read to the memory ceiling (1,000,000 characters), and the cut is counted.
    result, kept, _ = run_steps(docs, model, tmp_path / "default", keep=[])
    assert result["score"]["stats"]["docs_cut"] == {"ft": 2}
    assert kept["quality_ft"][0].as_py() == kept["quality_ft"][1].as_py()  # their first million characters are the same

    from fineflow.tasks.quality.score import batches

    assert batches(np.array([3, 3, 3, 10, 1, 1]), limit=6) == [(0, 2), (2, 3), (3, 4), (4, 6)]
    assert batches(np.zeros(0, np.int64)) == []


def _hf_folder(path: Path, config: dict) -> str:
    """A model folder's config.json as transformers writes it (the weights are not read to judge it)."""
    path.mkdir(parents=True, exist_ok=True)
    (path / "config.json").write_text(json.dumps({"architectures": ["BertForSequenceClassification"], "model_type": "bert", **config}))
    return str(path)


def test_an_hf_scorer_needs_a_label_its_model_has_and_a_classifier_has_no_int_score(tmp_path):
    two = _hf_folder(tmp_path / "two", {"id2label": {"0": "lq", "1": "hq"}, "label2id": {"lq": 0, "hq": 1}})
    three = _hf_folder(tmp_path / "three", {"id2label": {"0": "Low", "1": "Medium", "2": "High"}})
    one = _hf_folder(tmp_path / "one", {"id2label": {"0": "LABEL_0"}, "label2id": {"LABEL_0": 0}, "problem_type": "regression"})
    # A missing label was the last class, in silence.
    with pytest.raises(ValueError, match=r"^scorers.nv.hf: three: the model has no label 'hq' \(its labels: Low, Medium, High\)"):
        preflight_stage(registry.validate_stage(stage(scorers={"nv": {"hf": three}})))
    with pytest.raises(ValueError, match="no label 'hq'"):
        plans_of(stage(scorers={"nv": {"hf": three}}), tmp_path / "store")
    assert preflight_stage(registry.validate_stage(stage(scorers={"nv": {"hf": three, "label": "High"}}))) == []
    # Two classes: a classifier by its config, so no 0-5 int score, and a min_int rule on it is refused.
    plans = plans_of(stage(scorers={"two": {"hf": two}, "edu": {"hf": one}}), tmp_path / "store")
    assert {n: s["regression"] for n, s in plans["score"].params["scorers"].items()} == {"two": False, "edu": True}
    with pytest.raises(ValueError, match="keep: scorer two is not a 0-5 regressor"):
        preflight_stage(registry.validate_stage(stage(scorers={"two": {"hf": two}}, keep=[{"scorer": "two", "min_int": 3}])))
    with pytest.raises(ValidationError, match="not a 0-5 regressor"):
        registry.validate_stage(stage(scorers={"two": {"hf": two, "regression": False}}, keep=[{"scorer": "two", "min_int": 3}]))
    # A stated kind must fit the outputs.
    with pytest.raises(ValueError, match="a 0-5 regressor has one output, this model has 2 \\(lq, hq\\)"):
        preflight_stage(registry.validate_stage(stage(scorers={"two": {"hf": two, "regression": True}})))
    with pytest.raises(ValueError, match="a one-output model has no class probabilities"):
        preflight_stage(registry.validate_stage(stage(scorers={"edu": {"hf": one, "regression": False}})))
    with pytest.raises(ValidationError, match="regression is an hf scorer's option"):
        registry.validate_stage(stage(scorers={"ft": {"fasttext": "/m.bin", "regression": True}}))


def test_a_real_two_class_hf_model_scores_without_an_int_column(tmp_path):
    """Real (tiny, random) transformers models through the score step: a two-class model's probability has no
    quality_<name>_int; a FineWeb-Edu-style one-output model has; a label the model lacks is refused at load."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    from test_quality_properties import document_table

    from fineflow.tasks.quality.score import score_shard
    from fineflow.tasks.quality.scorers import HFScorer, ScorerError

    tokenizer = transformers.BertTokenizerFast.from_pretrained(str(embedding.model_folder(embedding.PACKAGED)))
    for labels in (1, 2):
        torch.manual_seed(0)
        config = transformers.BertConfig(vocab_size=tokenizer.vocab_size, hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
                                         intermediate_size=64, num_labels=labels, id2label={0: "lq", 1: "hq"} if labels == 2 else None)
        transformers.BertForSequenceClassification(config).save_pretrained(tmp_path / str(labels))
        tokenizer.save_pretrained(tmp_path / str(labels))
    config = registry.validate_stage(stage(scorers={"two": {"hf": str(tmp_path / "2")}, "edu": {"hf": str(tmp_path / "1")}}))
    plans = plans_of(config.model_dump(mode="json"), tmp_path / "store")
    pq.write_table(document_table([b"A lesson on fractions.", b"Buy cheap shoes now!"], ["en", "en"]), tmp_path / "in.parquet")
    score_shard({"shard": 0, "input": str(tmp_path / "in.parquet")}, plans["score"].params, str(tmp_path / "scores.parquet"), None)
    scores = pq.read_table(tmp_path / "scores.parquet")
    assert "quality_two_int" not in scores.column_names and "quality_edu_int" in scores.column_names
    assert all(0 < p < 1 for p in scores["quality_two"].to_pylist())
    with pytest.raises(ScorerError, match=r"the model has no label 'High' \(its labels: lq, hq\)"):
        HFScorer(str(tmp_path / "2"), "High", "cpu", 2)


@pytest.mark.integration
def test_an_hf_model_folder_on_s3_plans_on_the_client_and_reaches_a_worker_as_a_folder(seaweed, tmp_path, monkeypatch):
    """Past one machine the model lives in object storage: planning reads its config.json and hashes its files
    there (it used to open() a local path), and a worker gets a local folder (the per-machine model cache)."""
    import uuid

    from fineflow import storage
    from fineflow.model_cache import CACHE_ENV

    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "models"))
    folder = f"s3://fineflow-test/hf-models/{uuid.uuid4().hex}/two-class"
    config = {"model_type": "bert", "id2label": {"0": "lq", "1": "hq"}}
    storage.write_bytes(storage.join(folder, "config.json"), json.dumps(config).encode())
    storage.write_bytes(storage.join(folder, "model.safetensors"), b"weights v1")
    storage.write_bytes(storage.join(folder, "tokenizer", "vocab.txt"), b"[PAD]\n[UNK]\n")  # a sub-folder
    with pytest.raises(ValueError, match=r"two-class: the model has no label 'High' \(its labels: lq, hq\)"):
        preflight_stage(registry.validate_stage(stage(scorers={"two": {"hf": folder, "label": "High"}})))
    first = plans_of(stage(scorers={"two": {"hf": folder}}), tmp_path / "store")["score"]
    assert first.params["scorers"]["two"]["regression"] is False
    storage.write_bytes(storage.join(folder, "model.safetensors"), b"weights v2")  # new weights: a new fingerprint
    assert plans_of(stage(scorers={"two": {"hf": folder}}), tmp_path / "store")["score"].fingerprint != first.fingerprint

    local = storage.local_file(folder)
    assert sorted(p.name for p in Path(local).iterdir()) == ["config.json", "model.safetensors", "tokenizer"]
    assert (Path(local) / "model.safetensors").read_bytes() == b"weights v2"
    assert (Path(local) / "tokenizer" / "vocab.txt").read_bytes() == b"[PAD]\n[UNK]\n"
    assert json.loads((Path(local) / "config.json").read_text()) == config
    assert storage.local_file(folder) == local
    # An entry the folder links to was evicted: asking again fetches it, and the links are whole again.
    os.unlink(os.readlink(Path(local) / "model.safetensors"))
    assert storage.local_file(folder) == local and (Path(local) / "model.safetensors").read_bytes() == b"weights v2"
    from fineflow.model_cache import CAP_ENV, cached_folder

    monkeypatch.setenv(CAP_ENV, "20")  # the folder's files would evict each other: refused, not half served
    with pytest.raises(OSError, match="more than the model cache may hold"):
        cached_folder(folder)
    monkeypatch.delenv(CAP_ENV)
    storage.write_bytes(storage.join(folder, "model.safetensors"), b"weights v3")  # rewritten: another folder
    changed = cached_folder(folder)
    assert changed != local and (Path(changed) / "model.safetensors").read_bytes() == b"weights v3"
