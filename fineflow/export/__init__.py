"""``fineflow export``: a run's documents as a Hugging Face dataset folder (docs/release.md).

One job per module: ``options`` (what to write), ``source`` (which committed documents),
``columns`` (FineWeb's columns and provenance), ``shards`` (sized Parquet files per config),
``card`` (README.md) and ``release`` (the folder: order of writes, re-exports).
"""

from fineflow.export.options import ExportOptions
from fineflow.export.release import Release, export_release
from fineflow.export.source import ExportError

__all__ = ["ExportError", "ExportOptions", "Release", "export_release"]
