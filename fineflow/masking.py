"""Masking personal data in what fineflow shows (report examples, tables): e-mail addresses, IP
addresses and phone numbers become ``[email]``, ``[ip]`` and ``[phone]``. For display only;
rewriting a corpus is a formatter's job."""

from __future__ import annotations

import ipaddress
import re

# Loose on purpose: masking a few strings that are not addresses costs nothing in a report. The local
# part takes every character an address may have (o'brien@...), the host may lack a dot (text cut inside
# an address, ``jane@exa``) or be a bracketed literal (jane@[192.0.2.1]).
_EMAIL = re.compile(r"[\w.!#$%&'*+/=?^`{|}~-]+@(?:\[[^\]\s]{1,64}\]|[\w-]+(?:\.[\w-]+)*)", re.UNICODE)
# Candidates, then kept only where ``ipaddress`` parses them (so a time like 12:30:45 stays).
_IP = re.compile(r"(?<![\w.:])(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})(?![\w:]|\.\d)")
# North-American numbers as the pii formatter finds them, and international ones written with a "+".
_PHONE = re.compile(r"(?<![\w+])(?:(?:\+?1[-. ]?)?(?:\(\d{3}\)|\d{3})[-. ]?\d{3}[-. ]\d{4}"
                    r"|\+\d{1,3}[ .-]?(?:\(\d{1,4}\)[ .-]?)?\d{1,4}(?:[ .-]?\d{2,4}){2,4})(?!\w)")
MARGIN = 200  # characters read past a cut, so an address across it is masked whole (addresses are far shorter)


def _ip(match: re.Match) -> str:
    try:
        ipaddress.ip_address(match.group(0))
    except ValueError:
        return match.group(0)
    return "[ip]"


def mask_pii(text: str) -> str:
    """``text`` with every e-mail address replaced by ``[email]``, every IPv4/IPv6 address by ``[ip]``
    and every phone number by ``[phone]``."""
    return _PHONE.sub("[phone]", _IP.sub(_ip, _EMAIL.sub("[email]", text)))


def _window(text: str, chars: int) -> str:
    """The first ``chars`` + ``MARGIN`` characters, ended at whitespace where the text goes on: an
    address is never cut into a part that masking cannot recognise."""
    if len(text) <= chars + MARGIN:
        return text
    window = text[: chars + MARGIN]
    space = max(window.rfind(" "), window.rfind("\n"), window.rfind("\t"))
    return window[:space] if space > chars else window[:chars]


def masked_excerpt(text: str, chars: int) -> str:
    """The first ``chars`` characters of ``text`` with its addresses masked: masked before the cut, so an
    address across the cut is never shown in part."""
    masked = mask_pii(_window(text, chars))
    return masked[:chars] + ("…" if len(masked) > chars or len(text) > chars + MARGIN else "")


def masked_prefix(text: str, chars: int) -> str:
    """``masked_excerpt`` without the ellipsis (a URL or detail line)."""
    return mask_pii(_window(text, chars))[:chars]
