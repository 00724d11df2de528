"""The crawl step as a plain function over one shard: accounting, rejects, stable ids."""

from __future__ import annotations

import polars as pl

from fineflow.tasks.crawl.inputs import describe_files, plan_shards
from fineflow.tasks.crawl.stage import extract_shard

PARAMS = dict(
    extractor="resiliparse", extraction_timeout_s=30.0, include_text_plain=False, keep_truncated=False,
    max_record_bytes=64 << 20, langid_model="lid.176", url_filter=None, url_filter_options={},
)


def _run(sample, out, **overrides):
    params = {**PARAMS, **overrides}
    shards = plan_shards(describe_files([str(sample)], None, True), 1 << 30)
    assert len(shards) == 1
    return extract_shard(shards[0], params, str(out / "part.parquet"), str(out / "rejects.parquet"))


def test_every_record_is_accounted_for(sample_warc, tmp_path):
    result = _run(sample_warc, tmp_path)
    stats = result["stats"]
    assert stats["docs_in"] == stats["docs_out"] + stats["rejects"] + sum(stats["skips"].values())
    assert stats["skips"]["status_not_200"] >= 1 and stats["skips"]["not_html"] >= 1
    docs = pl.read_parquet(tmp_path / "part.parquet")
    assert docs.height == stats["docs_out"] == result["output"]["rows"]
    assert docs["id"].n_unique() == docs.height
    assert set(docs.columns) >= {"id", "url", "text", "language", "language_score", "source", "crawl_date"}
    assert docs["source"].str.contains(r"@\d+$").all()


def test_text_plain_is_kept_when_asked(sample_warc, tmp_path):
    without = _run(sample_warc, tmp_path / "a")["stats"]
    with_text = _run(sample_warc, tmp_path / "b", include_text_plain=True)["stats"]
    assert with_text["docs_out"] > without["docs_out"]


def test_url_hook_rejects_before_extraction_and_keeps_columns(sample_warc, tmp_path):
    blocklist = tmp_path / "domains.txt"
    blocklist.write_text("# blocked\ndocs.python.org\n")
    result = _run(
        sample_warc, tmp_path, url_filter="fineflow.tasks.crawl.url_hooks:domain_blocklist",
        url_filter_options={"domains_file": str(blocklist)},
    )
    rejects = pl.read_parquet(tmp_path / "rejects.parquet")
    assert rejects.height == result["stats"]["rejects"] > 0
    assert (rejects["drop_reason"] == "url_filter:domain").all()
    assert rejects["url"].str.starts_with("https://docs.python.org/").all()
    docs = pl.read_parquet(tmp_path / "part.parquet")
    assert not docs["url"].str.contains("docs.python.org").any()


def test_ids_and_bytes_are_stable_across_runs(sample_warc, tmp_path):
    first = _run(sample_warc, tmp_path / "1")
    second = _run(sample_warc, tmp_path / "2")
    assert first["output"]["sha256"] == second["output"]["sha256"]


def test_justext_shard_is_accounted_for_and_stable(sample_warc, tmp_path):
    """jusText in the crawl step: every record accounted for, the same bytes on a second run."""
    first = _run(sample_warc, tmp_path / "1", extractor="justext")
    stats = first["stats"]
    assert stats["docs_in"] == stats["docs_out"] + stats["rejects"] + sum(stats["skips"].values())
    assert stats["docs_out"] > 0 and stats["extractor_restarts"] == 0
    docs = pl.read_parquet(tmp_path / "1" / "part.parquet")
    assert docs["text"].str.contains("\n\n").any()  # paragraphs joined as NeMo Curator joins them
    assert _run(sample_warc, tmp_path / "2", extractor="justext")["output"]["sha256"] == first["output"]["sha256"]
