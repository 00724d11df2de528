"""The shipped calibration (``calibration.json``): per language pair, the expected length ratio,
the document band and the per-segment spread, fitted on human translations
(``bench/fit_translate_qc.py`` writes the file and records what it was fitted on).

A pair the file lacks is derived through English when both sides are there (``fr-en`` from
``en-fr``; ``fr-de`` from ``en-fr`` and ``en-de``: the ratio of ratios, the band from the
extremes), else it gets the file's ``default``: the document band [0.3, 3.0], the pooled spread,
and the document's own ratio as the expected one.
"""

from __future__ import annotations

import hashlib
import json
from functools import lru_cache
from pathlib import Path

from fineflow.tasks.text.qc.lengths import LengthModel

PATH = Path(__file__).with_name("calibration.json")
PIVOT = "en"


@lru_cache(maxsize=1)
def data() -> dict:
    return json.loads(PATH.read_text(encoding="utf-8"))


def digest() -> str:
    """The file's content hash: a step measuring with it puts it in its version."""
    return hashlib.sha256(PATH.read_bytes()).hexdigest()[:12]


def _mode(entry: dict, key: str, mode: str) -> float | None:
    values = entry.get(key) or {}
    return values.get(mode, values.get("windows" if mode == "lines" else mode))


def _base_language(code: str) -> str:
    return code.split("-")[0].split("_")[0]


def _entry(source: str, target: str) -> tuple[dict | None, str]:
    """(the pair's entry, how it was found: measured, derived or default)."""
    pairs = data()["pairs"]
    for name in (f"{source}-{target}", f"{_base_language(source)}-{_base_language(target)}"):
        if name in pairs:
            return pairs[name], "measured"
    src, tgt = _base_language(source), _base_language(target)
    unit = {"ratio": 1.0, "length_ratio": [1.0, 1.0]}
    side = {PIVOT: unit, **{name.split("-", 1)[1]: entry for name, entry in pairs.items() if name.startswith(f"{PIVOT}-")}}
    if src in side and tgt in side and src != tgt:
        a, b = side[src], side[tgt]  # en->src and en->tgt
        return {"ratio": b["ratio"] / a["ratio"],
                "length_ratio": [b["length_ratio"][0] / a["length_ratio"][1], b["length_ratio"][1] / a["length_ratio"][0]]}, "derived"
    return None, "default"


def band(source: str, target: str) -> tuple[tuple[float, float], str]:
    """The pair's document length-ratio band and where it came from."""
    entry, found = _entry(source, target)
    bounds = (entry or data()["default"])["length_ratio"]
    return (float(bounds[0]), float(bounds[1])), found


def ratio(source: str, target: str) -> float | None:
    """The pair's expected translated / source characters (None: not calibrated)."""
    entry, _ = _entry(source, target)
    return float(entry["ratio"]) if entry else None


def length_model(source: str, target: str, mode: str) -> LengthModel:
    """The pair's per-segment length model for a segmentation mode."""
    entry, _ = _entry(source, target)
    default = data()["default"]
    variance = (entry and _mode(entry, "variance", mode)) or _mode(default, "variance", mode)
    max_z = (entry and _mode(entry, "max_z", mode)) or _mode(default, "max_z", mode)
    spread = (entry and _mode(entry, "spread", mode)) or _mode(default, "spread", mode)
    assert variance is not None and max_z is not None and spread is not None, "calibration.json: default lacks a mode"
    return LengthModel(ratio=entry["ratio"] if entry else None, variance=float(variance), spread=float(spread), max_z=float(max_z),
                       truncated_share=float(default["truncated_share"]))
