"""Charset decoding and payload classification, on hand-made bytes and real sample pages."""

from __future__ import annotations

from fastwarc.warc import WarcRecord, WarcRecordType

from fineflow.tasks.crawl import charset, content_type
from fineflow.tasks.crawl.warc import iter_gzip_records


def test_utf8_wins_over_a_wrong_latin1_declaration():
    text = "Grüße aus Köln — naïve café"
    assert charset.decode(text.encode("utf-8"), "iso-8859-1") == (text, "utf-8")


def test_declared_latin1_in_header_or_meta_only():
    text = "Les élèves étudient à l'école, où ça coûte très cher. Ærøskøbing."
    body = text.encode("latin-1")
    assert charset.decode(body, "iso-8859-1")[0] == text
    html = f'<html><head><meta charset="ISO-8859-1"></head><body>{text}</body></html>'.encode("latin-1")
    decoded, encoding = charset.decode(html, None)
    assert text in decoded and encoding == "cp1252"


def test_undeclared_legacy_encoding_is_detected():
    text = "Привет, мир! Это документ в кодировке windows-1251, без объявления кодировки. " * 5
    decoded, encoding = charset.decode(text.encode("cp1251"), None)
    assert decoded == text


def test_bom_and_binary():
    assert charset.decode("\ufeffhello".encode("utf-8"), None)[0] == "hello"
    assert charset.decode("héllo wörld".encode("utf-16"), None)[0] == "héllo wörld"
    png = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256))
    assert charset.looks_binary(png)


def test_classification():
    xhtml = b'<?xml version="1.0" encoding="UTF-8"?>\n<!DOCTYPE html PUBLIC "-//W3C//DTD XHTML 1.0 Strict//EN" "x"><html>'
    assert content_type.classify(None, "application/xml", xhtml) == content_type.HTML
    assert content_type.classify("text/html", None, b"<p>hi") == content_type.HTML
    assert content_type.classify(None, None, b"<!DOCTYPE html><html>") == content_type.HTML
    assert content_type.classify("text/plain", "text/plain", b"GPL-2+ licence text") == content_type.TEXT
    assert content_type.classify("image/png", "image/png", b"\x89PNG") == content_type.OTHER
    assert content_type.classify(None, "application/octet-stream", b"\x00\x01") == content_type.OTHER


def _sample_responses(sample_warc):
    for member in iter_gzip_records(str(sample_warc), 0, sample_warc.stat().st_size, 64 << 20):
        record = WarcRecord.from_bytes(member.data)
        if record.record_type == WarcRecordType.response:
            record.parse_http()
            yield record


def test_real_latin1_pages_decode_without_replacement_characters(sample_warc):
    checked = 0
    for record in _sample_responses(sample_warc):
        if record.http_headers.status_code != 200:
            continue
        body = record.reader.read()
        if charset.looks_binary(body):
            continue
        try:
            body.decode("utf-8")
            continue
        except UnicodeDecodeError:
            pass
        text, encoding = charset.decode(body, record.http_charset)
        assert "\ufffd" not in text and encoding != "utf-8"
        checked += 1
    assert checked >= 3  # the sample has pages served as ISO-8859-1, declared or not


def _http_record(url: str, body: bytes, content_type: str = "text/html") -> bytes:
    import gzip
    import uuid

    http = f"HTTP/1.1 200 OK\r\nContent-Type: {content_type}\r\nContent-Length: {len(body)}\r\n\r\n".encode() + body
    head = (
        f"WARC/1.0\r\nWARC-Type: response\r\nWARC-Target-URI: {url}\r\nWARC-Date: 2026-09-01T00:00:00Z\r\n"
        f"WARC-Record-ID: <urn:uuid:{uuid.uuid5(uuid.NAMESPACE_URL, url)}>\r\n"
        f"Content-Type: application/http; msgtype=response\r\nContent-Length: {len(http)}\r\n\r\n"
    ).encode()
    return gzip.compress(head + http + b"\r\n\r\n")


def test_utf16_pages_without_a_bom_are_decoded_or_counted_undecodable(tmp_path):
    import polars as pl

    from fineflow.tasks.crawl.inputs import describe_files, plan_shards
    from fineflow.tasks.crawl.stage import extract_shard

    page = (
        "<html><head><title>Météo</title></head><body><article><p>"
        + "Die Wettervorhersage für morgen: sonnig, warm und trocken in den Bergen und im Tal. " * 8
        + "</p></article></body></html>"
    )
    broken = page.encode("utf-16-le")[:-1] + b"\x00\xd8"  # a lone surrogate: not UTF-16 at all
    path = tmp_path / "utf16.warc.gz"
    path.write_bytes(
        _http_record("https://example.org/le", page.encode("utf-16-le"))
        + _http_record("https://example.org/be", page.encode("utf-16-be"), "text/html; charset=utf-16be")
        + _http_record("https://example.org/broken", broken)
    )
    (shard,) = plan_shards(describe_files([str(path)], None, True), 1 << 30)
    params = dict(
        extractor="resiliparse", extraction_timeout_s=30.0, include_text_plain=False, keep_truncated=False,
        max_record_bytes=1 << 20, langid_model="lid.176", url_filter=None, url_filter_options={},
    )
    stats = extract_shard(shard, params, str(tmp_path / "part.parquet"), str(tmp_path / "rejects.parquet"))["stats"]
    docs = pl.read_parquet(tmp_path / "part.parquet").sort("url")
    assert docs["url"].to_list() == ["https://example.org/be", "https://example.org/le"]
    assert docs["charset"].to_list() == ["utf-16-be", "utf-16-le"]
    assert all("Wettervorhersage für morgen" in text for text in docs["text"]) and (docs["language"] == "de").all()
    assert stats["skips"] == {"undecodable": 1}  # never "not_html"
