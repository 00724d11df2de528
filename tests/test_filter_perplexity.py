"""The perplexity filter (CCNet's normalisation and document perplexity under a KenLM model the
test writes as ARPA text) and the ``where`` condition every filter rule takes."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from pydantic import ValidationError

from fineflow.documents import DOCUMENT_SCHEMA, read_input, write_table
from fineflow.tasks.filter.config import FilterStage
from fineflow.tasks.filter.decide import decide_shard
from fineflow.tasks.filter.perplexity import ccnet_normalize, document_perplexity, load_model
from fineflow.tasks.filter.plan import build_params, input_columns
from fineflow.tasks.filter.signals import signals_shard

# log10 probabilities; every back-off weight 0, so an unseen bigram scores as its unigram
UNIGRAMS = {"<s>": -99.0, "</s>": -0.5, "<unk>": -3.0, "the": -0.6, "cat": -1.0, "sat": -1.2, "0": -1.5}
BIGRAMS = {("<s>", "the"): -0.1, ("the", "cat"): -0.2}


def write_arpa(path: Path) -> str:
    lines = ["\\data\\", f"ngram 1={len(UNIGRAMS)}", f"ngram 2={len(BIGRAMS)}", "", "\\1-grams:"]
    lines += [f"{p}\t{w}\t0" for w, p in UNIGRAMS.items()]
    lines += ["", "\\2-grams:"] + [f"{p}\t{a} {b}" for (a, b), p in BIGRAMS.items()] + ["", "\\end\\", ""]
    path.write_text("\n".join(lines))
    return str(path)


def expected_log10(words: list[str]) -> float:
    sequence = ["<s>", *words, "</s>"]
    return sum(BIGRAMS.get((a, b), UNIGRAMS.get(b, UNIGRAMS["<unk>"])) for a, b in zip(sequence, sequence[1:]))


@pytest.fixture(scope="module")
def model_file(tmp_path_factory) -> str:
    return write_arpa(tmp_path_factory.mktemp("lm") / "en.arpa")


def test_ccnet_normalisation():
    assert ccnet_normalize("  Ça Coûte 12,50 €？ «Oui» — ＤＯ  ") == 'ca coute 00,00 €? "oui"  -  ｄｏ'  # — is " - ", spaces kept as CCNet does
    assert ccnet_normalize("\u200bzero\x07width") == "zerowidth"  # non-printing characters go
    assert ccnet_normalize("０１２") == "000"  # every Unicode digit
    assert ccnet_normalize("   ") == ""


def test_document_perplexity_weighs_lines_by_their_words(model_file):
    model = load_model(model_file)
    text = "The cat SAT\n\nthe 7 dog"
    lines = [["the", "cat", "sat"], ["the", "0", "dog"]]
    log_score = sum(expected_log10(words) for words in lines)
    expected = round(10 ** (-log_score / (4 + 4)), 1)
    assert document_perplexity(model, text) == pytest.approx(expected)
    assert document_perplexity(model, "the cat") < document_perplexity(model, "sat sat dog")
    assert document_perplexity(model, "\n \n") is None


def stage(filters: list[dict]) -> FilterStage:
    return FilterStage.model_validate({"stage": "filter", "filters": filters})


def test_signals_and_decide_with_a_condition(model_file, tmp_path):
    config = stage([
        {"name": "perplexity", "model_files": {"en": model_file}, "max_perplexity": 20.0},
        {"name": "gopher_quality", "min_doc_words": 3, "where": {"column": "quality_level", "op": "<=", "value": 1}},
    ])
    signal_params, decide_params = build_params(config)
    assert "where" not in str(signal_params)  # a condition changes no measurement
    assert decide_params["filters"][1]["where"] == {"column": "quality_level", "op": "<=", "value": 1}
    assert input_columns(config) == [("quality_level", "filters.gopher_quality.where.column")]

    docs = {  # id: (language, text, quality_level)
        "fluent": ("en", "the cat sat", 3),
        "garbled": ("en", "dog dog dog dog", 3),
        "german": ("de", "hund hund hund hund", 3),  # no German model: not measured, kept by the rule
        "short_low": ("en", "the cat", 0),  # too few words, and low quality: judged, dropped
        "short_high": ("en", "the cat", 2),  # too few words but high quality: not judged, kept
        "short_null": ("en", "the cat", None),  # a null never meets the condition
    }
    rows = [{"id": i, "url": f"https://x.org/{i}", "text": t, "language": lang, "language_score": 0.9} for i, (lang, t, _) in docs.items()]
    table = pa.Table.from_pylist(rows, schema=DOCUMENT_SCHEMA).append_column("quality_level", pa.array([q for *_, q in docs.values()], pa.int64()))
    write_table(str(tmp_path / "in.parquet"), table)
    shard = {"shard": 0, "input": str(tmp_path / "in.parquet"), "signals": str(tmp_path / "signals.parquet")}
    signals_shard(shard, signal_params, shard["signals"], str(tmp_path / "unused.parquet"))
    decide_shard(shard, decide_params, str(tmp_path / "kept.parquet"), str(tmp_path / "rejects.parquet"))

    signals = read_input({"input": shard["signals"]})
    perplexity = dict(zip(signals.column("id").to_pylist(), signals.column("perplexity").to_pylist()))
    assert perplexity["german"] is None and perplexity["fluent"] < 20 < perplexity["garbled"]
    kept = read_input({"input": str(tmp_path / "kept.parquet")})
    rejects = read_input({"input": str(tmp_path / "rejects.parquet")})
    assert sorted(kept.column("id").to_pylist()) == ["fluent", "german", "short_high", "short_null"]
    reasons = dict(zip(rejects.column("id").to_pylist(), rejects.column("drop_reason").to_pylist()))
    assert reasons == {"garbled": "perplexity:too_high", "short_low": "gopher_quality:short_doc"}


def test_config_errors(model_file, tmp_path):
    with pytest.raises(ValueError, match="does not exist"):
        build_params(stage([{"name": "perplexity", "model_files": {"en": str(tmp_path / "missing.arpa")}}]))
    (tmp_path / "broken.arpa").write_text("not a model\n")
    with pytest.raises(ValueError, match="is not a KenLM model"):
        load_model(str(tmp_path / "broken.arpa"))
    for bad in ({"column": "q", "op": "=~", "value": 1}, {"column": "q", "op": "<", "value": float("nan")}, {"column": "", "op": "<", "value": 1}):
        with pytest.raises(ValidationError):
            stage([{"name": "c4", "where": bad}])
    with pytest.raises(ValidationError, match="max_perplexity"):
        stage([{"name": "perplexity", "model_files": {"en": model_file}, "max_perplexity": float("inf")}])


def test_a_condition_column_missing_from_the_input_is_named(model_file):
    from fineflow.input_schemas import InputSchemaError, check_columns

    config = stage([{"name": "c4", "where": {"column": "quality_level", "op": "<", "value": 2}}])
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    with pytest.raises(InputSchemaError, match="filters.c4.where.column: input crawl has no column 'quality_level'"):
        check_columns("filter", input_columns(config), [("crawl", schema)])


def test_max_perplexity_per_language(model_file, tmp_path):
    (tmp_path / "configs").mkdir()
    (tmp_path / "configs" / "fr.yaml").write_text("perplexity:\n  max_perplexity: 5\n")
    config = FilterStage.model_validate({
        "stage": "filter", "language_configs": str(tmp_path / "configs"),
        "filters": [{"name": "perplexity", "model_files": {"en": model_file, "fr": model_file}}],
    })
    assert build_params(config)[1]["per_language"] == {"fr": {"perplexity": {"max_perplexity": 5}}}
