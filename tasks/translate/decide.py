"""translate's ``decide`` step (map, the document step): the quality checks' thresholds.

A translation failing a check goes to rejects as ``translate:<check>`` (the first failing one in
``qc.CHECKS`` order); pass and failure counts per target language and check feed the report.
A document the translate step could not translate (``translate_failure``) is rejected for that,
``translate:undecodable``, ``translate:refused``, ``translate:unreadable`` or ``translate:truncated``
(a segment still cut at its token budget after a retry with twice the room), with its
``translate_failure_detail`` in ``drop_detail`` (how many segments failed, the first one's
specifics); it is not counted in the checks' pass rates.
"""

from __future__ import annotations

from collections import defaultdict

import pyarrow as pa

from fineflow.documents import commit_shard, read_input, rejects_schema, set_columns
from fineflow.tasks.text import qc
from fineflow.tasks.text.qc import calibration
from fineflow.tasks.translate.translation import FAILURE_COLUMNS

STEP_VERSION = f"3+{calibration.digest()}"  # the shipped bands decide too
LIBRARIES = ("pyarrow",)


def decide_shard(shard: dict, params: dict, output_url: str, rejects_url: str) -> dict:
    table = read_input(shard)
    settings = params["qc"]
    reasons = []
    details: list[str | None] = []
    failed: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
    documents: dict[str, int] = defaultdict(int)
    passed: dict[str, int] = defaultdict(int)
    for row in table.select([c for c in table.column_names if c != "text"]).to_pylist():
        target = row["language"]
        if row.get("translate_failure"):
            reasons.append(f"translate:{row['translate_failure']}")
            details.append(row.get("translate_failure_detail"))
            continue
        measures = {name.removeprefix("translate_"): value for name, value in row.items()}
        measures["language_score"] = row["language_score"]
        # Every check is counted (pass rates per check), the first failure is the reason.
        found = [check for check in qc.CHECKS if qc.fails(check, measures, settings, row["source_language"], target)]
        for check in found:
            failed[target][check] += 1
        documents[target] += 1
        passed[target] += not found
        reasons.append(f"translate:{found[0]}" if found else None)
        details.append(None)
    table = table.drop_columns([c for c in FAILURE_COLUMNS if c in table.column_names])
    keep = pa.array([r is None for r in reasons], pa.bool_())
    kept = table.filter(keep)
    rejected = [i for i, r in enumerate(reasons) if r is not None]
    rejects = set_columns(table.take(pa.array(rejected, pa.int64())),
                          {"drop_reason": pa.array([reasons[i] for i in rejected], pa.string()),
                           "drop_detail": pa.array([details[i] for i in rejected], pa.string())})
    rejects = rejects.cast(rejects_schema(kept.schema, detail=True))
    drop_reasons: dict[str, int] = defaultdict(int)
    for i in rejected:
        drop_reasons[reasons[i]] += 1
    return commit_shard(shard["shard"], output_url, kept, rejects_url, rejects, docs_in=table.num_rows,
                        translated={t: n for t, n in documents.items()},
                        passed=dict(passed),
                        failed_checks={t: dict(v) for t, v in failed.items()}, drop_reasons=dict(drop_reasons))
