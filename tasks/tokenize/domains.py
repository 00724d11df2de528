"""A document's registered domain (``source_domain``): its URL's host under its public suffix."""

from __future__ import annotations

from functools import lru_cache
from urllib.parse import urlsplit


@lru_cache(maxsize=1)
def _extractor():  # noqa: ANN202
    import tldextract

    # The public-suffix snapshot bundled with tldextract: no network access at run time.
    return tldextract.TLDExtract(suffix_list_urls=(), cache_dir=None)


def registered_domain(url: str | None) -> str | None:
    """``bbc.co.uk`` for ``https://www.news.bbc.co.uk/x``; the host itself when it has no
    registered part (an IP address, ``localhost``); None without a URL."""
    if not url:
        return None
    try:
        host = urlsplit(url).hostname
    except ValueError:
        return None
    if not host:
        return None
    registered = _extractor().extract_str(host).top_domain_under_public_suffix
    return (registered or host).lower()
