"""Cells: the partition of documents by key columns (e.g. language x quality level), named the
same way by the rebalance stage's mix and the tokenize stage's token files."""

from __future__ import annotations

import hashlib
import re

ALL = "all"  # the one cell when nothing partitions the files
NULL = "none"  # a null value's name
_UNSAFE = re.compile(r"[^A-Za-z0-9_.]+")


def _part(value: object) -> str:
    text = NULL if value is None else str(value)
    safe = _UNSAFE.sub("_", text)[:40]
    # A changed or cut value gets a short hash of the original, so two values never share a cell.
    return safe if safe == text else f"{safe}~{hashlib.sha256(text.encode()).hexdigest()[:6]}"


def cell_name(columns: list[str], values: tuple) -> str:
    """``language=ar.quality_level=3``-like, safe in file names and Megatron's data-args lines."""
    if not columns:
        return ALL
    return ".".join(f"{column}={_part(value)}" for column, value in zip(columns, values))
