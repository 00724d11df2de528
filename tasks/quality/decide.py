"""quality's ``decide`` step (map, the document step): scores, buckets and keep rules.

Reads an input shard, its scores shard (row-aligned) and the calibration grids; adds every
``quality_*`` column, and with the ensemble ``quality_bucket`` (0-19, the maximum of the
scorers' buckets) and ``quality_level`` (0-4); keeps a document when every keep rule passes.
Rejects carry ``drop_reason`` ``quality:<scorer>`` (or ``quality:level``) and every score, so
a new threshold re-runs only this step. A text that is not valid UTF-8 is rejected as
``quality:undecodable`` (where it breaks in ``drop_detail``; it has no scores), and the shard goes on.
"""

from __future__ import annotations

import math
import time
from collections import Counter, defaultdict

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from fineflow.documents import DETAIL_FIELD, commit_shard, read_input, read_table, set_columns, undecodable_rows
from fineflow.tasks.quality import buckets
from fineflow.tasks.quality.calibrate import ALL
from fineflow.tasks.quality.score import int_column, score_column

STEP_VERSION = "2"
LIBRARIES = ("numpy", "pyarrow")


class MisalignedScores(RuntimeError):
    pass


class Grids:
    """Quantile grids by (scorer, language, unit); a language without its own uses ``*``."""

    def __init__(self, table: pa.Table) -> None:
        self._grids = {(r["scorer"], r["language"], r["unit"]): r["quantiles"] for r in table.to_pylist()}

    def get(self, scorer: str, language: str, unit: str) -> list[float]:
        return self._grids.get((scorer, language, unit)) or self._grids[(scorer, ALL, unit)]


def _per_language(languages: list[str], compute) -> np.ndarray:  # noqa: ANN001
    """``compute(language, indices)`` over the rows of each language (one threshold lookup each)."""
    out = np.zeros(len(languages))
    by_language: dict[str, list[int]] = defaultdict(list)
    for index, language in enumerate(languages):
        by_language[language].append(index)
    for language, indices in by_language.items():
        out[indices] = compute(language, np.array(indices))
    return out


def decide_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    started = time.perf_counter()
    docs, undecodable = undecodable_rows(read_input(shard))
    scores = read_table([shard["scores"]])
    if docs.num_rows != scores.num_rows or docs["id"].to_pylist() != scores["id"].to_pylist():
        raise MisalignedScores(f"shard {shard['shard']}: scores do not match the documents of {shard['input']}")
    grids = Grids(read_table([params["grids"]]))
    per_language = params["per_language"]
    languages = [(code or "und") if per_language else ALL for code in scores["language"].to_pylist()]
    names = sorted(params["scorers"])
    values = {name: scores[score_column(name)].to_numpy(zero_copy_only=False).astype(np.float64) for name in names}
    unscored = np.zeros(docs.num_rows, dtype=bool)  # null scores: an undecodable text has none
    for name in names:
        unscored |= np.isnan(values[name])

    added: dict[str, pa.Array] = {}
    for name in names:
        added[score_column(name)] = scores[score_column(name)]
        if int_column(name) in scores.column_names:
            added[int_column(name)] = scores[int_column(name)]
    level = None
    if params["ensemble"]:
        per_scorer = []
        for name in names:
            per_scorer.append(_per_language(languages, lambda lang, rows, name=name: buckets.buckets(
                values[name][rows], buckets.bucket_thresholds(grids.get(name, lang, params["weight"])))))
            added[f"quality_{name}_bucket"] = pa.array(per_scorer[-1].astype(np.int8), pa.int8(), mask=unscored)
        ensemble = np.max(np.vstack(per_scorer), axis=0).astype(np.int8) if docs.num_rows else np.zeros(0, np.int8)
        level = buckets.levels(ensemble)
        added["quality_bucket"] = pa.array(ensemble, pa.int8(), mask=unscored)
        added["quality_level"] = pa.array(level, pa.int8(), mask=unscored)

    reasons: list[str | None] = [None] * docs.num_rows
    details: list[str | None] = [None] * docs.num_rows
    for index, detail in undecodable.items():
        reasons[index], details[index] = "quality:undecodable", detail
    cut_lines: dict[str, dict[str, dict[str, int]]] = {}  # scorer -> rule -> score it cuts at -> documents judged
    for rule in params["keep"]:
        if rule["min_level"] is not None:
            passed, reason = level >= rule["min_level"], "quality:level"
        else:
            name = rule["scorer"]
            reason = f"quality:{name}"
            if rule["min"] is not None:
                passed = values[name] >= rule["min"]
                limit = np.full(docs.num_rows, float(rule["min"]))
                what = f"min {rule['min']:g}"
            elif rule["min_int"] is not None:
                passed = scores[int_column(name)].to_numpy(zero_copy_only=False) >= rule["min_int"]
                limit = np.full(docs.num_rows, rule["min_int"] - 0.5)  # int_score rounds: >= n from n - 0.5
                what = f"min_int {rule['min_int']}"
            else:
                limit = _per_language(languages, lambda lang, rows, name=name, rule=rule: buckets.top_share_threshold(
                    grids.get(name, lang, rule["unit"]), rule["top_share"]))
                passed = values[name] >= limit
                what = f"top_share {rule['top_share']:g} of {rule['unit']}"
            lines = Counter(f"{value:.9g}" for value, skip in zip(limit.tolist(), unscored.tolist())
                            if not skip and math.isfinite(value))
            cut_lines.setdefault(name, {})[what] = dict(sorted(lines.items()))
        for index in np.flatnonzero(~np.asarray(passed, dtype=bool)):
            if reasons[index] is None:
                reasons[index] = reason

    keep = pa.array([r is None for r in reasons], pa.bool_())
    kept = set_columns(docs, added).filter(keep)
    dropped = pc.invert(keep)
    rejects = set_columns(docs.filter(dropped), {
        "drop_reason": pa.array([r for r in reasons if r is not None], pa.string()),
        DETAIL_FIELD.name: pa.array([d for r, d in zip(reasons, details) if r is not None], DETAIL_FIELD.type),
        **{name: column.filter(dropped) for name, column in added.items()},
    })
    by_reason = Counter(r for r in reasons if r)
    by_language: dict[str, Counter[str]] = defaultdict(Counter)
    for code, reason in zip(scores["language"].to_pylist(), reasons):
        if reason:
            by_language[code or "und"][reason] += 1
    extra = {}
    if level is not None:
        extra["kept_by_level"] = dict(sorted(Counter(str(int(v)) for v, r in zip(level, reasons) if r is None).items()))
        extra["docs_by_level"] = dict(sorted(Counter(str(int(v)) for v, u in zip(level, unscored) if not u).items()))
    return commit_shard(
        shard["shard"], output_url, kept, rejects_url, rejects,
        drop_reasons=dict(sorted(by_reason.items())),
        drops_by_language={lang: dict(sorted(c.items())) for lang, c in sorted(by_language.items())},
        cut_lines=cut_lines, **extra, seconds=round(time.perf_counter() - started, 3),
    )
