"""``fineflow export``: a run's documents as a Hugging Face dataset folder (docs/release.md).

One job per module: ``options`` (what to write; the pipeline config imports it, so this package
imports nothing eagerly), ``source`` (which committed documents), ``columns`` (FineWeb's columns
and provenance), ``shards`` (sized Parquet files per config), ``card`` (README.md) and
``release`` (the folder: order of writes, re-exports).
"""
