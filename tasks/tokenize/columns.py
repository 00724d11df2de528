"""The input columns a tokenize step reads because an option names them."""

from __future__ import annotations

import pyarrow as pa


def check_columns(table: pa.Table, needed: list[tuple[str, str]]) -> None:
    """Raise ``ValueError`` in one line for the first option naming a column the input lacks
    (every document of the shard would fail: a step error, not a reject)."""
    for option in dict.fromkeys(option for _, option in needed):
        missing = [column for column, named_by in needed if named_by == option and column not in table.schema.names]
        if missing:
            raise ValueError(f"{option}: {', '.join(missing)} not in the documents (columns: {', '.join(table.schema.names)})")
