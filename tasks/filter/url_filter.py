"""FineWeb's URL filter: blocklisted domains, sub-domains and URLs, banned words in the URL.

Checked in FineWeb's order: registered domain, full host name, exact URL, a banned word among
the URL's words, at least ``soft_word_threshold`` soft-banned words, a banned sub-word anywhere
in the URL once non-alphanumerics are removed (one Aho-Corasick pass). Lists are read from
local paths or any fsspec URL, once per worker process, into sets and an automaton.

The default lists in ``blocklists/default/`` are a small sample; FineWeb used the UT1
blocklists (see docs/filters.md for pointing ``domains_file`` at them). The same filter is a
crawl pre-extraction hook: ``url_filter: fineflow.tasks.filter.url_filter:crawl_hook``.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from pydantic import Field

from fineflow import storage
from fineflow.tasks.filter.rule import Document, Rule, RuleOptions

if TYPE_CHECKING:
    import ahocorasick
    import tldextract

# Resolved by each process in its own installation (a worker's path may differ from the client's).
DEFAULT_LISTS = storage.package_url(__package__, "blocklists/default")
LIST_FILES = ("domains_file", "urls_file", "banned_words_file", "soft_banned_words_file", "banned_subwords_file")
_DEFAULT = "default"  # a list option's value for the list fineflow ships


class UrlFilterOptions(RuleOptions):
    domains_file: str | None = _DEFAULT
    urls_file: str | None = _DEFAULT
    banned_words_file: str | None = _DEFAULT
    soft_banned_words_file: str | None = _DEFAULT
    banned_subwords_file: str | None = _DEFAULT
    soft_word_threshold: int = Field(default=2, ge=0)
    THRESHOLDS = ("soft_word_threshold",)

    def file_options(self) -> list[str]:
        return [key for key in super().file_options() if getattr(self, key) != _DEFAULT]
_NON_ALNUM = re.compile(r"[^a-zA-Z0-9]+")
_lock = threading.Lock()


def default_lists() -> dict[str, str]:
    names = {
        "domains_file": "domains.txt",
        "urls_file": "urls.txt",
        "banned_words_file": "banned_words.txt",
        "soft_banned_words_file": "soft_banned_words.txt",
        "banned_subwords_file": "banned_subwords.txt",
    }
    return {key: f"{DEFAULT_LISTS}/{name}" for key, name in names.items()}


def _read_list(url: str | None, normalize: bool) -> set[str]:
    if not url:
        return set()
    data = storage.read_bytes(url)
    if url.endswith(".gz"):
        import gzip

        data = gzip.decompress(data)
    entries = set()
    for line in data.decode("utf-8", errors="replace").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        entries.add(_NON_ALNUM.sub("", line).lower() if normalize else line)
    return entries


@dataclass
class UrlBlocklist:
    domains: set[str]
    urls: set[str]
    banned_words: set[str]
    soft_banned_words: set[str]
    subwords: ahocorasick.Automaton | None
    extractor: tldextract.TLDExtract

    def check(self, url: str) -> tuple[str | None, int, bool]:
        """(hard block reason or None, number of soft-banned words, banned sub-word present)."""
        parts = self.extractor(url)
        host = (parts.fqdn or urlsplit(url).hostname or "").lower()  # host names are case-insensitive
        registered = parts.top_domain_under_public_suffix.lower()
        if registered:
            if registered in self.domains:
                return "domain", 0, False
        else:  # no known public suffix (intranet names, .example): any parent domain may be listed
            labels = host.split(".")
            if any(".".join(labels[i:]) in self.domains for i in range(1, len(labels) - 1)):
                return "domain", 0, False
        if host in self.domains:
            return "subdomain", 0, False
        if url in self.urls:
            return "url", 0, False
        url_words = set(_NON_ALNUM.split(url.lower()))
        if not url_words.isdisjoint(self.banned_words):
            return "hard_blacklisted", 0, False
        soft = len(url_words & self.soft_banned_words)
        subword = self.subwords is not None and next(self.subwords.iter(_NON_ALNUM.sub("", url).lower()), None) is not None
        return None, soft, subword

    def reason(self, url: str, soft_word_threshold: int) -> str | None:
        hard, soft, subword = self.check(url)
        return decide(hard, soft, subword, soft_word_threshold)


def decide(hard: str | None, soft: int, subword: bool, soft_word_threshold: int) -> str | None:
    if hard:
        return hard
    if soft_word_threshold and soft >= soft_word_threshold:
        return "soft_blacklisted"
    if subword:
        return "blacklisted_subword"
    return None


@lru_cache(maxsize=8)
def _load(domains: str, urls: str, banned: str, soft: str, subwords: str) -> UrlBlocklist:
    import ahocorasick
    import tldextract

    words = _read_list(subwords, normalize=True)
    automaton = None
    if words:
        automaton = ahocorasick.Automaton(ahocorasick.STORE_INTS)
        for index, word in enumerate(sorted(words)):
            automaton.add_word(word, index)
        automaton.make_automaton()
    return UrlBlocklist(
        domains={d.lstrip(".").lower() for d in _read_list(domains, normalize=False)},
        urls=_read_list(urls, normalize=False),
        banned_words=_read_list(banned, normalize=True),
        soft_banned_words=_read_list(soft, normalize=True),
        subwords=automaton,
        # The public-suffix snapshot bundled with tldextract: no network access at run time.
        extractor=tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None),
    )


def load_blocklist(options: dict) -> UrlBlocklist:
    """The blocklist for these list files, built once per process (and shared by its threads)."""
    with _lock:
        return _load(*(options.get(key) or "" for key in LIST_FILES))


def crawl_hook(soft_word_threshold: int = 2, **files: str):
    """Factory for crawl's pre-extraction hook: blocked URLs are never parsed."""
    unknown = set(files) - set(LIST_FILES)
    if unknown:
        raise ValueError(f"unknown URL filter option(s): {', '.join(sorted(unknown))}")
    options = {**default_lists(), **files}
    blocklist = load_blocklist(options)
    return lambda url: blocklist.reason(url, soft_word_threshold)


def prepare(options: UrlFilterOptions, language_configs: dict[str, dict]) -> dict:
    defaults = default_lists()
    return {"lists": {k: (defaults[k] if v == _DEFAULT else v) for k, v in options.split()[0].items()}}


def measure(blocklist: UrlBlocklist, document: Document) -> dict:
    block, soft, subword = blocklist.check(document.url or "")
    return {"url_block": block, "url_soft_words": soft, "url_subword": subword}


# No ``measured_by``: every document is measured, whatever its language (the URL needs no words).
def resources(spec: dict) -> dict[str, str]:
    from fineflow.fingerprint import file_content_hash

    return {f"url_filter.{key}": file_content_hash(url)["blake2b"] for key, url in spec["lists"].items() if url}


RULE = Rule(
    name="url",
    resources=resources,
    options=UrlFilterOptions,
    signals=[("url_block", "string"), ("url_soft_words", "int64"), ("url_subword", "bool")],
    measure=measure,
    load=lambda spec: load_blocklist(spec["lists"]),
    prepare=prepare,
    decide=lambda row, limits: decide(row["url_block"], row["url_soft_words"], row["url_subword"], limits["soft_word_threshold"]),
)
