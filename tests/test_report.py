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
