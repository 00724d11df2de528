"""Make trafilatura cheaper to run without changing a single character of its output.

A profile of trafilatura 2.3 on web pages (FineWeb's settings) puts about 40 % of its time in
evaluating its pruning XPath expressions: in libxml2's slow path for ``self::`` tests and in
lxml's Python-level glue. Four changes cut that; each leaves every expression's result unchanged:

1. ``smart_strings=False``: an attribute handed to ``re:test`` is then a plain ``str``. A "smart"
   string also carries its parent element, so lxml built an element proxy for every attribute
   tested. ``re:test`` reads only the string, so the result is the same.
2. ``re:test(@a, 'p')`` becomes ``((@a) and re:test(@a, 'p'))`` wherever ``p`` cannot match the
   empty string: a missing attribute reads as ``""``, on which such a pattern is false anyway,
   and XPath's ``and`` skips the Python call. Most elements have no ``id`` or ``style``.
3. ``.//*[self::div or self::p][P]`` becomes ``(.//div|.//p)[P]`` wherever no predicate can be
   positional: the same elements in the same (document) order, found by libxml2's fast
   descendant-by-name walks instead of testing each element against each name (3× faster).
4. Element classes of trafilatura's HTML parsers come from lxml's C-level lookups, with the same
   classes ``lxml.html`` picks in Python (``form`` → ``FormElement`` …, else ``HtmlElement``).

tests/test_trafilatura_tuning.py compares each rule and each extracted text, tuned and stock,
on the sample's pages; bench/trafilatura_tuning.py measures the gain (docs/benchmarks.md). Run
it only inside the extraction subprocess: it changes trafilatura's state for the whole process.
"""

from __future__ import annotations

import re
import sys

# re:test(ATTRS, 'PATTERN'[, 'FLAGS']) whose first argument is attributes only (@id, @id|@class)
_RE_TEST = re.compile(r"re:test\((@[\w-]+(?:\|@[\w-]+)*),\s*'([^']*)'(?:,\s*'([^']*)')?\)")

# .//*[self::a or self::b …]: any descendant element named a or b …
_TAG_TEST = re.compile(r"\.//\*\[\s*(self::[\w-]+(?:\s+or\s+self::[\w-]+)*)\s*\]")
_LITERAL = re.compile(r"'[^']*'|\"[^\"]*\"")
# anything that could make a predicate a number, i.e. a position test
_NUMERIC = re.compile(r"^\s*[\d.]+\s*$|position\(|last\(|count\(|sum\(|number\(|floor\(|ceiling\(|round\(|string-length\(|\sdiv\s|\smod\s|[*+]|\s-\s")

_tuned = False


def guard_regex_tests(path: str) -> str:
    """The XPath ``path`` with each ``re:test`` on attributes skipped when they are absent."""

    def guard(match: re.Match) -> str:
        attributes, pattern, flags = match.group(1), match.group(2), match.group(3) or ""
        if re.compile(pattern, re.IGNORECASE if "i" in flags else 0).search("") is not None:
            return match.group(0)  # it matches a missing attribute: the call must stay
        return f"(({attributes}) and {match.group(0)})"

    return _RE_TEST.sub(guard, path)


def _predicates_after(path: str, start: int) -> int | None:
    """End of the run of ``[...]`` predicates at ``start``, if they end the step and none is
    positional; None otherwise."""
    position = start
    while True:
        while position < len(path) and path[position].isspace():
            position += 1
        if position == len(path) or path[position] in ")|":
            return position
        if path[position] != "[":
            return None  # a further step or an operator: left alone
        depth, end = 0, position
        while end < len(path):
            if path[end] in "'\"":
                end = path.index(path[end], end + 1)
            elif path[end] == "[":
                depth += 1
            elif path[end] == "]":
                depth -= 1
                if depth == 0:
                    break
            end += 1
        else:
            return None
        if _NUMERIC.search(_LITERAL.sub("''", path[position + 1 : end])):
            return None
        position = end + 1


def walk_tags_by_name(path: str) -> str:
    """The XPath ``path`` with ``.//*[self::a or self::b][P]`` as ``(.//a|.//b)[P]`` where exact."""
    pieces, done = [], 0
    for match in _TAG_TEST.finditer(path):
        if _predicates_after(path, match.end()) is None:
            continue
        names = re.findall(r"self::([\w-]+)", match.group(1))
        pieces += [path[done : match.start()], "(" + "|".join(f".//{name}" for name in names) + ")"]
        done = match.end()
    return "".join(pieces) + path[done:]


def tuned_xpath(path: str) -> str:
    """``path`` with both rewrites: selects the same elements, in the same order."""
    return walk_tags_by_name(guard_regex_tests(path))


def rule_lists() -> dict:  # name -> list of lxml XPath
    """trafilatura's XPath rule lists, by name (the lists themselves: other modules hold them too)."""
    from lxml.etree import XPath
    from trafilatura import xpaths

    return {
        name: value
        for name, value in vars(xpaths).items()
        if isinstance(value, list) and value and all(isinstance(rule, XPath) for rule in value)
    }


def tuned_rules(rules: list) -> list:
    """Compiled tuned equivalents of the XPath ``rules``."""
    from lxml.etree import XPath
    from trafilatura.xpaths import REGEXP_NS

    return [XPath(tuned_xpath(rule.path), namespaces={"re": REGEXP_NS}, smart_strings=False) for rule in rules]


def _retune_xpaths() -> None:
    for rules in rule_lists().values():
        rules[:] = tuned_rules(rules)  # in place: the modules that imported a list hold the same object


def c_level_class_lookup():  # noqa: ANN201 (an lxml ElementNamespaceClassLookup)
    """lxml.html's element classes (by tag, else HtmlElement), looked up in C, not in Python."""
    from lxml import etree, html

    classes = etree.ElementDefaultClassLookup(
        element=html.HtmlElement, comment=html.HtmlComment, pi=html.HtmlProcessingInstruction, entity=html.HtmlEntity
    )
    lookup = etree.ElementNamespaceClassLookup(classes)
    by_tag = lookup.get_namespace(None)  # HTML elements have no namespace
    for tag, element_class in html.HtmlElementClassLookup._default_element_classes.items():
        by_tag[tag] = element_class
    return lookup


def tune_trafilatura() -> None:
    """Apply the changes above once per process; on any surprise, leave trafilatura stock."""
    global _tuned
    if _tuned:
        return
    _tuned = True
    try:
        from lxml import html
        from trafilatura import utils

        lookup = c_level_class_lookup()
        _retune_xpaths()
        # trafilatura's own parser, and lxml.html's default one (readability and baseline parse with it)
        for parser in (utils.HTML_PARSER, html.html_parser):
            parser.set_element_class_lookup(lookup)
    except Exception as exc:  # a trafilatura or lxml release that moved things: stock is still correct
        print(f"fineflow: trafilatura left untuned ({type(exc).__name__}: {exc})", file=sys.stderr)
