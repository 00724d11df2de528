"""Precision filtering (FineWeb2's wordlist and URL check) as a filter rule: URL evidence, a
FineWeb2-format wordlist folder, wordlists built in the run from real pages of the sample (with
English pages mislabelled as German planted among them), the report's fields, and bad config."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from stage_runner import run_plans

from fineflow.languages import canonical_language
from fineflow.steps import PlanContext, Source, StageInputs
from fineflow.tasks.crawl.inputs import describe_files, plan_shards
from fineflow.tasks.crawl.stage import extract_shard
from fineflow.tasks.filter import precision, report, wordlists
from fineflow.tasks.filter.config import FilterStage
from fineflow.tasks.filter.decide import Decider
from fineflow.tasks.filter.plan import build_params, plan_filter
from fineflow.tasks.filter.signals import SignalSettings, document_signals

CRAWL_PARAMS = dict(
    extractor="resiliparse", extraction_timeout_s=30.0, include_text_plain=False, keep_truncated=False,
    max_record_bytes=64 << 20, langid_model="lid.176", url_filter=None, url_filter_options={},
)
BUILT_LANGUAGES = ["ar", "de", "ru"]  # splitters that load fast: the count step splits every page with each
MISLABELLED = "-as-de"


def stage(**options) -> FilterStage:
    return FilterStage.model_validate({"stage": "filter", "filters": [{"name": "precision", **options}]})


def evaluate(config: FilterStage, text: str, url: str | None, language: str) -> tuple[str | None, dict]:
    signal_params, decide_params = build_params(config)
    result = document_signals(text, url, language, 0.9, SignalSettings.from_params(signal_params))
    values = {"input_problem": result.problem, "language": result.language, **result.values}
    return Decider(decide_params).reason(values), values


# ---------------------------------------------------------------- URL evidence and a wordlist folder


@pytest.fixture
def bavarian(tmp_path) -> FilterStage:
    """A FineWeb2-style folder (``<code>_<Script>.txt``) and whitelist for Bavarian."""
    folder = tmp_path / "wordlists-0.85"
    folder.mkdir()
    (folder / "bar_Latn.txt").write_text("Servus\nned\nwoan\ngmacht\n")
    (folder / "deu_Latn.txt").write_text("nicht\n")
    whitelist = tmp_path / "url_whitelist.json"
    whitelist.write_text(json.dumps({"bar": ["bavarian", ".bayern", "boarisch-wiki"], "deu": [".de"]}))
    return stage(languages=["bar_Latn"], wordlists=str(folder), url_whitelist_file=str(whitelist))


ENGLISH = "This page is written in English about the weather in Munich and nothing else at all. " * 3


@pytest.mark.parametrize(
    ("url", "evidence"),
    [
        ("https://www.example.bayern/page", "tld:.bayern"),
        ("https://bar.wikipedia.org/wiki/Minga", "code:bar"),  # a subdomain
        ("https://example.com/bar/index.html", "code:bar"),  # a path segment
        ("https://example.com/bar-AT/index.html", "code:bar-at"),  # a locale
        ("https://example.com/man/ls.1.bar.html", "code:bar"),  # a file name part
        ("https://example.com/page?lang=bar", "code:bar"),  # a query value
        ("https://example.com/bavarian-news/1", "word:bavarian"),
        ("https://example.com/boarischwiki/1", "word:boarischwiki"),  # FineWeb2's words compare letters and digits only
        ("https://example.com/barbecue/bar-none-tips", None),  # the code inside a word or a phrase is no evidence
        ("https://barista.example.com/", None),
        ("https://www.example.de/", None),  # another language's domain
        (None, None),
    ],
)
def test_url_evidence_keeps_a_document_without_wordlist_words(bavarian, url, evidence):
    decision, values = evaluate(bavarian, ENGLISH, url, "bar")
    assert values["precision_affinity_words"] == 0
    assert values["precision_url_evidence"] == evidence
    assert decision == (None if evidence else "precision:no_language_evidence")


def test_a_high_affinity_word_keeps_and_other_languages_are_not_measured(bavarian):
    text = ENGLISH + " Servus, i hob des ned gmacht."
    decision, values = evaluate(bavarian, text, "https://example.com/a", "bar")
    assert (decision, values["precision_affinity_words"]) == (None, 3)  # distinct words: Servus, ned, gmacht
    # a stricter threshold is a decide-only change
    strict = stage(**{**bavarian.filters[0].model_dump(exclude={"name"}), "min_affinity_words": 4})
    assert evaluate(strict, text, "https://example.com/a", "bar")[0] == "precision:no_language_evidence"
    # German is not configured: its documents are not measured, so never dropped by this rule
    decision, values = evaluate(bavarian, ENGLISH, "https://example.com/a", "de")
    assert decision is None and "precision_affinity_words" not in values


def test_cont_scores_choose_the_languages(tmp_path):
    folder = tmp_path / "lists"
    folder.mkdir()
    for code in ("bar_Latn", "pcm_Latn", "dan_Latn"):
        (folder / f"{code}.txt").write_text("word\n")
    scores = tmp_path / "cont_scores.json"
    scores.write_text(json.dumps({"bar_Latn": 0.61, "pcm_Latn": 0.35, "dan_Latn": 0.0001, "sco_Latn": 0.1}))
    signal_params, _ = build_params(stage(cont_scores_file=str(scores), wordlists=str(folder)))
    assert signal_params["filters"][0]["languages"] == sorted(map(canonical_language, ["bar_Latn", "pcm_Latn"]))  # > 0.1, as FineWeb2
    signal_params, _ = build_params(stage(cont_scores_file=str(scores), cont_score_threshold=0.5, wordlists=str(folder)))
    assert signal_params["filters"][0]["languages"] == [canonical_language("bar_Latn")]


# ---------------------------------------------------------------- wordlists built in the run


@pytest.fixture(scope="module")
def built(sample_warc, tmp_path_factory):
    """The sample's pages plus its English Python-docs pages again, labelled German (what a
    language identifier gets wrong), filtered with wordlists built from all of them."""
    root = tmp_path_factory.mktemp("precision")
    crawl = root / "crawl"
    shard = plan_shards(describe_files([str(sample_warc)], None, True), 1 << 30)[0]
    extract_shard(shard, CRAWL_PARAMS, str(crawl / "part-00000.parquet"), str(crawl / "rejects.parquet"))
    pages = pq.read_table(crawl / "part-00000.parquet")
    rows = pages.to_pylist()
    planted = [dict(r, id=r["id"] + MISLABELLED, language="de") for r in rows if r["url"].startswith("https://docs.python.org/")]
    upstream = root / "up" / "data"
    upstream.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows + planted, schema=pages.schema), upstream / "part-00000.parquet")
    config = stage(languages=BUILT_LANGUAGES, min_word_documents=3)
    inputs = StageInputs((Source(stage="up", fingerprint="u1", folder=str(upstream.parent / "data"), shards=1),))
    plans = plan_filter(config, PlanContext(root=str(root / "store"), name="filter", kind="filter", inputs=inputs))
    return {"steps": run_plans(plans), "rows": rows, "planted": planted, "config": config, "inputs": inputs}


def _wordlist(built, language: str) -> list[str]:
    plan = built["steps"][wordlists.LISTS_STEP][0]
    with open(plan.location.artifact_url(wordlists.list_name(language)), encoding="utf-8") as handle:
        return handle.read().split("\n")[:-1]


def test_wordlists_built_from_the_sample_hold_the_languages_own_words(built):
    german, russian, arabic = (set(_wordlist(built, lang)) for lang in ("de", "ru", "ar"))
    assert {"und", "nicht", "der", "ist"} <= german
    assert {"в", "не", "для"} <= russian
    assert {"في", "على"} <= arabic
    # words every language's pages use are nobody's: Debian, apt, the handbook's commands
    counts = pq.read_table(built["steps"][wordlists.COUNTS_STEP][0].location.shard_url(0)).to_pylist()
    labels_of: dict[str, set[str]] = {}
    for row in counts:
        if row["splitter"] == "spacy:de" and row["word"]:
            labels_of.setdefault(row["word"], set()).add(row["label"])
    shared = {word for word, labels in labels_of.items() if len(labels) >= 4}
    assert {"Debian", "apt"} <= shared
    assert not shared & german
    # the mislabelled pages' words are in German documents too, yet not German: none is listed
    assert not {"the", "function", "Python", "don", "isn"} & german
    # every listed word clears both thresholds, recounted from the per-shard counts
    docs = {(r["word"], r["label"]): r["documents"] for r in counts if r["splitter"] == "spacy:de"}
    for word in german:
        total = sum(n for (w, _), n in docs.items() if w == word)
        assert docs[(word, "de")] >= 3 and docs[(word, "de")] / total >= 0.85, word


def test_mislabelled_pages_are_dropped_and_real_pages_kept(built):
    _, results = built["steps"]["decide"]
    stats = results[0]["stats"]
    rejects = pq.read_table(built["steps"]["decide"][0].location.rejects_url(0)).to_pylist()
    dropped = {r["id"] for r in rejects}
    planted = {r["id"] for r in built["planted"]}
    assert dropped <= planted  # no page in its own language is dropped
    assert len(dropped) >= 0.75 * len(planted)
    assert {r["drop_reason"] for r in rejects} == {"precision:no_language_evidence"}
    assert all(r["precision_url_evidence"] is None and r["precision_affinity_words"] == 0 for r in rejects)
    assert stats["drops_by_language"] == {"de": {"precision:no_language_evidence": len(dropped)}}
    # real pages carry both kinds of evidence: the handbook's de-DE and the manpages' .de.html, and German words
    signals = pq.read_table(built["steps"]["signals"][0].location.shard_url(0)).to_pylist()
    german = [s for s in signals if s["language"] == "de" and not s["id"].endswith(MISLABELLED)]
    assert german and all(s["precision_url_evidence"] in ("code:de-de", "code:de") for s in german)
    assert all(s["precision_affinity_words"] >= 5 for s in german)
    # English pages are not measured (English is not configured)
    assert all(s["precision_affinity_words"] is None for s in signals if s["language"] == "en")


def test_report_shows_the_wordlists_and_the_rules_drops(built):
    steps = {name: {**results[0]["stats"], "output": plan.location.data_folder} for name, (plan, results) in built["steps"].items()}
    fields = report.summary_fields(steps)
    lists = fields["precision_wordlists"]
    assert set(lists) == set(BUILT_LANGUAGES)
    assert lists["de"]["words"] == len(_wordlist(built, "de"))
    assert lists["de"]["examples"] == _wordlist(built, "de")[: len(lists["de"]["examples"])]
    assert lists["de"]["documents"] == sum(r["language"] == "de" for r in built["rows"]) + len(built["planted"])
    summary = {"name": "filter", "docs_in": steps["signals"]["docs_in"], "languages": steps["decide"]["languages"], **fields}
    tables = {table.key: table for table in report.drop_tables(summary)}
    row = next(r for r in tables["precision"].rows if r["language"] == "de")
    assert row["dropped"] == fields["drops_by_language"]["de"]["precision:no_language_evidence"]
    assert row["wordlist words"] == lists["de"]["words"]
    assert any(r["reason"] == "precision:no_language_evidence" for r in tables["drop-reasons"].rows)
    charts = dict(report.figures(summary))
    assert "precision-wordlists" in set(charts)
    from fineflow.report import _drops_by_language  # drops per language and reason: drawn for every stage

    assert "precision:no_language_evidence" in {bar.name for bar in _drops_by_language(summary).data}
    # an index artifact beside the lists
    index_url = built["steps"][wordlists.LISTS_STEP][0].location.artifact_url(wordlists.INDEX)
    with open(index_url, encoding="utf-8") as handle:
        assert json.load(handle)["de"]["words"] == lists["de"]["words"]


def test_built_lists_chain_the_signals_fingerprint_not_the_storage_root(built, tmp_path):
    plans = built["steps"]
    elsewhere = plan_filter(built["config"], PlanContext(root=str(tmp_path), name="filter", kind="filter", inputs=built["inputs"]))
    assert [p.step for p in elsewhere] == [wordlists.COUNTS_STEP, wordlists.PARTS_STEP, wordlists.LISTS_STEP, "signals", "decide"]
    assert [p.fingerprint.value for p in elsewhere] == [plans[p.step][0].fingerprint.value for p in elsewhere]
    looser = stage(languages=BUILT_LANGUAGES, min_word_documents=3, affinity_threshold=0.7)
    changed = plan_filter(looser, PlanContext(root=str(tmp_path), name="filter", kind="filter", inputs=built["inputs"]))
    assert changed[0].fingerprint.value == elsewhere[0].fingerprint.value  # the counts stay cached
    assert all(a.fingerprint.value != b.fingerprint.value for a, b in zip(changed[1:], elsewhere[1:]))
    stricter = stage(languages=BUILT_LANGUAGES, min_word_documents=3, min_affinity_words=2)
    decide_only = plan_filter(stricter, PlanContext(root=str(tmp_path), name="filter", kind="filter", inputs=built["inputs"]))
    assert [p.fingerprint.value == q.fingerprint.value for p, q in zip(decide_only, elsewhere)] == [True, True, True, True, False]


def test_lists_are_the_same_for_any_number_of_word_partitions(built, tmp_path):
    """Words summed in 7 partitions (and in 1) give byte-identical lists and index."""
    for partitions in (1, 7):
        config = stage(languages=BUILT_LANGUAGES, min_word_documents=3, word_partitions=partitions)
        plans = plan_filter(config, PlanContext(root=str(tmp_path / str(partitions)), name="filter", kind="filter", inputs=built["inputs"]))
        steps = run_plans(plans[:3])
        assert len(steps[wordlists.PARTS_STEP][1]) == partitions
        words = sum(result["stats"]["partition_words"] for result in steps[wordlists.PARTS_STEP][1])
        counted = {(r["splitter"], r["word"]) for r in pq.read_table(steps[wordlists.COUNTS_STEP][0].location.shard_url(0)).to_pylist()
                   if r["word"]}
        assert words == len(counted)  # every word summed in exactly one partition
        mine = steps[wordlists.LISTS_STEP][0].location
        theirs = built["steps"][wordlists.LISTS_STEP][0].location
        for name in [wordlists.list_name(language) for language in BUILT_LANGUAGES] + [wordlists.INDEX]:
            assert Path(mine.artifact_url(name)).read_bytes() == Path(theirs.artifact_url(name)).read_bytes(), name


def test_partitions_read_exactly_their_buckets_rows_across_row_groups(tmp_path):
    rows = [(wordlists.bucket_of("s", f"w{n}"), "s", f"w{n}", "de", 1) for n in range(150_000)]
    rows.sort()
    table = pa.Table.from_pydict({name: [row[i] for row in rows] for i, name in enumerate(wordlists._COUNTS.names)},
                                 schema=wordlists._COUNTS)
    url = str(tmp_path / "counts.parquet")
    pq.write_table(table, url, row_group_size=65_536)
    ranges = wordlists.bucket_ranges(7)
    parts = [wordlists.read_buckets(url, low, high) for low, high in ranges]
    assert sum(part.num_rows for part in parts) == 150_000
    for (low, high), part in zip(ranges, parts):
        assert all(low <= wordlists.bucket_of("s", word) < high for word in part["word"].to_pylist())


# ---------------------------------------------------------------- bad config


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"languages": ["de"], "affinity_threshold": 1.5}, "affinity_threshold"),
        ({"languages": ["de"], "affinity_threshold": 0.3}, "affinity_threshold"),
        ({"languages": ["de"], "cont_score_threshold": -0.1}, "cont_score_threshold"),
        ({"languages": ["de"], "min_affinity_words": 0}, "min_affinity_words"),
        ({"languages": ["de"], "min_word_documents": 0}, "min_word_documents"),
        ({"languages": []}, "empty list"),
        ({}, "either `languages` or `cont_scores_file`"),
    ],
)
def test_bad_options_are_one_line_errors(options, message):
    from fineflow.config import ConfigError, parse_config

    stages = [{"stage": "crawl", "inputs": ["a"]}, {"stage": "filter", "filters": [{"name": "precision", **options}]}]
    with pytest.raises(ConfigError, match=message) as error:
        parse_config({"name": "x", "stages": stages})
    assert "stages.1.filters.0" in str(error.value)
    assert len(str(error.value).splitlines()) == 2  # the header and one line naming the option


def test_missing_files_are_one_line_errors(tmp_path):
    from fineflow.config import ConfigError, parse_config

    stages = [
        {"stage": "crawl", "inputs": ["a"]},
        {"stage": "filter", "filters": [{"name": "precision", "languages": ["bar"], "wordlists": "lists", "url_whitelist_file": "w.json"}]},
    ]
    with pytest.raises(ConfigError, match="missing file") as error:
        parse_config({"name": "x", "stages": stages}, base_dir=tmp_path)
    assert str(tmp_path / "lists") in str(error.value) and str(tmp_path / "w.json") in str(error.value)
    # a folder without the language's list, a cont_scores file that is not FineWeb2's: named at planning
    (tmp_path / "lists").mkdir()
    (tmp_path / "lists" / "pcm_Latn.txt").write_text("word\n")
    with pytest.raises(ValueError, match=r"^precision.wordlists: .* has no wordlist for bar$"):
        build_params(stage(languages=["bar"], wordlists=str(tmp_path / "lists")))
    (tmp_path / "scores.json").write_text('["bar_Latn"]')
    with pytest.raises(ValueError, match="not a mapping of language codes to scores"):
        build_params(stage(cont_scores_file=str(tmp_path / "scores.json"), wordlists=str(tmp_path / "lists")))
    with pytest.raises(ValueError, match="does not exist"):
        build_params(stage(cont_scores_file=str(tmp_path / "absent.json")))


@pytest.mark.parametrize(
    ("label", "configured", "expected"),
    [
        ("bar", ["bar-Latn"], "bar-Latn"),  # lid.176's label under GlotLID's (FineWeb2's bar_Latn)
        ("sr", ["sr-Latn"], None),  # Serbian without a script is Cyrillic: not the Latin list
        ("zh-Hant", ["zh"], "zh"),
        ("en", ["de"], None),
    ],
)
def test_labels_fall_under_the_configured_language_of_their_script(label, configured, expected):
    assert precision.configured_language(label, configured) == expected
