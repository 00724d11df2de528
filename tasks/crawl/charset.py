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


def utf16_without_bom(body: bytes, declared: str | None = None) -> str | None:
    """``utf-16-le``/``utf-16-be`` for a BOM-less body that is UTF-16 by its bytes or its label.

    Markup is ASCII, so UTF-16 HTML has a zero byte in most of its code units, always on the
    same side; binary formats do not show that pattern.
    """
    if body.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return None  # decode() reads the BOM
    head = body[:1024]
    head = head[: len(head) // 2 * 2]
    units = len(head) // 2
    if units < 2:
        return None
    even, odd = head[0::2].count(0), head[1::2].count(0)
    if odd >= 0.3 * units and even <= 0.05 * units:
        return "utf-16-le"
    if even >= 0.3 * units and odd <= 0.05 * units:
        return "utf-16-be"
    codec = _codec(declared)
    if codec in ("utf-16", "utf-16-le", "utf-16-be") and b"\x00" in head:
        return "utf-16-be" if codec == "utf-16-be" else "utf-16-le"
    return None


def looks_binary(body: bytes) -> bool:
    """NUL bytes in the first KiB: an image or archive, not text (check ``utf16_without_bom`` first)."""
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
