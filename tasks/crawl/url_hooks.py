"""Pre-extraction URL filter hook: blocked URLs cost no HTML parsing or extraction.

A hook is named ``"package.module:factory"`` in the crawl config with keyword options; the
factory is called once per worker process and returns ``check(url) -> reason | None``. The
filter stage (issue #3) provides the full FineWeb URL filter through the same interface; the
built-in ``domain_blocklist`` blocks registered domains and their sub-domains from a file.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable
from urllib.parse import urlsplit

from fineflow import storage

UrlCheck = Callable[[str], str | None]
_lock = threading.Lock()
_hooks: dict[str, UrlCheck] = {}


def load_hook(spec: str, options: dict) -> UrlCheck:
    from fineflow.fingerprint import canonical_json

    key = spec + canonical_json(options)
    with _lock:
        if key not in _hooks:
            module_name, _, attribute = spec.partition(":")
            if not attribute:
                raise ValueError(f"URL filter hook {spec!r} must look like 'package.module:factory'")
            factory = getattr(importlib.import_module(module_name), attribute)
            _hooks[key] = factory(**options)
        return _hooks[key]


def domain_blocklist(domains_file: str) -> UrlCheck:
    """Block URLs whose host is a listed domain or a sub-domain of one (one domain per line)."""
    blocked = set()
    for line in storage.read_bytes(domains_file).decode("utf-8").splitlines():
        line = line.strip().lower()
        if line and not line.startswith("#"):
            blocked.add(line.lstrip("."))

    def check(url: str) -> str | None:
        host = (urlsplit(url).hostname or "").lower().rstrip(".")
        labels = host.split(".")
        for i in range(len(labels) - 1):
            if ".".join(labels[i:]) in blocked:
                return "domain"
        return None

    return check
