"""The layers stay apart: stage code (``tasks/``) knows nothing of orchestration or of other
stages, and the core (storage, manifests, fingerprints, steps, documents) nothing of flows."""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
TASKS = REPO / "tasks"
ORCHESTRATION = {"prefect", "prefect_dask", "prefect_aws", "dask", "distributed"}
CORE = ("storage", "manifest", "fingerprint", "steps", "documents")


def _imports(path: Path, package: str | None = None) -> list[str]:
    """Every module a file imports, absolute (``from . import x`` resolved against its package)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = package or ".".join(("fineflow",) + path.relative_to(REPO).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            found.append(module)
            found += [f"{module}.{alias.name}" for alias in node.names]  # `from pkg import sub`
    return found


def _stage_packages() -> set[str]:
    """Packages under tasks/ with a planner are stages; the others (text, ...) are shared code."""
    return {p.parent.name for p in TASKS.glob("*/plan.py")}


def test_stage_code_imports_neither_orchestration_nor_other_stages():
    stages = _stage_packages()
    assert len(stages) >= 3
    problems = []
    for path in sorted(TASKS.rglob("*.py")):
        own = path.relative_to(TASKS).parts[0] if len(path.relative_to(TASKS).parts) > 1 else None
        for module in _imports(path):
            root = module.split(".")[0]
            if root in ORCHESTRATION or module.startswith(("fineflow.flows", "flows")):
                problems.append(f"{path.relative_to(REPO)} imports {module} (orchestration)")
            parts = module.split(".")
            if parts[:2] == ["fineflow", "tasks"] and len(parts) > 2 and parts[2] in stages and parts[2] != own:
                problems.append(f"{path.relative_to(REPO)} imports {module} (another stage's package)")
    assert not problems, "\n".join(problems)


def test_the_core_does_not_import_flows_or_orchestration():
    problems = []
    for name in CORE:
        path = REPO / "fineflow" / f"{name}.py"
        for module in _imports(path):
            if module.split(".")[0] in ORCHESTRATION or module.startswith(("fineflow.flows", "flows")):
                problems.append(f"{path.relative_to(REPO)} imports {module}")
    assert not problems, "\n".join(problems)


def test_the_checker_sees_a_violation(tmp_path):
    """The parser behind the tests above finds imports in every form they take."""
    path = tmp_path / "probe.py"
    path.write_text("import dask\nfrom prefect import flow\nfrom fineflow.tasks.filter import decide\nfrom . import stage\n")
    found = _imports(path, "fineflow.tasks.crawl")
    assert {"dask", "prefect", "fineflow.tasks.filter.decide", "fineflow.tasks.crawl.stage"} <= set(found)
