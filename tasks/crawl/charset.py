"""Decode HTTP payloads to text: BOM, UTF-8, declared charset (HTTP header, then <meta>), detection.

UTF-8 is tried before a declared charset because servers often declare ISO-8859-1 for UTF-8
pages, while non-ASCII Latin-1 text is almost never valid UTF-8. Declared Latin-1 and ASCII are
read as windows-1252, as browsers do (WHATWG Encoding Standard).
"""

from __future__ import annotations

import codecs
import re

import charset_normalizer

_BOMS = ((codecs.BOM_UTF8, "utf-8-sig"), (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16"))
_META_CHARSET = re.compile(rb"""<meta[^>]+charset\s*=\s*["']?\s*([a-zA-Z0-9_\-:.]+)""", re.IGNORECASE)
_XML_ENCODING = re.compile(rb"""<\?xml[^>]+encoding\s*=\s*["']([a-zA-Z0-9_\-:.]+)""", re.IGNORECASE)
_WHATWG_ALIASES = {"iso8859-1": "cp1252", "latin-1": "cp1252", "ascii": "cp1252"}


def _codec(label: str | None) -> str | None:
    if not label:
        return None
    try:
        name = codecs.lookup(label.strip().strip("\"'").lower()).name
    except LookupError:
        return None
    return _WHATWG_ALIASES.get(name, name)


def declared_in_markup(body: bytes) -> str | None:
    head = body[:4096]
    match = _META_CHARSET.search(head) or _XML_ENCODING.search(head)
    return match.group(1).decode("ascii", errors="ignore") if match else None


def looks_binary(body: bytes) -> bool:
    """NUL bytes in the first KiB: an image or archive, not text (UTF-16 is caught by its BOM)."""
    return b"\x00" in body[:1024] and not body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE))


def decode(body: bytes, http_charset: str | None = None) -> tuple[str, str] | None:
    """``(text, encoding)``, or None when no encoding fits (count it as ``undecodable``)."""
    for bom, encoding in _BOMS:
        if body.startswith(bom):
            try:
                return body.decode(encoding), encoding
            except UnicodeDecodeError:
                break
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    for label in (http_charset, declared_in_markup(body)):
        encoding = _codec(label)
        if encoding and encoding not in ("utf-8", "utf-16"):
            try:
                return body.decode(encoding), encoding
            except UnicodeDecodeError:
                continue
    best = charset_normalizer.from_bytes(body[:262144]).best()
    if best is None or best.encoding is None:
        return None
    try:
        return body.decode(best.encoding), best.encoding
    except (UnicodeDecodeError, LookupError):
        return None
