"""``pii``: e-mail addresses and public IP addresses replaced, FineWeb's last step (datatrove's
``PIIFormatter``) by default.

Defaults reproduce datatrove 0.10's output byte for byte: the same patterns (an RFC 5322-style
e-mail pattern, dotted-quad IPv4), e-mails first, then IPv4 addresses that ``ipaddress`` calls
global (private, loopback, link-local and reserved ones stay), each replaced by the next of a
fixed list in turn. One difference by design: the turn restarts at every document (datatrove's
continues across the documents of a task, so its output depends on how the input was split).

Options: Dolma-style masks (``|||EMAIL_ADDRESS|||``, ...) instead of replacements, IPv6
addresses, North-American phone numbers (as Dolma's tagger finds them), and ``max_matches``:
a document with more matches than that goes to rejects as ``format:pii_matches``.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable, Iterator
from typing import Literal

from pydantic import Field, model_validator

from fineflow.tasks.format.formatter import Applied, Formatter, FormatterOptions

# One IPv4 byte, the longest alternative first as datatrove's pattern has it: "256" reads as "25".
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|[01]?[0-9][0-9]?)"
IPV4 = re.compile(rf"(?:{_OCTET}\.){{3}}{_OCTET}")

# The e-mail pattern: a dot-atom local part, then a domain of labels or a bracketed IPv4 literal.
_ATOM = r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_LITERAL = rf"\[(?:{_OCTET}\.){{3}}(?:{_OCTET}|[A-Za-z0-9-]*[A-Za-z0-9]:)]"
_DOMAIN = rf"(?:(?:{_LABEL}\.)+{_LABEL}|{_LITERAL})"
EMAIL = re.compile(rf"\b{_ATOM}(?:\.{_ATOM})*@{_DOMAIN}")
_AT_DOMAIN = re.compile(rf"@{_DOMAIN}")
_LOCAL_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~-.")

# IPv6 candidates: a run of hex digits and at least two colons, not inside a word or a dotted
# name; ``ipaddress`` decides what is an address (times like 10:30:00 are not).
IPV6 = re.compile(r"(?<![\w:.])(?=[0-9A-Fa-f:]*:[0-9A-Fa-f:]*:)[0-9A-Fa-f:]{2,39}(?![\w:]|\.\w)")
# North-American numbers, as Dolma's tagger finds them: (555) 123-4567, 555.123.4567, +1 555 123 4567.
PHONE = re.compile(r"(?<![\w+])(?:\+?1[-. ]?)?(?:\(\d{3}\)|\d{3})[-. ]?\d{3}[-. ]\d{4}(?!\w)")

# datatrove's lists: example.com/.org are reserved for examples; the IPs did not answer pings
EMAIL_REPLACEMENTS = ["email@example.com", "firstname.lastname@example.org"]
IP_REPLACEMENTS = ["22.214.171.124", "126.96.36.199", "188.8.131.52", "184.108.40.206", "220.127.116.11", "18.104.22.168"]
IPV6_REPLACEMENTS = ["2001:db8::1", "2001:db8::2"]  # RFC 3849's documentation prefix
PHONE_REPLACEMENTS = ["555-0100", "555-0199"]  # the range reserved for fiction
MASKS = {"emails": "|||EMAIL_ADDRESS|||", "ips": "|||IP_ADDRESS|||", "ipv6": "|||IP_ADDRESS|||", "phones": "|||PHONE_NUMBER|||"}

Replacements = list[str]


def _replacements(default: list[str]) -> object:
    return Field(default_factory=lambda: list(default), min_length=1, max_length=100,
                 description="used in turn, restarting at each document")


class PiiOptions(FormatterOptions):
    name: Literal["pii"] = "pii"
    emails: bool = Field(default=True, description="replace e-mail addresses")
    ips: bool = Field(default=True, description="replace IPv4 addresses")
    public_ips_only: bool = Field(default=True, description="only addresses ipaddress calls global (private, loopback stay)")
    ipv6: bool = Field(default=False, description="replace IPv6 addresses too (counted in pii_ips)")
    phones: bool = Field(default=False, description="replace North-American phone numbers (Dolma's pattern)")
    mode: Literal["replace", "mask"] = Field(
        default="replace", description="replace: the lists below in turn (FineWeb); mask: |||EMAIL_ADDRESS|||, ... (Dolma)"
    )
    max_matches: int | None = Field(
        default=None, ge=0, le=1_000_000, description="a document with more matches goes to rejects (format:pii_matches)"
    )
    email_replacements: Replacements = _replacements(EMAIL_REPLACEMENTS)
    ip_replacements: Replacements = _replacements(IP_REPLACEMENTS)
    ipv6_replacements: Replacements = _replacements(IPV6_REPLACEMENTS)
    phone_replacements: Replacements = _replacements(PHONE_REPLACEMENTS)

    @model_validator(mode="after")
    def _something_to_find(self) -> PiiOptions:
        if not (self.emails or self.ips or self.ipv6 or self.phones):
            raise ValueError("enable at least one of emails, ips, ipv6, phones")
        for key in ("email_replacements", "ip_replacements", "ipv6_replacements", "phone_replacements"):
            if any(not value or len(value) > 200 for value in getattr(self, key)):
                raise ValueError(f"{key}: each replacement is 1 to 200 characters")
        return self


def _ip_check(public_only: bool) -> Callable[[str], bool]:
    def valid(candidate: str) -> bool:
        try:
            address = ipaddress.ip_address(candidate)
        except ValueError:
            return False
        return address.is_global or not public_only

    return valid


Pass = tuple[str, re.Pattern, tuple[str, ...], Callable[[str], bool] | None]


def load(options: dict) -> tuple[list[Pass], int | None]:
    """((count column, pattern, replacements, check) for each kind of PII in the order applied, max_matches)."""
    settings = PiiOptions.model_validate(options)
    check = _ip_check(settings.public_ips_only)

    def using(kind: str, listed: list[str]) -> tuple[str, ...]:
        return (MASKS[kind],) if settings.mode == "mask" else tuple(listed)

    passes: list[Pass] = []
    if settings.emails:
        passes.append(("pii_emails", EMAIL, using("emails", settings.email_replacements), None))
    if settings.ips:
        passes.append(("pii_ips", IPV4, using("ips", settings.ip_replacements), check))
    if settings.ipv6:
        passes.append(("pii_ips", IPV6, using("ipv6", settings.ipv6_replacements), check))
    if settings.phones:
        passes.append(("pii_phones", PHONE, using("phones", settings.phone_replacements), None))
    return passes, settings.max_matches


def email_matches(text: str) -> Iterator[re.Match]:
    """``EMAIL.finditer(text)``, without its quadratic time on long runs of local-part characters
    (``ab-ab-ab-...`` with no ``@``: the pattern rescans the run from every word boundary in it).

    A match's local part is the greedy run of atoms and single dots that ends right before an
    ``@`` (a shorter one is followed by an atom or a dot, never by ``@``), so a match can only
    start in the run of local-part characters before an ``@``, after its last ``..``, and only
    where the domain pattern matches after that ``@``. The pattern itself confirms each match."""
    position = 0
    while (at := text.find("@", position)) >= 0:
        start = at
        while start > position and text[start - 1] in _LOCAL_CHARS:
            start -= 1
        if start < at and text[at - 1] != "." and _AT_DOMAIN.match(text, at):
            double_dot = text.rfind("..", start, at)
            for candidate in range(start if double_dot < 0 else double_dot + 2, at):
                if text[candidate] != "." and (match := EMAIL.match(text, candidate)):
                    yield match
                    at = match.end() - 1
                    break
        position = at + 1


def _finder(pattern: re.Pattern) -> Callable[[str], Iterator[re.Match]]:
    return email_matches if pattern is EMAIL else pattern.finditer


def _replace(pattern: re.Pattern, text: str, replacements: tuple[str, ...], valid: Callable[[str], bool] | None) -> tuple[str, int, int]:
    """(text, matches replaced, characters they had): each valid match takes the next replacement
    in turn; a match that fails ``valid`` stays and does not take a turn (as datatrove)."""
    turn = replaced = chars = end = 0
    pieces: list[str] = []
    for match in _finder(pattern)(text):
        found = match.group(0)
        if valid is not None and not valid(found):
            continue
        pieces += [text[end:match.start()], replacements[turn]]
        end = match.end()
        turn = (turn + 1) % len(replacements)
        replaced += 1
        chars += len(found)
    if not replaced:
        return text, 0, 0
    pieces.append(text[end:])
    return "".join(pieces), replaced, chars


def apply(loaded: tuple[list[Pass], int | None], text: str) -> Applied:
    passes, max_matches = loaded
    counts = {"pii_emails": 0, "pii_ips": 0, "pii_phones": 0}
    chars = 0
    for column, pattern, replacements, valid in passes:
        text, found, found_chars = _replace(pattern, text, replacements, valid)
        counts[column] += found
        chars += found_chars
    matches = sum(counts.values())
    reject = "pii_matches" if max_matches is not None and matches > max_matches else None
    return Applied(text=text, counts=counts, chars=chars, reject=reject)


FORMATTER = Formatter(
    name="pii",
    options=PiiOptions,
    load=load,
    apply=apply,
    counts=("pii_emails", "pii_ips", "pii_phones"),
    rejects=("pii_matches",),
)
