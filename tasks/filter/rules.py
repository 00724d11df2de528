"""Filter rules by name: the built-ins, and any module a filter entry or a step's spec names
(``module:``), each defining ``RULE``. This is the only place that lists the built-in rules."""

from __future__ import annotations

from fineflow.tasks.common.plugins import ModuleRegistry
from fineflow.tasks.filter.rule import Rule

# modules of fineflow.tasks.filter, in the order the docs present them
BUILTIN = ("url_filter", "language", "gopher_repetition", "gopher_quality", "c4", "fineweb_quality", "zh_hant", "precision", "perplexity")


class RuleError(ValueError):
    """A rule that cannot be found or registered; the message says which and why."""


def _language_key_conflict(registered: dict[str, Rule], rule: Rule, module: str) -> str | None:
    """A FineWeb2 flat key must name one option of one rule."""
    claimed = sorted(key for other in registered.values() for key in other.language_keys if key in rule.language_keys)
    if claimed:
        return f"filter {rule.name!r} ({module}): language config key(s) {', '.join(claimed)} belong to another filter"
    return None


_REGISTRY: ModuleRegistry[Rule] = ModuleRegistry("filter", "RULE", Rule, RuleError, _language_key_conflict)
load = _REGISTRY.load  # the rule a module defines as RULE, registered under its name on first use
get = _REGISTRY.get  # the rule called name; a module, if given, imported first (a rule fineflow does not ship)
registered = _REGISTRY.registered
options_entry = _REGISTRY.options_entry  # the config entry type of a list of them
check_unique = _REGISTRY.check_unique


def for_spec(spec: dict) -> Rule:
    """The rule of a step's filter spec, imported in this process (a worker) if it was not yet."""
    return get(spec["name"], spec["module"])


for _module in BUILTIN:
    load(f"fineflow.tasks.filter.{_module}")
