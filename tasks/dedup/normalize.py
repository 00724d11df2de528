"""Text and URL normalization before hashing: what counts as "the same" document.

Text (FineWeb's MinHash normalization, datatrove 0.10 order): lower-case, numbers in any script
(with one decimal part) become ``0``, punctuation and control characters become spaces,
whitespace runs collapse, then NFD with combining marks dropped (accents).

URLs: scheme, ``www.``, default ports, fragments, trailing slashes and tracking parameters
(``utm_*``, ``fbclid``, ``gclid``, ...) do not make two URLs different; the remaining query
parameters are sorted.
"""

from __future__ import annotations

import re
import unicodedata
from urllib.parse import parse_qsl, urlencode, urlsplit

import regex

_NUMBERS = regex.compile(r"\p{Nd}+([.,،٫⎖⎗⎘]\p{Nd}+)?")
_WHITESPACE = re.compile(r"\s+")
TRACKING_PARAMETERS = frozenset(
    {"fbclid", "gclid", "dclid", "msclkid", "yclid", "mc_cid", "mc_eid", "_ga", "_hsenc", "_hsmi", "igshid", "ref", "ref_src", "spm"}
)


_COMBINING_MARKS = regex.compile(r"\p{Mn}+")
# The characters FineWeb's normalization turns into spaces: ASCII and CJK punctuation, a few
# symbols, and control characters except tab and newline (datatrove's list, so that signatures
# match its bit for bit; other symbols such as (c) signs stay part of their word).
FINEWEB_PUNCTUATION = "!/—”:％１〈&(、━\\【#%「」，】；+^]~“《„';’{|∶´[=-`*．（–？！：$～«〉,><》)?）。…@_.\"}►»" + "".join(
    chr(c) for low, high in ((0, 9), (11, 32), (127, 160)) for c in range(low, high)
)
_TO_SPACES = str.maketrans(FINEWEB_PUNCTUATION, " " * len(FINEWEB_PUNCTUATION))


def normalize_text(text: str) -> str:
    text = _NUMBERS.sub("0", text.lower())
    text = _WHITESPACE.sub(" ", text.translate(_TO_SPACES).strip())
    return _COMBINING_MARKS.sub("", unicodedata.normalize("NFD", text)).strip()


def normalize_url(url: str | None) -> str | None:
    if not url:
        return None
    try:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower().rstrip(".")
        port = parts.port
    except ValueError:
        return url.strip().lower()
    if host.startswith("www."):
        host = host[4:]
    if port and not ((parts.scheme == "http" and port == 80) or (parts.scheme == "https" and port == 443)):
        host = f"{host}:{port}"
    query = sorted(
        (k, v)
        for k, v in parse_qsl(parts.query, keep_blank_values=True)
        if not k.lower().startswith("utm_") and k.lower() not in TRACKING_PARAMETERS
    )
    path = re.sub(r"/+$", "", parts.path) or ""
    return host + path + ("?" + urlencode(query) if query else "")
