"""Filter rules by name: the built-ins, and any module a filter entry or a step's spec names
(``module:``), each defining ``RULE``. This is the only place that lists the built-in rules."""

from __future__ import annotations

import dataclasses
import importlib
import threading

from fineflow.tasks.filter.rule import Rule

# modules of fineflow.tasks.filter, in the order the docs present them
BUILTIN = ("url_filter", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb_quality", "zh_hant", "precision")


class RuleError(ValueError):
    """A rule that cannot be found or registered; the message says which and why."""


_RULES: dict[str, Rule] = {}
_lock = threading.Lock()  # a worker's threads may register the same rule at once


def load(module: str) -> Rule:
    """The rule ``module`` defines as ``RULE``, registered under its name on first use."""
    try:
        imported = importlib.import_module(module)
    except ImportError as error:
        raise RuleError(f"module {module!r} cannot be imported: {error}") from None
    rule = getattr(imported, "RULE", None)
    if not isinstance(rule, Rule):
        raise RuleError(f"module {module!r} defines no RULE (a fineflow.tasks.filter.rule.Rule)")
    with _lock:
        known = _RULES.get(rule.name)
        if known is not None:
            if known.module != module:
                raise RuleError(f"filter {rule.name!r} is defined twice: by {known.module} and by {module}")
            return known
        # a FineWeb2 flat key must name one option of one rule
        claimed = sorted(key for other in _RULES.values() for key in other.language_keys if key in rule.language_keys)
        if claimed:
            raise RuleError(f"filter {rule.name!r} ({module}): language config key(s) {', '.join(claimed)} belong to another filter")
        _RULES[rule.name] = dataclasses.replace(rule, module=module)
        return _RULES[rule.name]


def get(name: str, module: str | None = None) -> Rule:
    """The rule called ``name``; ``module``, if given, is imported first (a rule fineflow does not ship)."""
    if module:
        rule = load(module)
        if rule.name != name:
            raise RuleError(f"module {module!r} defines filter {rule.name!r}, not {name!r}")
        return rule
    if name not in _RULES:
        known = ", ".join(sorted(_RULES))
        raise RuleError(f"unknown filter {name!r}; known: {known} (a filter of another module needs `module: package.module`)")
    return _RULES[name]


def for_spec(spec: dict) -> Rule:
    """The rule of a step's filter spec, imported in this process (a worker) if it was not yet."""
    return get(spec["name"], spec["module"])


def registered() -> dict[str, Rule]:
    return dict(_RULES)


for _module in BUILTIN:
    load(f"fineflow.tasks.filter.{_module}")
