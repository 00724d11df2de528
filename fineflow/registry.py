"""The stage registry: every stage kind fineflow knows, found the same way everywhere.

A kind is one package ``tasks/<kind>/`` whose ``kind.py`` defines ``KIND = StageKind(...)``:
its config model, its planner, which of its steps is its document output, and what it adds to
the summary, the Prefect artifacts and the HTML report. Kinds come from the ``fineflow.stages``
entry-point group (the built-ins are declared in ``pyproject.toml``; an installed package adds
its own) and from a pipeline file's ``plugins:`` modules, each defining ``KIND``. The CLI, the
flows, the deployments and the Dask workers (``flows/cluster.py`` hands the plugins to them)
all ask this module; nothing else lists stages.

Functions are named as ``"package.module:function"`` strings and imported when first used, so
reading the registry (to validate a config) does not import extraction or ML libraries.
"""

from __future__ import annotations

import importlib
import sys
import traceback
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

from fineflow.stage_config import StageConfig
from fineflow.steps import PlanContext, StageInputs, StepPlan, resolve_function

ENTRY_POINT_GROUP = "fineflow.stages"


class RegistryError(ValueError):
    """A stage kind that cannot be found or registered; the message says which and why."""


@dataclass(frozen=True)
class Table:
    """A table a stage publishes as a Prefect artifact (key: ``<stage name>-<key>``)."""

    key: str
    rows: list[dict[str, Any]]
    description: str


@dataclass(frozen=True)
class StageKind:
    kind: str
    config: type[StageConfig]
    # "module:function(config, ctx: fineflow.steps.PlanContext) -> [StepPlan]"
    planner: str
    document_step: str  # the step whose data/ is the stage's output (and rejects/ its rejects)
    reads_documents: bool = True  # False for a source stage (crawl reads raw files, not documents)
    description: str = ""
    # "module:function(config) -> [warning]": cheap checks before any work; raises for a run that cannot start
    preflight: str | None = None
    # "module:function({step name: step totals}) -> {field: value}": the stage's own summary fields
    summary: str | None = None
    # "module:function(stage summary) -> [Table]": its Prefect table artifacts
    tables: str | None = None
    # "module:function(stage summary) -> [(chart id, plotly figure)]": its charts in the HTML report
    figures: str | None = None
    # "module:function(stage summary) -> [str]": caveats on its results (a classifier judged on a few documents, a
    # threshold that fell back), shown at the top of the HTML report and by the CLI; unlike warnings, never errors
    cautions: str | None = None
    # "module:function(config) -> [url]": raw input files whose content hash its planner reads (on an
    # existing cluster the workers hash them first: flows/input_identity.py)
    content_inputs: str | None = None
    # "module:function(config, [StepPlan]) -> [row]": what a run would do, for the dry run (e.g. translate's hours)
    estimate: str | None = None
    # "module:function(config) -> [(column, option)]": the input columns it reads and the option naming each,
    # checked against its inputs' committed schemas before its shards run (fineflow.input_schemas)
    columns: str | None = None
    # False for a kind whose document step writes no rejects/ (then `NAME.rejects` is refused)
    writes_rejects: bool = True
    # discriminator tags inside the config (e.g. filter rule names), left out of error locations
    error_tags: tuple[str, ...] = ()
    # Column names (fnmatch patterns, e.g. "n_tokens_*") its document output derives from `text`: a
    # measurement of the text as it was, stale once a later stage rewrites the text (see rewrites_text)
    text_columns: tuple[str, ...] = ()
    # Whether its steps rewrite `text`: True, or "module:function(config) -> bool" where only some
    # configurations do (a mode). Its steps then read their inputs without any column that a known
    # kind lists in text_columns (fineflow.documents.read_input), so nothing stale survives the rewrite.
    rewrites_text: bool | str = False
    module: str = field(default="", compare=False)  # where KIND was found (set on registration)

    def plan(self, config: StageConfig, root: str, name: str, inputs: StageInputs | None) -> list[StepPlan]:
        """The stage's step plans: its planner given where it writes, its name and what it reads."""
        if self.reads_documents and inputs is None:
            raise RegistryError(f"stage {name}: a {self.kind} stage reads documents, but it was given no input")
        stale = stale_text_columns() if self.rewrites(config) else ()
        context = PlanContext(root=root, name=name, kind=self.kind, inputs=inputs, stale_columns=stale)
        return self.resolve("planner")(config, context)

    def rewrites(self, config: StageConfig) -> bool:
        """Whether this configuration of the kind rewrites ``text`` (``rewrites_text``)."""
        if isinstance(self.rewrites_text, str):
            return bool(self.resolve("rewrites_text")(config))
        return bool(self.rewrites_text)

    def call(self, hook: str, *args: Any) -> Any:
        return self.resolve(hook)(*args) if getattr(self, hook) else None

    def resolve(self, hook: str) -> Any:
        """The function a hook names; one that does not resolve is a ``RegistryError`` naming it."""
        spec = getattr(self, hook)
        try:
            return resolve_function(spec)
        except Exception as error:  # noqa: BLE001 (a broken plug-in: one line, not a traceback)
            raise RegistryError(f"stage kind {self.kind!r} ({self.module}): its {hook} {spec!r} {_failure(error)}") from None

    def check_hooks(self, only_module: str | None = None) -> None:
        """Resolve every hook (those in ``only_module`` alone, if given: a built-in's other modules
        are imported when used, not to validate a config)."""
        for hook in (*HOOKS, "rewrites_text"):
            spec = getattr(self, hook)
            if isinstance(spec, str) and spec and (only_module is None or spec.partition(":")[0] == only_module):
                self.resolve(hook)


HOOKS = ("planner", "preflight", "summary", "tables", "figures", "cautions", "content_inputs", "estimate", "columns")


def _failure(error: BaseException) -> str:
    """Why an import or a lookup failed, in one line: file:line for a syntax error, else the
    exception and the deepest line of the failing module's own code."""
    if isinstance(error, SyntaxError):
        return f"has a syntax error at {error.filename}:{error.lineno}: {error.msg}"
    if isinstance(error, AttributeError):
        return f"does not resolve: {error}"
    if isinstance(error, ImportError):
        return f"cannot be imported: {error}"
    frames = [frame for frame in traceback.extract_tb(error.__traceback__) if "importlib" not in frame.filename]
    where = f" at {frames[-1].filename}:{frames[-1].lineno}" if frames else ""
    message = str(error).strip().splitlines()
    return f"raised {type(error).__name__}{where}" + (f": {message[0]}" if message else "")


_KINDS: dict[str, StageKind] = {}
_PLUGINS: dict[str, str] = {}  # plugin module -> the folder it was imported from ("" for sys.path)
_entry_points_loaded = False


def _register(found: Any, origin: str) -> StageKind:
    if not isinstance(found, StageKind):
        raise RegistryError(f"{origin}: KIND must be a fineflow.registry.StageKind, not {type(found).__name__}")
    known = _KINDS.get(found.kind)
    if known is not None and known.module != origin:
        raise RegistryError(f"stage kind {found.kind!r} is defined twice: by {known.module} and by {origin}")
    stage = StageKind(**{**found.__dict__, "module": origin})
    _KINDS[found.kind] = stage
    return stage


def _load_entry_points() -> None:
    global _entry_points_loaded
    if _entry_points_loaded:
        return
    for point in entry_points(group=ENTRY_POINT_GROUP):
        try:
            found = point.load()
        except Exception as error:  # noqa: BLE001 (name the broken plug-in instead of a traceback)
            raise RegistryError(f"stage kind {point.name!r}: entry point {point.value} {_failure(error)}") from None
        module = point.value.split(":")[0]
        _register(found, module).check_hooks(only_module=module)
    _entry_points_loaded = True  # (after them all: a broken one is reported again, not skipped)


def load_plugins(modules: list[str], folder: str | None = None) -> list[StageKind]:
    """Import a pipeline's ``plugins:`` modules (``folder``, the pipeline file's, first on the
    path) and register the ``KIND`` each defines."""
    _load_entry_points()
    if folder and folder not in sys.path:
        sys.path.insert(0, folder)
    added = []
    for name in modules:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as error:
            where = f" (looked in {folder} and the Python path)" if folder else ""
            raise RegistryError(f"plugins: module {name!r} cannot be imported{where}: {error}") from None
        except Exception as error:  # noqa: BLE001 (any error at import: one line naming the module)
            raise RegistryError(f"plugins: module {name!r} {_failure(error)}") from None
        if not hasattr(module, "KIND"):
            raise RegistryError(f"plugins: module {name!r} defines no KIND (a fineflow.registry.StageKind)")
        stage = _register(module.KIND, name)
        try:
            stage.check_hooks()  # a plug-in's own functions, resolved now rather than mid-run
        except RegistryError as error:
            _KINDS.pop(stage.kind, None)
            raise RegistryError(f"plugins: module {name!r}: {error}") from None
        added.append(stage)
        _PLUGINS[name] = folder or ""
    return added


def plugins() -> dict[str, str]:
    """The plug-in modules loaded in this process and their folders (for the Dask workers)."""
    return dict(_PLUGINS)


def kinds() -> dict[str, StageKind]:
    _load_entry_points()
    return dict(_KINDS)


def get(kind: str) -> StageKind:
    known = kinds()
    if kind not in known:
        raise RegistryError(
            f"unknown stage kind {kind!r}; known: {', '.join(sorted(known))} (a plug-in stage needs `plugins: [module]` "
            "in the pipeline file, or its package installed)"
        )
    return known[kind]


def of(config: StageConfig) -> StageKind:
    return get(config.stage)


def validate_stage(data: dict[str, Any]) -> StageConfig:
    """A stage config from its JSON form (``{"stage": kind, ...}``), by its kind's model."""
    return get(data["stage"]).config.model_validate(data)


def stale_text_columns() -> tuple[str, ...]:
    """The column patterns every known kind declares as derived from ``text`` (``text_columns``),
    sorted: what a stage that rewrites the text drops from its inputs."""
    return tuple(sorted({pattern for stage in kinds().values() for pattern in stage.text_columns}))


def error_tags() -> set[str]:
    known = kinds()
    return set(known) | {tag for stage in known.values() for tag in stage.error_tags}
