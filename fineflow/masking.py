"""Masking personal data in what fineflow shows (report examples, tables): e-mail addresses and IP
addresses become ``[email]`` and ``[ip]``. For display only; rewriting a corpus is a formatter's job."""

from __future__ import annotations

import ipaddress
import re

# Loose on purpose: masking a few strings that are not addresses costs nothing in a report (a host without a
# dot counts too: text cut inside an address, ``jane@exa``, is masked all the same).
_EMAIL = re.compile(r"[\w.+%-]+@[\w-]+(?:\.[\w-]+)*", re.UNICODE)
# Candidates, then kept only where ``ipaddress`` parses them (so a time like 12:30:45 stays).
_IP = re.compile(r"(?<![\w.:])(?:\d{1,3}(?:\.\d{1,3}){3}|[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7})(?![\w:]|\.\d)")


def _ip(match: re.Match) -> str:
    try:
        ipaddress.ip_address(match.group(0))
    except ValueError:
        return match.group(0)
    return "[ip]"


def mask_pii(text: str) -> str:
    """``text`` with every e-mail address replaced by ``[email]`` and every IPv4/IPv6 address by ``[ip]``."""
    return _IP.sub(_ip, _EMAIL.sub("[email]", text))


def masked_excerpt(text: str, chars: int) -> str:
    """The first ``chars`` characters of ``text`` with its addresses masked: masked before the cut, so an
    address across the cut is never shown in part."""
    masked = mask_pii(text[: chars + 200])  # an address is far shorter than the margin
    return masked[:chars] + ("…" if len(masked) > chars or len(text) > chars + 200 else "")
