"""Decide what a WARC payload is: HTML, plain text, or something to skip.

Common Crawl's ``WARC-Identified-Payload-Type`` (content sniffing at crawl time) is trusted
first, then the HTTP ``Content-Type``, then our own sniffing of the first bytes. XHTML that
starts with an XML declaration is HTML.
"""

from __future__ import annotations

import re

HTML = "html"
TEXT = "text"
OTHER = "other"

HTML_TYPES = {"text/html", "application/xhtml+xml", "application/vnd.wap.xhtml+xml"}
TEXT_TYPES = {"text/plain"}
# Types a server or sniffer may give an HTML page; the payload decides.
AMBIGUOUS_TYPES = {"", "application/octet-stream", "text/xml", "application/xml", "unknown/unknown"}

_HTML_START = re.compile(rb"^\s*(<!--.*?-->\s*)*(<!doctype\s+html|<html|<head|<body)", re.IGNORECASE | re.DOTALL)
_XML_DECL_THEN_HTML = re.compile(rb"^\s*<\?xml[^>]*\?>.{0,2048}?(<!doctype\s+html|<html)", re.IGNORECASE | re.DOTALL)


def _media_type(value: str | None) -> str:
    return (value or "").split(";", 1)[0].strip().lower()


def sniff_html(body: bytes) -> bool:
    head = body[:4096].lstrip(b"\xef\xbb\xbf")
    return bool(_HTML_START.match(head) or _XML_DECL_THEN_HTML.match(head))


def classify(identified_type: str | None, http_type: str | None, body: bytes) -> str:
    for declared in (_media_type(identified_type), _media_type(http_type)):
        if declared in HTML_TYPES:
            return HTML
        if declared in TEXT_TYPES:
            return HTML if sniff_html(body) else TEXT
        if declared and declared not in AMBIGUOUS_TYPES:
            return OTHER
        if declared in AMBIGUOUS_TYPES and declared and sniff_html(body):
            return HTML
    return HTML if sniff_html(body) else OTHER
