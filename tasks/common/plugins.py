"""A registry of plug-in parts by name (filter rules, formatters): the built-ins and any module a
config entry names (``module:``), each module defining one object under a fixed attribute.

Registered on first use, under a lock (a worker's threads may load the same module at once); a
name defined by two modules, or a claim on something another part owns (``conflict``), is an
error naming both.
"""

from __future__ import annotations

import dataclasses
import importlib
import threading
from collections.abc import Callable
from typing import Annotated, Any, Generic, TypeVar, Union

from pydantic import BaseModel, PlainValidator, SerializeAsAny

T = TypeVar("T")


class ModuleRegistry(Generic[T]):
    def __init__(self, noun: str, attribute: str, kind: type, error: type[ValueError],
                 conflict: Callable[[dict[str, T], T, str], str | None] | None = None) -> None:
        self.noun = noun  # "filter", "formatter": how messages name a part
        self.attribute = attribute  # what a module defines: "RULE", "FORMATTER"
        self.kind = kind
        self.error = error
        self.conflict = conflict  # (registered, new part, its module) -> why it cannot join, or None
        self.parts: dict[str, T] = {}
        self.lock = threading.Lock()

    def load(self, module: str) -> T:
        """The part ``module`` defines, registered under its name on first use."""
        try:
            imported = importlib.import_module(module)
        except ImportError as error:
            raise self.error(f"module {module!r} cannot be imported: {error}") from None
        part = getattr(imported, self.attribute, None)
        if not isinstance(part, self.kind):
            raise self.error(f"module {module!r} defines no {self.attribute} (a {self.kind.__module__}.{self.kind.__qualname__})")
        with self.lock:
            known = self.parts.get(part.name)
            if known is not None:
                if known.module != module:
                    raise self.error(f"{self.noun} {part.name!r} is defined twice: by {known.module} and by {module}")
                return known
            problem = self.conflict(self.parts, part, module) if self.conflict else None
            if problem:
                raise self.error(problem)
            self.parts[part.name] = dataclasses.replace(part, module=module)
            return self.parts[part.name]

    def get(self, name: str, module: str | None = None) -> T:
        """The part called ``name``; ``module``, if given, is imported first (one fineflow does not ship)."""
        if module:
            part = self.load(module)
            if part.name != name:
                raise self.error(f"module {module!r} defines {self.noun} {part.name!r}, not {name!r}")
            return part
        if name not in self.parts:
            known = ", ".join(sorted(self.parts))
            raise self.error(f"unknown {self.noun} {name!r}; known: {known} (a {self.noun} of another module needs `module: package.module`)")
        return self.parts[name]

    def registered(self) -> dict[str, T]:
        return dict(self.parts)

    def check_unique(self, entries: list) -> list:
        """A config's list of entries, each part at most once (a validator's body)."""
        names = [entry.name for entry in entries]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"{self.noun}(s) listed twice: {', '.join(repeated)}")
        return entries

    def options_entry(self, base: type[BaseModel], shorthand: bool = False) -> Any:
        """The config entry type of a list of parts: validated by the named part's options model (looked up
        at validation time, so parts registered later are accepted), ``shorthand``: a bare name is the
        part with its defaults. SerializeAsAny: a dump (what flows and run records receive) keeps every
        option of the part's model; the JSON schema (the Prefect UI's form) offers the built-ins' options."""

        def validate(value: Any) -> BaseModel:
            if isinstance(value, base):
                return value
            if shorthand and isinstance(value, str):
                value = {"name": value}
            if not isinstance(value, dict) or not isinstance(value.get("name"), str):
                raise ValueError(f"a {self.noun} is a {'name or a ' if shorthand else ''}mapping with a `name`")
            try:
                part = self.get(value["name"], value.get("module"))
            except self.error as error:
                raise ValueError(str(error)) from None
            return part.options.model_validate(value)

        builtin = tuple(part.options for part in self.parts.values())
        return Annotated[SerializeAsAny[base], PlainValidator(validate, json_schema_input_type=Union[builtin])]  # noqa: UP007
