"""Extraction (every extractor, time limit, hostile pages) and language ID on real pages of the sample."""

from __future__ import annotations

import os
import signal
import threading
import time

import pytest
from fastwarc.warc import WarcRecord, WarcRecordType

from fineflow.languages import canonical_language
from fineflow.tasks.crawl import charset
from fineflow.tasks.crawl.extractors import EXTRACTORS
from fineflow.tasks.crawl.justext_extractor import STOPLISTS, stoplist
from fineflow.tasks.crawl.sandbox import ExtractionTimeout, SandboxedExtractor
from fineflow.tasks.crawl.warc import iter_gzip_records
from fineflow.tasks.text import langid

HANDBOOK = "https://debian-handbook.info/browse/{}/stable/"


def _pages(sample_warc) -> dict[str, str]:
    pages = {}
    for member in iter_gzip_records(str(sample_warc), 0, sample_warc.stat().st_size, 64 << 20):
        record = WarcRecord.from_bytes(member.data)
        if record.record_type != WarcRecordType.response:
            continue
        record.parse_http()
        url = record.headers.get("WARC-Target-URI")
        if record.http_headers.status_code == 200 and url.startswith("https://debian-handbook.info/browse/"):
            locale = url.split("/")[4]
            body = record.reader.read()
            if charset.looks_binary(body):
                continue  # the handbook's images
            html = charset.decode(body, record.http_charset)[0]
            # The longest page per language: short appendix pages are often left untranslated.
            if len(html) > len(pages.get(locale, "")):
                pages[locale] = html
    return pages


@pytest.fixture(scope="module")
def pages(sample_warc):
    return _pages(sample_warc)


@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_extractors_return_main_text(pages, extractor):
    with SandboxedExtractor(extractor, timeout_s=30) as sandbox:
        text = sandbox.extract(pages["en-US"])
    assert len(text) > 200
    assert "<div" not in text and "<html" not in text


def test_time_limit_kills_and_restarts_the_extractor(pages):
    with SandboxedExtractor("trafilatura", timeout_s=30) as sandbox:
        sandbox.extract("<html><body><p>warm up</p></body></html>")
        sandbox.timeout_s = 0.2
        many_paragraphs = "<html><body>" + "".join(f"<p>Paragraph {i} of a very long page.</p>" for i in range(60000))
        with pytest.raises(ExtractionTimeout):
            sandbox.extract(many_paragraphs + "</body></html>")  # seconds of CPU in trafilatura
        assert sandbox.restarts == 1
        sandbox.timeout_s = 30
        assert len(sandbox.extract(pages["de-DE"])) > 200  # a fresh process took over


@pytest.mark.parametrize("locale,expected", [("de-DE", "de"), ("ru-RU", "ru"), ("zh-CN", "zh")])
def test_justext_uses_the_pages_language(pages, locale, expected):
    """German and Russian paragraphs are kept by their own stop lists (English stop words would
    mark them all boilerplate); Chinese, which has no list, keeps every paragraph, as NeMo does."""
    with SandboxedExtractor("justext", timeout_s=30) as sandbox:
        text = sandbox.extract(pages[locale])
    assert len(text) > 500
    assert langid.identify(text)[0] == expected
    if expected != "zh":
        assert "\n\n" in text  # paragraphs joined as NeMo Curator joins them
        assert stoplist(expected) and "und" not in stoplist("en")


def test_every_justext_stoplist_is_reachable():
    import justext

    assert set(justext.get_stoplists()) - set(STOPLISTS.values()) == {"Latin", "Simple_English", "Belarusian_Taraskievica"}
    assert all(code == canonical_language(code) for code in STOPLISTS)  # keys are fineflow's codes
    assert stoplist("la") is None and stoplist("xx") is None


@pytest.mark.parametrize("extractor", EXTRACTORS)
def test_hostile_pages_are_empty_or_text_never_a_crash(extractor):
    garbled = "".join(chr(0x20 + (i * 7919) % 0x2FE0) for i in range(300_000))
    # Not deeper: resiliparse takes time quadratic in nesting depth (38 s at 50,000 divs; the limit catches it).
    hostile = ["", "   ", "<" * 200_000, "<div>" * 3_000 + "deep", "<p>a\x00b</p>" * 1000, garbled, "<!--" * 5000]
    with SandboxedExtractor(extractor, timeout_s=30) as sandbox:
        for html in hostile:
            assert isinstance(sandbox.extract(html), str)
        assert sandbox.restarts == 0
    with SandboxedExtractor(extractor, timeout_s=0.05) as sandbox:
        huge = "<html><body>" + "".join(f"<p>Paragraph {i} of a very long page.</p>" for i in range(100_000))
        with pytest.raises(ExtractionTimeout):
            sandbox.extract(huge)
        assert sandbox.restarts == 1
        sandbox.timeout_s = 30
        assert sandbox.extract("<html><body><p>after</p></body></html>") is not None  # a fresh process


def test_time_spent_waiting_for_a_core_does_not_count(pages):
    """The limit is CPU time: a paused extractor (as on a loaded machine) is not timed out."""
    with SandboxedExtractor("resiliparse", timeout_s=0.5) as sandbox:
        sandbox.extract("<html><body><p>warm up</p></body></html>")
        pid = sandbox._process.pid
        os.kill(pid, signal.SIGSTOP)
        threading.Timer(1.5, os.kill, (pid, signal.SIGCONT)).start()
        started = time.monotonic()
        text = sandbox.extract(pages["en-US"])
        assert time.monotonic() - started > 1.4 and len(text) > 200
        assert sandbox.restarts == 0
        assert sandbox.peak_rss_mb() > 10


@pytest.mark.parametrize(
    "locale,expected", [("en-US", "en"), ("ar-MA", "ar"), ("zh-CN", "zh"), ("ru-RU", "ru"), ("de-DE", "de"), ("fr-FR", "fr")]
)
def test_lid176_identifies_real_pages(pages, locale, expected):
    with SandboxedExtractor("resiliparse", timeout_s=30) as sandbox:
        text = sandbox.extract(pages[locale])
    language, score = langid.identify(text)
    assert language == expected
    assert 0.5 < score <= 1.0


def test_no_letters_is_undetermined():
    assert langid.identify("   \n ") == ("und", 0.0)


@pytest.mark.parametrize(
    "code,canonical",
    [("__label__en", "en"), ("rus_Cyrl", "ru"), ("cmn_Hani", "zh"), ("arb_Arab", "ar"), ("zho_Hant", "zh-Hant"), ("srp_Latn", "sr-Latn")],
)
def test_one_canonical_language_code_scheme(code, canonical):
    assert canonical_language(code) == canonical
