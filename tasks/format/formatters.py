"""Formatters by name: the built-ins, and any module a ``formatters`` entry names (``module:``),
each defining ``FORMATTER``. This is the only place that lists the built-in formatters."""

from __future__ import annotations

from fineflow.tasks.common.plugins import ModuleRegistry
from fineflow.tasks.format.formatter import Formatter

# modules of fineflow.tasks.format, in the order FineWeb2 applies them
BUILTIN = ("ftfy_fix", "pii", "symbol_lines")


class FormatterError(ValueError):
    """A formatter that cannot be found or registered; the message says which and why."""


def _count_conflict(registered: dict[str, Formatter], formatter: Formatter, module: str) -> str | None:
    """A count column belongs to one formatter."""
    claimed = sorted({c for other in registered.values() for c in other.counts} & set(formatter.counts))
    if claimed:
        return f"formatter {formatter.name!r} ({module}): count column(s) {', '.join(claimed)} belong to another formatter"
    return None


_REGISTRY: ModuleRegistry[Formatter] = ModuleRegistry("formatter", "FORMATTER", Formatter, FormatterError, _count_conflict)
load = _REGISTRY.load  # the formatter a module defines as FORMATTER, registered under its name on first use
get = _REGISTRY.get  # the formatter called name; a module, if given, imported first
registered = _REGISTRY.registered
options_entry = _REGISTRY.options_entry  # the config entry type of a list of them
check_unique = _REGISTRY.check_unique


for _module in BUILTIN:
    load(f"fineflow.tasks.format.{_module}")
