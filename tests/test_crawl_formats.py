"""Other input shapes: WET conversion records, uncompressed WARC, Common Crawl listings."""

from __future__ import annotations

import gzip
import uuid

import polars as pl

from fineflow.tasks.crawl.inputs import describe_files, listing_paths, plan_shards
from fineflow.tasks.crawl.stage import extract_shard

PARAMS = dict(
    extractor="resiliparse", extraction_timeout_s=30.0, include_text_plain=False, keep_truncated=False,
    max_record_bytes=64 << 20, langid_model="lid.176", url_filter=None, url_filter_options={},
)


def _run(path, out):
    shards = plan_shards(describe_files([str(path)], None, True), 1 << 30)
    return extract_shard(shards[0], PARAMS, str(out / "part.parquet"), str(out / "rejects.parquet"))


def _wet_record(url: str, text: str) -> bytes:
    body = text.encode("utf-8")
    head = (
        "WARC/1.0\r\nWARC-Type: conversion\r\n"
        f"WARC-Target-URI: {url}\r\nWARC-Date: 2026-09-01T00:00:00Z\r\n"
        f"WARC-Record-ID: <urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, url)}>\r\n"
        f"Content-Type: text/plain\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    return gzip.compress(head + body + b"\r\n\r\n")


def test_wet_conversion_records_become_documents(tmp_path):
    texts = {
        "https://example.org/de": "Dies ist ein deutscher Text über das Wetter und die Berge im Sommer.",
        "https://example.org/fr": "Ceci est un texte en français sur la météo et les montagnes en été.",
    }
    path = tmp_path / "sample.warc.wet.gz"
    path.write_bytes(b"".join(_wet_record(u, t) for u, t in texts.items()))
    result = _run(path, tmp_path)
    docs = pl.read_parquet(tmp_path / "part.parquet").sort("url")
    assert result["stats"]["docs_out"] == 2
    assert docs["text"].to_list() == [texts["https://example.org/de"], texts["https://example.org/fr"]]
    assert docs["language"].to_list() == ["de", "fr"]


def test_uncompressed_warc_gives_the_same_documents(sample_warc, tmp_path):
    plain = tmp_path / "plain.warc"
    plain.write_bytes(gzip.decompress(sample_warc.read_bytes()))
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    compressed = _run(sample_warc, tmp_path / "a")["stats"]
    uncompressed = _run(plain, tmp_path / "b")["stats"]
    assert uncompressed["docs_out"] == compressed["docs_out"]
    ids_a = set(pl.read_parquet(tmp_path / "a" / "part.parquet")["id"])
    ids_b = set(pl.read_parquet(tmp_path / "b" / "part.parquet")["id"])
    assert ids_a == ids_b


def test_common_crawl_listing_limit_and_sample(tmp_path):
    names = [f"crawl-data/CC-MAIN-2026-40/segments/{i}/warc/file-{i:05d}.warc.gz" for i in range(1000)]
    listing = tmp_path / "warc.paths.gz"
    listing.write_bytes(gzip.compress("\n".join(names).encode()))
    everything = listing_paths(str(listing), "s3://commoncrawl", None, None, 0)
    assert everything[0] == "s3://commoncrawl/" + names[0] and len(everything) == 1000
    assert len(listing_paths(str(listing), "s3://commoncrawl", 10, None, 0)) == 10
    sampled = listing_paths(str(listing), "s3://commoncrawl", None, 0.1, 0)
    assert 60 < len(sampled) < 140
    assert sampled == listing_paths(str(listing), "s3://commoncrawl", None, 0.1, 0)  # deterministic
    assert sampled != listing_paths(str(listing), "s3://commoncrawl", None, 0.1, 1)
