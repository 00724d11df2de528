"""trafilatura_tuning changes how trafilatura's XPath rules are evaluated, never what they select.

Checked three ways: the rewrites on hand-made expressions (including the cases they must leave
alone), every rewritten trafilatura rule against the stock one on the sample's pages, and the
extracted texts of the sample's pages, stock against tuned, each in its own process.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from fastwarc.warc import WarcRecord, WarcRecordType
from lxml import html
from lxml.etree import XPath

from fineflow.tasks.crawl import charset
from fineflow.tasks.crawl.trafilatura_tuning import (
    guard_regex_tests,
    rule_lists,
    tuned_rules,
    tuned_xpath,
    walk_tags_by_name,
)
from fineflow.tasks.crawl.warc import iter_gzip_records

RE = {"re": "http://exslt.org/regular-expressions"}


def _html_pages(sample_warc) -> list[str]:
    pages = []
    for member in iter_gzip_records(str(sample_warc), 0, sample_warc.stat().st_size, 64 << 20):
        record = WarcRecord.from_bytes(member.data)
        if record.record_type != WarcRecordType.response:
            continue
        record.parse_http()
        body = record.reader.read()
        if record.http_headers.status_code != 200 or charset.looks_binary(body) or b"<html" not in body[:4096].lower():
            continue
        pages.append(charset.decode(body, record.http_charset)[0])
    return pages


@pytest.fixture(scope="module")
def pages(sample_warc):
    return _html_pages(sample_warc)


def test_regex_tests_are_skipped_only_where_a_missing_attribute_cannot_match():
    path = ".//*[re:test(@id|@class, 'nav|menu') or re:test(@class, '^$') or re:test(@id, 'x*') or re:test(@role, 'main', 'i')]"
    tuned = guard_regex_tests(path)
    assert "((@id|@class) and re:test(@id|@class, 'nav|menu'))" in tuned
    assert "((@role) and re:test(@role, 'main', 'i'))" in tuned
    # these patterns match the empty string: an element without the attribute is selected
    assert " re:test(@class, '^$')" in tuned and " re:test(@id, 'x*')" in tuned
    doc = html.fromstring("<html><body><div id='nav1'>a</div><div>b</div><div class=''>c</div><p role='MAIN'>d</p></body></html>")
    assert XPath(tuned, namespaces=RE)(doc) == XPath(path, namespaces=RE)(doc)
    assert len(XPath(path, namespaces=RE)(doc)) == 5  # body has no id either: 'x*' matches it too


def test_name_tests_become_walks_only_where_no_predicate_counts_positions():
    path = ".//*[self::div or self::p][@class='a']"
    assert walk_tags_by_name(path) == "(.//div|.//p)[@class='a']"
    assert walk_tags_by_name(".//*[self::div or\n  self::p][@id]") == "(.//div|.//p)[@id]"  # rules span lines
    assert walk_tags_by_name(f"({path})[1]") == "((.//div|.//p)[@class='a'])[1]"
    for positional in (
        ".//*[self::div or self::p][@class='a'][1]",  # the first match per parent, not overall
        ".//*[self::div or self::p][position() < 3]",
        ".//*[self::div or self::p][count(.//a) - 1]",
        ".//*[self::div or self::p]/span",  # a further step: left alone
    ):
        assert walk_tags_by_name(positional) == positional
    doc = html.fromstring(
        "<html><body><div class='a'><p class='a'>x<div class='a'>y</div></p><span class='a'/></div>"
        "<section><p class='a'>z</p><p>w</p></section></body></html>"
    )
    for expression in (path, f"({path})[1]", f"({path})[last()]", ".//*[self::p or self::div][not(.//span)]"):
        assert XPath(tuned_xpath(expression))(doc) == XPath(expression)(doc), expression


def test_every_tuned_trafilatura_rule_selects_what_the_stock_one_does(pages):
    from trafilatura.utils import load_html

    trees = [tree for tree in map(load_html, pages) if tree is not None]
    assert len(trees) > 100
    rules = [(f"{name}[{i}]", rule) for name, value in rule_lists().items() for i, rule in enumerate(value)]
    assert len(rules) > 30
    changed = selected = 0
    for (name, stock), tuned in zip(rules, tuned_rules([rule for _, rule in rules])):
        changed += tuned.path != stock.path
        for tree in trees:
            expected = stock(tree)
            assert tuned(tree) == expected, name
            selected += len(expected)
    assert changed > 15 and selected > 1000  # the rewrites apply, and the rules select things


_EXTRACT_ALL = """
import json, sys
from fineflow.tasks.crawl.extractors import get_extractor, reset_state
extract = get_extractor("trafilatura", tuned=sys.argv[1] == "tuned")
pages = json.load(open(sys.argv[2]))
reset_state("trafilatura")
json.dump([extract(page) for page in pages], sys.stdout)
"""


def test_tuned_trafilatura_extracts_the_same_texts_as_stock(pages, tmp_path):
    source = tmp_path / "pages.json"
    source.write_text(json.dumps(pages))
    runs = {
        mode: subprocess.Popen([sys.executable, "-c", _EXTRACT_ALL, mode, str(source)], stdout=subprocess.PIPE, text=True)
        for mode in ("stock", "tuned")
    }
    texts = {}
    for mode, process in runs.items():
        out, _ = process.communicate(timeout=600)
        assert process.returncode == 0
        texts[mode] = json.loads(out)
    assert len(texts["tuned"]) == len(pages)
    assert sum(1 for text in texts["stock"] if len(text) > 200) > 100
    assert [i for i, (a, b) in enumerate(zip(texts["stock"], texts["tuned"])) if a != b] == []
