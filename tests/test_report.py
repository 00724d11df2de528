"""The run report: built from a run summary, self-contained, and drawn by a real browser."""

from __future__ import annotations

import json
import re
from pathlib import Path

from browser import drawn_charts, rendered_dom

SUMMARY = {
    "run_id": "0000-test",
    "pipeline": "demo",
    "storage": "/tmp/store",
    "seconds": 12.5,
    "stages": [
        {"name": "crawl", "docs_in": 243, "docs_out": 232, "shards": 3, "cached_shards": 0, "seconds": 5, "output": "/x/crawl",
         "skips": {"not_html": 6, "status_not_200": 5}, "languages": {"en": 131, "de": 33, "zh": 8}, "text_chars": 2_000_000},
        {"name": "dedup", "docs_in": 232, "docs_out": 202, "shards": 23, "cached_shards": 23, "seconds": 3, "output": "/x/dedup",
         "skips": {}, "languages": {"en": 111, "de": 25, "zh": 8}, "drop_reasons": {"exact_duplicate": 25, "near_duplicate": 5},
         "clusters": 28, "cluster_sizes": {"2": 26, "3-4": 2}, "text_chars": 1_700_000},
        {"name": "filter", "docs_in": 202, "docs_out": 40, "shards": 6, "cached_shards": 0, "seconds": 4, "output": "/x/filter",
         "skips": {}, "languages": {"en": 15, "de": 8}, "drop_reasons": {"gopher_quality:short_doc": 6, "language:low_score": 35},
         "text_chars": 400_000},
    ],
}


def test_report_is_self_contained():
    from fineflow.report import build_report

    page = build_report(SUMMARY)
    assert not re.search(r"<script[^>]+src=", page) and not re.search(r"<link[^>]+href=[\"']https?:", page)
    assert "Plotly" in page  # the library itself is inlined
    for name in ("funnel", "characters", "languages", "drops", "clusters"):
        assert f'id="chart-{name}"' in page
    assert "0000-test" in page


def test_names_from_the_run_are_escaped():
    from fineflow.report import build_report

    page = build_report({**SUMMARY, "pipeline": "<script>alert(1)</script>", "storage": "s3://b/<x>"})
    assert "<script>alert(1)</script>" not in page and "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_a_summary_without_dedup_or_drops_leaves_those_charts_out():
    from fineflow.report import build_report

    crawl_only = {**SUMMARY, "stages": [{**SUMMARY["stages"][0], "skips": {}}]}
    page = build_report(crawl_only)
    assert 'id="chart-clusters"' not in page and 'id="chart-drops"' not in page and 'id="chart-funnel"' in page


def test_the_report_renders_in_headless_chromium(tmp_path):
    from fineflow.report import write_report

    folder = tmp_path / "_runs" / "0000-test"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps(SUMMARY))
    url = write_report(str(folder))
    charts = drawn_charts(rendered_dom(Path(url)))
    # every chart drawn with one mark per data point: 4 funnel levels, 3 stages of text,
    # 3 languages x 3 stages, 2 skips + 4 drop reasons, 2 cluster sizes
    assert charts == {"funnel": 4, "characters": 3, "languages": 9, "drops": 6, "clusters": 2}


# -- why documents were dropped (issue 29, item 5) ------------------------------------------------

EXAMPLE_TEXT = "Write to jane.doe@example.org or call the server at 192.168.10.20 (or 2001:db8::7) for help. " * 8
WHY = {
    **SUMMARY,
    "stages": [
        SUMMARY["stages"][0],
        {**SUMMARY["stages"][2], "name": "filter", "kind": "filter",
         "drops_by_language": {"en": {"gopher_quality:short_doc": 4, "language:low_score": 30}, "de": {"gopher_quality:short_doc": 2, "language:low_score": 5}},
         "drop_examples": {"gopher_quality:short_doc": [
             {"rank": "00ab", "id": "doc-1", "language": "en", "url": "https://example.com/contact?mail=jane.doe@example.org",
              "detail": "", "text": EXAMPLE_TEXT[:300]}]}},
        {"name": "quality", "kind": "quality", "docs_in": 40, "docs_out": 33, "shards": 3, "cached_shards": 0, "seconds": 1,
         "output": "/x/quality", "skips": {}, "languages": {"en": 11, "de": 5}, "drop_reasons": {"quality:reference": 7},
         "drops_by_language": {"en": {"quality:reference": 4}, "de": {"quality:reference": 3}},
         "classifiers": {"reference": {"model": "fasttext", "trained_on": 21, "held_out": 7, "precision": 0.5, "recall": 1.0,
                                       "f1": 0.6667, "spearman": 0.16}},
         "calibration": {"min_docs": 50, "min_distinct_scores": 20, "languages": [],
                         "fallbacks": ["language de: 5 documents (< min_docs 50), global thresholds used"]},
         "score_histogram": {"reference": {"low": 0.2, "width": 0.1, "counts": {"000": 3, "002": 10, "007": 27}}},
         "cut_lines": {"reference": {"top_share 0.9 of chars": {"0.41": 40}}}},
    ],
}


def test_drops_by_reason_and_language_are_a_table_and_a_chart_per_stage():
    from fineflow.report import build_report

    page = build_report(WHY)
    table = page.split('id="drops-filter">', 1)[1].split("</table>", 1)[0]
    header = re.findall(r"<th>([^<]*)</th>", table.split("</tr>", 1)[0])
    assert header == ["reason", "en", "de", "all"]  # languages by documents dropped
    rows = {cells[0]: cells[1:] for cells in (re.findall(r"<t[dh]>([^<]*)</t[dh]>", row) for row in table.split("</tr>")[1:]) if cells}
    assert rows["language:low_score"] == ["30", "5", "35"] and rows["gopher_quality:short_doc"] == ["4", "2", "6"]
    assert rows["dropped"] == ["34", "7", "41"] and rows["kept"] == ["15", "8", "23"]
    assert 'id="chart-drops-by-language-filter"' in page and 'id="chart-drops-by-language-quality"' in page
    assert 'id="drops-crawl"' not in page  # a stage that dropped nothing has no table


def test_a_drop_reason_is_named_once():
    from fineflow.report import build_report, reason_label

    assert reason_label("quality", "quality:reference") == "quality:reference"
    assert reason_label("dedup", "exact_duplicate") == "dedup: exact_duplicate"
    assert reason_label("q2", "quality:reference") == "q2: quality:reference"
    assert "quality: quality:reference" not in build_report(WHY)


def test_examples_are_shown_masked_and_cut():
    from fineflow.report import build_report

    page = build_report(WHY)
    examples = page.split('id="examples-filter"', 1)[1].split("</div>", 1)[0]
    assert "doc-1" in examples and "[email]" in examples and "[ip]" in examples
    assert "jane.doe" not in page and "192.168.10.20" not in page and "2001:db8::7" not in page


def test_examples_are_the_same_however_documents_are_sharded_and_never_hold_an_address(tmp_path):
    import pyarrow as pa

    from fineflow.counters import merge_counts
    from fineflow.documents import commit_shard
    from fineflow.examples import CHARS, PER_REASON

    n = 40
    rejects = pa.table({
        "id": [f"d{i}" for i in range(n)], "language": ["en", "de", None, "en"] * (n // 4),
        "url": [f"https://x.org/{i}?to=u{i}@mail.example.com" for i in range(n)],
        "text": [f"doc {i}: mail u{i}@mail.example.com from 10.0.{i}.1 " + "x" * 2000 for i in range(n)],
        "drop_reason": ["a:one", "b:two"] * (n // 2),
    })
    kept = rejects.slice(0, 0).drop_columns(["drop_reason"])

    def stats(table: pa.Table, shard: int) -> dict:
        return commit_shard(shard, str(tmp_path / f"k{shard}-{table.num_rows}.parquet"), kept,
                            str(tmp_path / f"r{shard}-{table.num_rows}.parquet"), table)["stats"]

    whole = stats(rejects, 0)
    split = merge_counts([stats(rejects.slice(0, 13), 1), stats(rejects.slice(13, 20), 2), stats(rejects.slice(33), 3)])
    assert whole["drop_examples"] == split["drop_examples"] and whole["drops_by_language"] == split["drops_by_language"]
    assert whole["drops_by_language"] == {"de": {"b:two": 10}, "en": {"a:one": 10, "b:two": 10}, "und": {"a:one": 10}}
    assert {reason: len(found) for reason, found in whole["drop_examples"].items()} == {"a:one": PER_REASON, "b:two": PER_REASON}
    shown = json.dumps(whole["drop_examples"])
    assert "@" not in shown and "10.0." not in shown and "[email]" in shown and "[ip]" in shown
    assert all(len(e["text"]) <= CHARS + 1 for found in whole["drop_examples"].values() for e in found)


def test_each_scorers_distribution_is_drawn_with_its_cut_line():
    import numpy as np

    from fineflow.tasks.quality.calibrate import HISTOGRAM_BINS, histogram
    from fineflow.tasks.quality.report import figures

    scores = np.array([0.4999, 0.5, 0.5001, 0.5004, 0.5004, 0.9])
    found = histogram(scores)
    assert sum(found["counts"].values()) == scores.size and len(found["counts"]) <= HISTOGRAM_BINS
    assert found["low"] == 0.4999 and found["counts"][f"{HISTOGRAM_BINS - 1:03d}"] == 1  # the highest score: the last bin
    assert histogram(np.array([0.3, 0.3]))["counts"] == {"000": 2}  # tied scores: one bin
    chart = dict(figures(WHY["stages"][2]))["quality-scores-reference"]
    assert list(chart.data[0].y) == [3, 10, 27] and np.allclose(chart.data[0].x, [0.25, 0.45, 0.95])
    assert [shape.x0 for shape in chart.layout.shapes] == [0.41]
    assert "top_share 0.9 of chars: 0.41" in chart.layout.annotations[0].text


def test_the_decide_step_records_where_each_rule_cut(tmp_path):
    from test_quality import _two_class_model
    from test_quality_properties import document_table, run_steps

    from fineflow.tasks.quality.report import summary_fields

    model = _two_class_model(tmp_path / "model.bin")
    texts = [f"a lesson about topic {i} with words" if i % 2 else f"buy now cheap deal number {i} today" for i in range(30)]
    result, kept, _ = run_steps(document_table([t.encode() for t in texts], ["en"] * 30), model, tmp_path / "run",
                                keep=[{"scorer": "ft", "top_share": 0.5, "unit": "docs"}, {"scorer": "ft", "min": 0.2}])
    fields = summary_fields({"calibrate": result["calibrate"]["stats"], "decide": result["stats"]})
    lines = fields["cut_lines"]["ft"]
    assert lines["min 0.2"] == {"0.2": 30}
    (cut, judged), = lines["top_share 0.5 of docs"].items()
    assert judged == 30 and min(kept["quality_ft"].to_pylist()) >= float(cut) - 1e-6
    assert sum(fields["score_histogram"]["ft"]["counts"].values()) == 30


def test_small_held_out_sets_and_threshold_fallbacks_are_cautions_at_the_top():
    from fineflow.report import build_report, cautions

    found = cautions(WHY)
    assert found == [
        "quality: classifier reference was evaluated on 7 held-out documents (< 100): its precision, recall and F1 are rough estimates",
        "quality: threshold fallback: language de: 5 documents (< min_docs 50), global thresholds used",
    ]
    page = build_report(WHY)
    assert page.index('class="cautions"') < page.index('id="chart-funnel"') and "7 held-out documents" in page
    big = {**WHY, "stages": [{**WHY["stages"][2], "classifiers": {"r": {"held_out": 500}}, "calibration": None}]}
    assert cautions(big) == [] and 'class="cautions"' not in build_report(big)


def test_the_cli_says_where_results_are_and_is_wide_when_piped(monkeypatch):
    import io

    from rich.console import Console
    from rich.progress import Progress

    from fineflow.cli import _complete_bars, _console, _where

    result = {"report": "/s/_runs/r/report.html", "export": {"to": "/s/release"}, "stages": [
        {"name": "tokenize", "token_files": {"files": 7, "tokens": 93991, "folder": "/s/tokenize/merge/f/artifacts",
                                             "data_args": "/s/tokenize/merge/f/artifacts/data_args.txt"}}]}
    lines = _where(result)
    assert lines[0].startswith("tokenize: token files (7 files, 93,991 tokens): /s/tokenize/merge/f/artifacts")
    assert lines[1] == "release folder (Hugging Face dataset, card README.md): /s/release" and lines[2].endswith("/s/_runs/r/report.html")
    monkeypatch.delenv("COLUMNS", raising=False)
    assert _console().width == 200  # pytest's stdout is not a terminal
    bar = Progress(console=Console(file=io.StringIO()))
    cached, other = bar.add_task("q/score", total=3, completed=3), bar.add_task("t/count", total=3, completed=1)
    _complete_bars(bar, "q")
    assert bar.tasks[cached].finished and bar.tasks[other].completed == 1


def test_the_why_sections_render_in_headless_chromium(tmp_path):
    from fineflow.report import write_report

    folder = tmp_path / "_runs" / "0000-why"
    folder.mkdir(parents=True)
    (folder / "summary.json").write_text(json.dumps({**WHY, "run_id": "0000-why"}))
    charts = drawn_charts(rendered_dom(Path(write_report(str(folder)))))
    # 2 reasons x 2 languages (zero bars drawn too), 1 reason x 2 languages, 3 histogram bins
    assert charts["drops-by-language-filter"] == 4 and charts["drops-by-language-quality"] == 2
    assert charts["quality-scores-reference"] == 3


def test_addresses_are_masked_and_lookalikes_left_alone():
    from fineflow.masking import mask_pii, masked_excerpt

    assert mask_pii("a.b+c@mail.example.co.uk, root@localhost") == "[email], [email]"
    assert mask_pii("from 8.8.8.8, ::1 and fe80::1ff:fe23:4567:890a.") == "from [ip], [ip] and [ip]."
    unchanged = "at 12:30:45, version 1.2.3.4.5, 10.0.0.256, ratio 3.14"
    assert mask_pii(unchanged) == unchanged
    assert masked_excerpt("x" * 95 + " jo@example.com", 100) == "x" * 95 + " [ema…"  # masked before the cut
    # what the pii formatter replaces is masked in what the report shows: every address form, phones too
    assert mask_pii("o'brien@x.com jane@[192.0.2.1]") == "[email] [email]"
    assert mask_pii("call (555) 123-4567 or +44 20 7946 0958, in 2024") == "call [phone] or [phone], in 2024"
    # masking that shortens the text never lets a cut address through past the margin
    long = " ".join(["ann@example.com"] * 60) + " john@example.com"
    assert "@" not in masked_excerpt(long, 100) and "example" not in masked_excerpt(long, 100)
    from fineflow.examples import change_example

    example = change_example("d", "en", "reach me at +1 555 123 4567 today", "reach me at 555-0100 today")
    assert example["before"] == "reach me at [phone] today" and example["after"] == "reach me at 555-0100 today"  # a fictional number


def test_a_manifest_holds_the_examples_once_however_many_shards_and_a_cached_step_still_has_them(tmp_path):
    """Examples are samples, not counters: per shard they would grow a manifest with the shard count."""
    import pyarrow as pa

    from fineflow.documents import commit_shard
    from fineflow.manifest import StepLocation, read_manifest, write_manifest
    from flows.engine import _totals

    location = StepLocation(str(tmp_path), "filter", "decide", "f" * 20)
    results = []
    for shard in range(6):
        docs = pa.table({"id": [f"k{shard}"], "text": ["kept"], "language": ["en"]})
        rejects = pa.table({"id": [f"d{shard}-{i}" for i in range(4)], "text": ["mail bob@example.com"] * 4,
                            "language": ["en"] * 4, "drop_reason": ["a:one", "b:two"] * 2})
        results.append(commit_shard(shard, location.shard_url(shard), docs, location.rejects_url(shard), rejects))
    fresh = _totals(results)
    write_manifest(location, {"k": 1}, results)
    manifest = read_manifest(location.folder)
    assert all("drop_examples" not in entry["stats"] for entry in manifest["shards"])
    assert all(entry["stats"]["drops_by_language"] == {"en": {"a:one": 2, "b:two": 2}} for entry in manifest["shards"])
    assert manifest["samples"]["drop_examples"] == fresh["drop_examples"]
    cached = _totals(list(location.committed_results().values()))  # a re-run finds the step committed
    assert cached["drop_examples"] == fresh["drop_examples"] and cached["drops_by_language"] == fresh["drops_by_language"]
    assert "bob@" not in json.dumps(manifest)
