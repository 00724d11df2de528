"""Formatters by name: the built-ins, and any module a ``formatters`` entry names (``module:``),
each defining ``FORMATTER``. This is the only place that lists the built-in formatters."""

from __future__ import annotations

import dataclasses
import importlib
import threading

from fineflow.tasks.format.formatter import Formatter

# modules of fineflow.tasks.format, in the order FineWeb2 applies them
BUILTIN = ("ftfy_fix", "pii", "symbol_lines")


class FormatterError(ValueError):
    """A formatter that cannot be found or registered; the message says which and why."""


_FORMATTERS: dict[str, Formatter] = {}
_lock = threading.Lock()  # a worker's threads may register the same formatter at once


def load(module: str) -> Formatter:
    """The formatter ``module`` defines as ``FORMATTER``, registered under its name on first use."""
    try:
        imported = importlib.import_module(module)
    except ImportError as error:
        raise FormatterError(f"module {module!r} cannot be imported: {error}") from None
    formatter = getattr(imported, "FORMATTER", None)
    if not isinstance(formatter, Formatter):
        raise FormatterError(f"module {module!r} defines no FORMATTER (a fineflow.tasks.format.formatter.Formatter)")
    with _lock:
        known = _FORMATTERS.get(formatter.name)
        if known is not None:
            if known.module != module:
                raise FormatterError(f"formatter {formatter.name!r} is defined twice: by {known.module} and by {module}")
            return known
        claimed = sorted({c for other in _FORMATTERS.values() for c in other.counts} & set(formatter.counts))
        if claimed:
            raise FormatterError(f"formatter {formatter.name!r} ({module}): count column(s) {', '.join(claimed)} belong to another formatter")
        _FORMATTERS[formatter.name] = dataclasses.replace(formatter, module=module)
        return _FORMATTERS[formatter.name]


def get(name: str, module: str | None = None) -> Formatter:
    """The formatter called ``name``; ``module``, if given, is imported first (one fineflow does not ship)."""
    if module:
        formatter = load(module)
        if formatter.name != name:
            raise FormatterError(f"module {module!r} defines formatter {formatter.name!r}, not {name!r}")
        return formatter
    if name not in _FORMATTERS:
        known = ", ".join(sorted(_FORMATTERS))
        raise FormatterError(f"unknown formatter {name!r}; known: {known} (a formatter of another module needs `module: package.module`)")
    return _FORMATTERS[name]


def registered() -> dict[str, Formatter]:
    return dict(_FORMATTERS)


for _module in BUILTIN:
    load(f"fineflow.tasks.format.{_module}")
