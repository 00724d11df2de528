"""The filter stage's pure functions on real pages of the sample (Arabic, Chinese, Russian,
English), on language configs, and on bad input; the two steps as plain shard functions."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fineflow.tasks.crawl.inputs import describe_files, plan_shards
from fineflow.tasks.crawl.stage import extract_shard
from fineflow.tasks.filter.config import FilterStage
from fineflow.tasks.filter.decide import Decider, decide_shard
from fineflow.tasks.filter.language_configs import LanguageConfigError, load_language_configs
from fineflow.tasks.filter.plan import build_params
from fineflow.tasks.filter.signals import SignalSettings, document_signals, signals_shard

CRAWL_PARAMS = dict(
    extractor="resiliparse", extraction_timeout_s=30.0, include_text_plain=False, keep_truncated=False,
    max_record_bytes=64 << 20, langid_model="lid.176", url_filter=None, url_filter_options={},
)
ALL_FILTERS = [
    {"name": "url"},
    {"name": "language"},
    {"name": "gopher_repetition"},
    {"name": "gopher_quality"},
    {"name": "c4"},
    {"name": "fineweb_quality"},
]


@pytest.fixture(scope="module")
def crawled(sample_warc, tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("crawl")
    shard = plan_shards(describe_files([str(sample_warc)], None, True), 1 << 30)[0]
    extract_shard(shard, CRAWL_PARAMS, str(out / "part-00000.parquet"), str(out / "rejects.parquet"))
    return str(out / "part-00000.parquet")


@pytest.fixture(scope="module")
def pages(crawled) -> dict[str, list[dict]]:
    by_language: dict[str, list[dict]] = {}
    for row in pq.read_table(crawled).to_pylist():
        by_language.setdefault(row["language"], []).append(row)
    return by_language


def evaluate(row: dict, filters: list[dict], language_configs: str | None = "builtin", **stage) -> tuple[str | None, dict]:
    config = FilterStage.model_validate({"stage": "filter", "filters": filters, "language_configs": language_configs, **stage})
    signal_params, decide_params = build_params(config)
    result = document_signals(row["text"], row.get("url"), row.get("language"), row.get("language_score"), SignalSettings.from_params(signal_params))
    values = {"input_problem": result.problem, "language": result.language, "language_score": result.language_score, **result.values}
    return Decider(decide_params).reason(values), values


def test_the_sample_has_the_languages_these_tests_need(pages):
    assert {"ar", "zh", "ru", "en"} <= set(pages)


def test_chinese_is_segmented_into_words_and_judged_by_its_own_thresholds(pages):
    def han_share(row: dict) -> float:
        return sum("\u4e00" <= c <= "\u9fff" for c in row["text"]) / len(row["text"])

    # the handbook's Chinese pages quote English commands: take the most Chinese of the longer ones
    page = max((r for r in pages["zh"] if len(r["text"]) > 1000), key=han_share)
    decision, values = evaluate(page, [{"name": "gopher_quality"}])
    # jieba words: many more than whitespace runs, fewer than characters
    han = sum("\u4e00" <= c <= "\u9fff" for c in page["text"])
    assert han > 200
    assert 3 * len(page["text"].split()) < values["gopher_qual_words"] < len(page["text"].replace(" ", ""))
    assert values["gopher_qual_mean_word_length"] < 5
    assert values["gopher_qual_stop_words_distinct"] >= 2  # FineWeb2's Chinese stop words (的, 是, 在 ...)
    assert decision not in ("gopher_quality:below_avg_word_length", "gopher_quality:stop_words")
    # FineWeb's English defaults (words of 3+ characters, English stop words) reject it
    only_length_and_stop_words = {"name": "gopher_quality", "max_non_alpha_words_ratio": 0}
    english_decision, english = evaluate(page, [only_length_and_stop_words], language_configs=None)
    assert english_decision in ("gopher_quality:below_avg_word_length", "gopher_quality:stop_words")
    assert english["gopher_qual_stop_words_distinct"] < values["gopher_qual_stop_words_distinct"]


def test_russian_and_arabic_count_their_own_stop_words(pages):
    for lang in ("ru", "ar"):
        page = max(pages[lang], key=lambda r: len(r["text"]))
        _, values = evaluate(page, [{"name": "gopher_quality"}])
        _, english = evaluate(page, [{"name": "gopher_quality"}], language_configs=None)
        assert values["gopher_qual_stop_words_distinct"] >= 3, lang
        assert values["gopher_qual_alpha_words_ratio"] > 0.5
        # the same words, counted against another list
        assert values["gopher_qual_words"] == english["gopher_qual_words"]
        assert values["gopher_qual_stop_words_count"] != english["gopher_qual_stop_words_count"]


def test_language_scores_come_from_the_language_configs(pages):
    row = dict(pages["ru"][0], language_score=0.85)  # above FineWeb's 0.65, below FineWeb2's 0.9 for Russian
    assert evaluate(row, [{"name": "language"}], language_configs=None)[0] is None
    assert evaluate(row, [{"name": "language"}])[0] == "language:low_score"
    assert evaluate(row, [{"name": "language", "per_language_scores": False}])[0] is None


def test_english_page_through_fineweb_chain_and_c4_rewrite(pages):
    kept = rewritten = 0
    for row in pages["en"]:
        decision, values = evaluate(row, ALL_FILTERS, language_configs=None)
        kept += decision is None
        rewritten += values["c4_lines_removed"] > 0
    assert 0 < kept < len(pages["en"])
    assert rewritten > 0


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "input:empty_text"),
        ("   \n\t ", "input:empty_text"),
        (None, "input:empty_text"),
        ("x" * 50_000_000, "input:too_long"),  # one 50 MB line: dropped before any splitting
        ("valid text \ud800 with a lone surrogate " * 20, "input:invalid_unicode"),
    ],
)
def test_bad_input_is_dropped_with_a_reason(text, reason):
    row = {"text": text, "url": "https://example.com/", "language": "en", "language_score": 0.9}
    assert evaluate(row, ALL_FILTERS, language_configs=None)[0] == reason


def test_a_long_document_under_the_limit_is_measured(pages):
    text = ("A long line of reasonable English prose with the words of a sentence. " * 20000)  # 1.4 MB
    decision, values = evaluate({"text": text, "language": "en", "language_score": 0.9}, [{"name": "gopher_repetition"}])
    assert decision == "gopher_repetition:dup_para_frac" or decision.startswith("gopher_repetition:")
    assert values["gopher_rep_top_2_gram_frac"] > 0.05


def test_shard_functions_keep_rejects_with_reasons_and_signals(crawled, tmp_path):
    # Append rows a real crawl can carry: an empty text and a text that is not valid UTF-8.
    docs = pq.read_table(crawled)
    bad = docs.slice(0, 2).to_pylist()
    bad[0].update(id="empty", text="")
    bad[1].update(id="broken", text="placeholder")
    extra = pa.Table.from_pylist(bad, schema=docs.schema)
    broken_text = pa.array([b"", b"bad \xed\xa0\x80 bytes \xff here"], pa.binary()).cast(pa.string(), safe=False)
    extra = extra.set_column(extra.schema.get_field_index("text"), "text", broken_text)
    pq.write_table(pa.concat_tables([docs, extra]), tmp_path / "input.parquet")

    config = FilterStage.model_validate({"stage": "filter", "filters": ALL_FILTERS, "language_configs": "builtin"})
    signal_params, decide_params = build_params(config)
    shard = {"shard": 0, "input": str(tmp_path / "input.parquet"), "signals": str(tmp_path / "signals.parquet")}
    signals_result = signals_shard(shard, signal_params, shard["signals"], str(tmp_path / "unused.parquet"))
    assert signals_result["stats"]["input_problems"] == {"empty_text": 1, "invalid_unicode": 1}
    result = decide_shard(shard, decide_params, str(tmp_path / "kept.parquet"), str(tmp_path / "rejects.parquet"))
    stats = result["stats"]
    assert stats["docs_in"] == docs.num_rows + 2 == stats["docs_out"] + stats["rejects"]
    assert sum(stats["drop_reasons"].values()) == stats["rejects"]
    assert sum(sum(c.values()) for c in stats["drops_by_language"].values()) == stats["rejects"]

    rejects = pq.read_table(tmp_path / "rejects.parquet")
    kept = pq.read_table(tmp_path / "kept.parquet")
    assert set(docs.column_names) < set(rejects.column_names)
    assert {"drop_reason", "gopher_qual_stop_words_distinct", "fineweb_line_punct_ratio"} <= set(rejects.column_names)
    reasons = dict(zip(rejects.column("id").to_pylist(), rejects.column("drop_reason").to_pylist()))
    assert reasons["empty"] == "input:empty_text" and reasons["broken"] == "input:invalid_unicode"
    assert all(r and ":" in r for r in reasons.values())
    assert "\ufffd" in rejects.filter(pa.compute.equal(rejects.column("id"), "broken")).column("text")[0].as_py()
    assert set(kept.column("id").to_pylist()).isdisjoint(reasons)
    assert kept.schema.names == docs.schema.names  # kept documents keep the document schema


# ---------------------------------------------------------------- language configs


def test_fineweb2_style_file_names_map_to_fineflow_codes(tmp_path):
    (tmp_path / "rus_Cyrl.yml").write_text("language_score: 0.9\nstopwords: [и, в]\ntop_n_grams: [[2, 0.18]]\n")
    (tmp_path / "cmn_Hani.yml").write_text("gopher_quality: {min_avg_word_length: 1}\nword_splitter: chars\n")
    configs = load_language_configs(str(tmp_path))
    assert configs["ru"] == {
        "language": {"min_score": 0.9},
        "gopher_quality": {"stop_words": ["и", "в"]},
        "gopher_repetition": {"top_n_grams": {2: 0.18}},
    }
    assert configs["zh"]["word_splitter"] == "chars"


def test_bad_language_configs_are_clear_errors(tmp_path):
    (tmp_path / "ru.yaml").write_text("langauge_score: 0.9\n")
    with pytest.raises(LanguageConfigError, match="unknown key 'langauge_score'"):
        load_language_configs(str(tmp_path))
    (tmp_path / "ru.yaml").write_text("language_score: 0.9\n")
    (tmp_path / "rus_Cyrl.yml").write_text("language_score: 0.8\n")
    with pytest.raises(LanguageConfigError, match="both configure language 'ru'"):
        load_language_configs(str(tmp_path))
    (tmp_path / "rus_Cyrl.yml").unlink()
    (tmp_path / "ru.yaml").write_text("language_score: high\n")
    config = FilterStage.model_validate({"stage": "filter", "filters": [{"name": "language"}], "language_configs": str(tmp_path)})
    with pytest.raises(LanguageConfigError, match="language config 'ru'.*min_score"):
        build_params(config)


def test_builtin_configs_cover_the_sample_languages():
    configs = load_language_configs("builtin")
    assert {"ar", "zh", "ru", "de", "fr", "ja", "ko"} <= set(configs)
    assert configs["zh"]["language"]["min_score"] == pytest.approx(0.692)


# ---------------------------------------------------------------- plans and presets


def plan_steps(stage: dict, upstream_fingerprint: str = "u1"):
    from fineflow.steps import PlanContext, Source, StageInputs
    from fineflow.tasks.filter.plan import plan_filter

    config = FilterStage.model_validate({"stage": "filter", **stage})
    inputs = StageInputs((Source(stage="up", fingerprint=upstream_fingerprint, folder="/tmp/up/data", shards=2),))
    return plan_filter(config, PlanContext(root="/tmp/nowhere", name="filter", kind="filter", inputs=inputs))


def test_thresholds_enter_only_the_decide_fingerprint():
    base = {"filters": ALL_FILTERS, "language_configs": "builtin"}
    signals, decide = plan_steps(base)
    assert [s["input"] for s in decide.shards] == [s["input"] for s in signals.shards]
    stricter = {**base, "filters": [*ALL_FILTERS[:3], {"name": "gopher_quality", "min_doc_words": 80}, *ALL_FILTERS[4:]]}
    signals2, decide2 = plan_steps(stricter)
    assert signals2.fingerprint.value == signals.fingerprint.value
    assert decide2.fingerprint.value != decide.fingerprint.value
    # text-changing or signal parameters change both steps
    c4_rule = {**base, "filters": [*ALL_FILTERS[:4], {"name": "c4", "filter_javascript": False}, ALL_FILTERS[5]]}
    stop_words = {**base, "filters": [*ALL_FILTERS[:3], {"name": "gopher_quality", "stop_words": ["a"]}, *ALL_FILTERS[4:]]}
    for changed in (c4_rule, stop_words, {**base, "word_splitters": {"ja": "chars"}}):
        signals3, decide3 = plan_steps(changed)
        assert signals3.fingerprint.value != signals.fingerprint.value
        assert decide3.fingerprint.value != decide.fingerprint.value
    assert plan_steps(base, "u2")[0].fingerprint.value != signals.fingerprint.value
    # the language filter's score is a threshold; its list decides which documents are measured
    score = {**base, "filters": [ALL_FILTERS[0], {"name": "language", "min_score": 0.8}, *ALL_FILTERS[2:]]}
    listed = {**base, "filters": [ALL_FILTERS[0], {"name": "language", "languages": ["en"]}, *ALL_FILTERS[2:]]}
    assert plan_steps(score)[0].fingerprint.value == signals.fingerprint.value
    assert plan_steps(listed)[0].fingerprint.value != signals.fingerprint.value


def test_spacys_affix_rules_run_on_strings_give_spacys_split(pages):
    """tasks/text/spacy_affixes.py against spaCy itself, on every distinct chunk of the sample's
    pages in each of its languages (and on each language's special cases): the same tokens, or
    None where it leaves the chunk to spaCy."""
    import spacy

    from fineflow.tasks.text.spacy_affixes import affix_splitter
    from fineflow.tasks.text.words import default_splitter

    compared = 0
    for language, rows in sorted(pages.items()):
        splitter = default_splitter(language)
        if not splitter.startswith("spacy:"):
            continue
        nlp = spacy.blank(splitter.removeprefix("spacy:"))
        split = affix_splitter(nlp.tokenizer)
        specials = sorted(nlp.tokenizer.rules)
        chunks = {chunk for row in rows for chunk in row["text"].split()} | set(specials[::50])
        chunks |= {f"({special})" for special in specials[::50]} | {f"{special}." for special in specials[::50]}
        answered = 0
        for chunk in sorted(chunk for chunk in chunks if chunk.split() == [chunk]):  # (the splitter's chunks)
            ours = split(chunk)
            if ours is not None:
                answered += 1
                assert list(ours) == [token.text for token in nlp.tokenizer(chunk)], (language, chunk)
        assert answered > 0.8 * len(chunks), language  # (most chunks do not need spaCy)
        compared += answered
    assert compared > 10_000


def test_the_signals_step_declares_the_splitters_and_models_its_workers_load():
    def warm(**stage) -> set[tuple[str, str]]:
        return set(plan_steps(stage)[0].warm)

    splitter, model = "fineflow.tasks.text.words:load_splitter", "fineflow.tasks.text.langid:load_model"
    # the languages the language filter lists, each with its splitter (a configured one wins)
    listed = [{"name": "language", "languages": ["fr", "zh", "ja"]}, {"name": "gopher_repetition"}]
    assert warm(filters=listed, word_splitters={"ja": "chars"}) == {(splitter, "spacy:fr"), (splitter, "jieba"), (splitter, "chars")}
    # any language: those with a language config, and English
    every = warm(filters=ALL_FILTERS, language_configs="builtin")
    assert {(splitter, "spacy:en"), (splitter, "spacy:fr"), (splitter, "spacy:ru"), (splitter, "jieba")} <= every
    assert all(function == splitter for function, _ in every)
    # no rule that splits words: no splitter; a re-identifying language filter: its model
    assert warm(filters=[{"name": "url"}, {"name": "language", "model": "lid.176"}]) == {(model, "lid.176")}


def test_unlisted_languages_are_not_measured_and_dropped_as_not_listed(pages):
    english_only = [ALL_FILTERS[0], {"name": "language", "languages": ["en"]}, *ALL_FILTERS[2:]]
    decision, values = evaluate(pages["de"][0], english_only, language_configs=None)
    assert decision == "language:not_listed"
    assert not any(key.startswith(("gopher_", "c4_", "fineweb_")) for key in values)
    # a filter placed before the language filter does not trip over the missing signals
    reordered = [ALL_FILTERS[2], {"name": "language", "languages": ["en"]}]
    assert evaluate(pages["de"][0], reordered, language_configs=None)[0] == "language:not_listed"
    english = max(pages["en"], key=lambda r: r["language_score"])
    assert "gopher_qual_words" in evaluate(english, english_only, language_configs=None)[1]


def test_profile_fills_only_unset_options():
    modern = FilterStage.model_validate({"stage": "filter", "filters": [{"name": "gopher_quality"}, {"name": "fineweb_quality"}]})
    legacy = FilterStage.model_validate(
        {"stage": "filter", "profile": "fineweb-2024-04", "filters": [{"name": "gopher_quality"}, {"name": "fineweb_quality", "strict": True}]}
    )
    assert modern.filters[0].stop_word_mode == "distinct" and legacy.filters[0].stop_word_mode == "occurrences"
    assert modern.filters[1].legacy_lines is False and legacy.filters[1].legacy_lines is True
    assert legacy.filters[1].strict is True  # set explicitly: the profile leaves it


@pytest.mark.parametrize("preset", ["demo.yaml", "fineweb.yaml", "fineweb2.yaml"])
def test_presets_load_and_plan(preset):
    from pathlib import Path

    from fineflow.config import load_config
    from fineflow.planning import all_steps

    config = load_config(Path(__file__).parent.parent / "examples" / preset, storage_override="/tmp/fineflow-preset-check")
    steps = [(s.name, s.step) for s in all_steps(config)]  # by stage name: fineweb2 has a second filter stage
    assert steps[0] == ("crawl", "extract") and [step for stage, step in steps if stage == "filter"] == ["signals", "decide"]
    assert [step for stage, step in steps if stage == "dedup"] == ["signatures", "buckets", "cluster", "remove"]
    if preset == "demo.yaml":
        assert [step for stage, step in steps if stage == "quality"] == ["sample", "train", "score", "summarize", "calibrate", "decide"]
        assert [step for stage, step in steps if stage == "tokenize"] == ["sample", "train", "count", "stats", "groups", "merge"]
    # (the recipes' whole stage sequences: tests/test_presets.py)


def test_invalid_filter_config_names_the_problem():
    from fineflow.config import ConfigError, parse_config

    with pytest.raises(ConfigError, match="stages.1.filters.0"):
        parse_config({"name": "x", "stages": [{"stage": "crawl", "inputs": ["a"]}, {"stage": "filter", "filters": [{"name": "gopher"}]}]})
    with pytest.raises(ConfigError, match="min_doc_words"):
        parse_config(
            {"name": "x", "stages": [{"stage": "crawl", "inputs": ["a"]}, {"stage": "filter", "filters": [{"name": "gopher_quality", "min_doc_words": "many"}]}]}
        )
    with pytest.raises(ConfigError, match="stage filter: it reads documents, but no stage comes before it"):
        parse_config({"name": "x", "stages": [{"stage": "filter", "filters": [{"name": "c4"}]}]})


def test_files_a_config_names_must_exist_before_anything_runs(tmp_path):
    from fineflow.config import ConfigError, parse_config

    (tmp_path / "domains.txt").write_text("example.com\n")
    stages = [{"stage": "crawl", "inputs": ["a"]}, {"stage": "filter", "filters": [{"name": "url", "domains_file": "domains.txt"}]}]
    config = parse_config({"name": "x", "stages": stages}, base_dir=tmp_path)
    assert config.stages[1].filters[0].domains_file == str(tmp_path / "domains.txt")
    stages[1]["language_configs"] = "configs"
    stages[1]["filters"][0]["banned_words_file"] = "words.txt"
    with pytest.raises(ConfigError, match="missing file") as error:
        parse_config({"name": "x", "stages": stages}, base_dir=tmp_path)
    assert str(tmp_path / "configs") in str(error.value) and str(tmp_path / "words.txt") in str(error.value)


@pytest.mark.parametrize(
    ("splitter", "module", "text"),
    [
        ("spacy:en", None, "Don't split e.g. this; but do split words, (brackets) and 3.14 numbers."),
        ("spacy:ru", None, "Это русский текст, и он разбивается на слова."),
        ("jieba", None, "这是一个中文句子，包含 English words 和数字 123。"),
        ("chars", None, "日本語の文章 with some English。"),
        # Sudachi's dictionary has entries with spaces ("front end"): still one word per token
        ("sudachi", "sudachipy", "これは日本語の文章です。東京は大きい都市です。front end の開発。"),
        ("thai", "pythainlp", "ภาษาไทยเป็นภาษาที่สวยงาม ครับ"),
        ("kiwi", "kiwipiepy", "한국어 문장입니다. 서울은 큰 도시입니다."),
    ],
)
def test_every_splitter_returns_the_words_of_the_text_in_order(splitter, module, text):
    from fineflow.tasks.text.words import load_splitter

    if module:
        pytest.importorskip(module)
    words = load_splitter(splitter)(text)
    assert len(words) >= 5
    assert all(w and not any(c.isspace() for c in w) for w in words), words
    position = 0
    for word in words:  # each word is found in the text after the previous one
        found = text.find(word, position)
        assert found >= 0, word
        position = found + len(word)


def test_an_empty_shard_gives_empty_outputs(crawled, tmp_path):
    empty = pq.read_table(crawled).slice(0, 0)
    pq.write_table(empty, tmp_path / "input.parquet")
    config = FilterStage.model_validate({"stage": "filter", "filters": ALL_FILTERS})
    signal_params, decide_params = build_params(config)
    shard = {"shard": 0, "input": str(tmp_path / "input.parquet"), "signals": str(tmp_path / "signals.parquet")}
    signals_shard(shard, signal_params, shard["signals"], "")
    result = decide_shard(shard, decide_params, str(tmp_path / "kept.parquet"), str(tmp_path / "rejects.parquet"))
    assert result["stats"]["docs_in"] == result["stats"]["docs_out"] == 0 and result["rejects"]["rows"] == 0
    assert pq.read_table(tmp_path / "kept.parquet").schema.names == empty.schema.names
