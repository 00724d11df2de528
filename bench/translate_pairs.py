"""Document-parallel pairs from the Debian Handbook pages of a WARC crawl (translate QC evaluation).

    uv run python bench/translate_pairs.py OUT_DIR [--warcs '/work/shared/corpus/web-small/*.warc.gz']

Every ``debian-handbook.info/browse/<lang>/stable/<page>.html`` response is read (fastwarc), its
paragraphs taken with lxml, and each translated page written next to its English version as
``OUT_DIR/en-<tgt>/<page>.src.txt`` and ``<page>.tgt.txt``, one paragraph per line, ``<tgt>`` a
fineflow language code (``zh-CN`` -> ``zh``, ``zh-TW`` -> ``zh-Hant``, ``nb-NO`` -> ``no``).

Paragraphs: the text of block elements in document order (the page title, headings, p, li,
dt/dd, table cells, ...); text directly inside a container between child blocks is a paragraph of
its own, so nesting (``<li><p>..</p></li>``) never doubles a text. ``pre`` listings, scripts and
styles are left out (not translated), and so is the site's chrome around the book (the banner and
the prev/next navigation). Whitespace is collapsed; empty paragraphs are dropped. Documentation
translations keep the source's paragraph structure, so a page whose two versions have different
paragraph counts is skipped and counted (``structure_mismatch``); nothing is aligned here beyond
paragraph order. ``OUT_DIR/summary.json`` holds the counts.
"""

from __future__ import annotations

import argparse
import glob
import json
import re
import sys
from collections import defaultdict
from pathlib import Path

import langcodes
import lxml.html
from fastwarc.warc import ArchiveIterator, WarcRecordType

from fineflow.languages import canonical_language

DEFAULT_WARCS = "/work/shared/corpus/web-small/*.warc.gz"
SOURCE_TAG = "en-US"
_URL = re.compile(r"^https?://debian-handbook\.info/browse/([A-Za-z]{2,3}(?:-[A-Za-z0-9]+)*)/stable/([^/?#]+)\.html$")
BLOCKS = frozenset(
    "html head body title div section article header footer nav aside main p li ul ol dl dt dd table thead tbody "
    "tfoot tr td th caption figure figcaption blockquote h1 h2 h3 h4 h5 h6 address form fieldset legend".split()
)
SKIPPED = frozenset({"script", "style", "pre", "noscript", "template", "svg"})
CHROME_IDS = frozenset({"banner"})
CHROME_CLASSES = frozenset({"docnav", "navheader", "navfooter", "breadcrumbs"})


def fineflow_code(tag: str) -> str:
    """A page's language tag as a fineflow code: the language, with its script only where the
    region implies another than the language's usual one (zh-TW -> zh-Hant, zh-CN -> zh)."""
    language = langcodes.Language.get(tag)
    usual = langcodes.Language.get(language.language).maximize().script
    script = language.maximize().script
    return canonical_language(language.language if script == usual else f"{language.language}-{script}")


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _is_chrome(element: lxml.html.HtmlElement) -> bool:
    if element.get("id") in CHROME_IDS:
        return True
    return bool(CHROME_CLASSES & set((element.get("class") or "").split()))


def paragraphs(html: bytes) -> list[str]:
    """The page's paragraphs in document order (see the module docstring)."""
    root = lxml.html.document_fromstring(html)
    out: list[str] = []
    run: list[str] = []

    def flush() -> None:
        text = _collapse("".join(run))
        if text:
            out.append(text)
        run.clear()

    def walk(element: lxml.html.HtmlElement) -> None:
        tag = element.tag if isinstance(element.tag, str) else ""
        tag = tag.rsplit("}", 1)[-1].lower()
        if not tag or tag in SKIPPED or _is_chrome(element):
            return  # a comment, a listing or site chrome: its tail is handled by the parent
        block = tag in BLOCKS
        if block:
            flush()
        if tag == "br":
            run.append(" ")
        run.append(element.text or "")
        for child in element:
            walk(child)
            run.append(child.tail or "")
        if block:
            flush()

    walk(root)
    flush()
    return out


def read_pages(patterns: list[str]) -> dict[str, dict[str, bytes]]:
    """{language tag: {page: html}} of every handbook response in these WARC files."""
    pages: dict[str, dict[str, bytes]] = defaultdict(dict)
    files = sorted({f for pattern in patterns for f in glob.glob(pattern)})
    if not files:
        raise FileNotFoundError(f"no WARC file matches {patterns}")
    for name in files:
        with open(name, "rb") as stream:
            for record in ArchiveIterator(stream, record_types=WarcRecordType.response, parse_http=True):
                found = _URL.match(record.headers.get("WARC-Target-URI") or "")
                if found and record.http_headers is not None and record.http_headers.status_code == 200:
                    pages[found.group(1)][found.group(2)] = record.reader.read()
    return pages


def build_pairs(out_dir: str | Path, patterns: list[str] | None = None) -> dict:
    """Write ``out_dir/en-<tgt>/<page>.{src,tgt}.txt`` for every translated page; the counts."""
    out = Path(out_dir)
    pages = read_pages(patterns or [DEFAULT_WARCS])
    if SOURCE_TAG not in pages:
        raise ValueError(f"no {SOURCE_TAG} handbook page in the WARC files")
    source = {page: paragraphs(html) for page, html in pages[SOURCE_TAG].items()}
    summary: dict[str, dict] = {}
    for tag in sorted(pages):
        if tag == SOURCE_TAG:
            continue
        code = fineflow_code(tag)
        folder = out / f"en-{code}"
        folder.mkdir(parents=True, exist_ok=True)
        written, mismatched, missing = 0, [], 0
        for page, html in sorted(pages[tag].items()):
            if page not in source:
                missing += 1
                continue
            target = paragraphs(html)
            if len(target) != len(source[page]) or not target:
                mismatched.append(page)
                continue
            (folder / f"{page}.src.txt").write_text("\n".join(source[page]) + "\n", encoding="utf-8")
            (folder / f"{page}.tgt.txt").write_text("\n".join(target) + "\n", encoding="utf-8")
            written += 1
        summary[f"en-{code}"] = {"language_tag": tag, "pages": len(pages[tag]), "written": written,
                                 "structure_mismatch": len(mismatched), "no_english_page": missing,
                                 "mismatched_pages": mismatched}
    (out / "summary.json").write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("out_dir")
    parser.add_argument("--warcs", action="append", help=f"a glob of WARC files (default {DEFAULT_WARCS}); repeatable")
    args = parser.parse_args(argv)
    summary = build_pairs(args.out_dir, args.warcs)
    for pair, counts in summary.items():
        print(f"{pair:10} {counts['written']:4} pages written, {counts['structure_mismatch']:3} structure mismatches")
    return 0


if __name__ == "__main__":
    sys.exit(main())
