"""fineflow: web crawls to pretraining corpora.

The user's layout keeps stage logic in ``tasks/`` and Prefect flows in ``flows/`` at the
repository root. Built wheels place them inside this package; in a source checkout (editable
install) the repository root is added to this package's search path so that
``fineflow.tasks`` and ``fineflow.flows`` resolve to the same folders. Nothing imports the
generic top-level names ``tasks`` or ``flows``.
"""

from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

try:
    __version__ = version("fineflow")
except PackageNotFoundError:  # running from a source tree without install
    __version__ = "0.0.0+unknown"

_source_root = Path(__file__).resolve().parent.parent
if not (Path(__file__).parent / "tasks").is_dir() and (_source_root / "tasks" / "__init__.py").is_file():
    __path__.append(str(_source_root))  # type: ignore[name-defined]  # noqa: F821
