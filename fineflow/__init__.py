"""fineflow: web crawls to pretraining corpora.

The user's layout keeps stage logic in ``tasks/`` and Prefect flows in ``flows/`` at the
repository root. ``fineflow/tasks`` and ``fineflow/flows`` are symbolic links to them, so
``fineflow.tasks`` and ``fineflow.flows`` are ordinary subpackages that every tool resolves
(IDEs, mypy, import-graph tools); built wheels hold real copies. Nothing imports the generic
top-level names ``tasks`` or ``flows``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("fineflow")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"
