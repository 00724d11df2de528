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
    """Packages under tasks/ that register a kind are stages; the others (text, ...) are shared code."""
    return {p.parent.name for p in TASKS.glob("*/kind.py")}


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


def _strings(path: Path) -> list[tuple[int, str]]:
    """String constants of a file other than docstrings: what code branches on or builds."""
    tree = ast.parse(path.read_text(), filename=str(path))
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)
    }
    return [
        (node.lineno, node.value) for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_only_a_stage_package_names_its_kind():
    """The registry derives everything; no other code lists, names or imports a stage kind."""
    import re

    kinds = sorted(_stage_packages())
    word = re.compile(r"(?<![\w/-])(" + "|".join(kinds) + r")(?![\w-])")  # not in an API path
    problems = []
    files = [p for p in (REPO / "fineflow").glob("*.py")] + list((REPO / "flows").rglob("*.py"))
    files += list((REPO / "deployments").rglob("*.py")) + [p for p in TASKS.rglob("*.py") if p.relative_to(TASKS).parts[0] not in kinds]
    for path in sorted(files):
        for module in _imports(path):
            parts = module.split(".")
            if parts[:2] == ["fineflow", "tasks"] and len(parts) > 2 and parts[2] in kinds:
                problems.append(f"{path.relative_to(REPO)} imports {module}")
        for line, value in _strings(path):
            if word.search(value):
                problems.append(f"{path.relative_to(REPO)}:{line} names a stage kind: {value[:80]!r}")
    assert not problems, "\n".join(problems)


def test_every_internal_import_resolves_statically():
    """mypy (a static tool: no import hooks, no path tricks) finds every ``fineflow.*`` module
    that the code imports, through the package's links to tasks/ and flows/."""
    import re
    import subprocess
    import sys

    targets = ["fineflow", "tests"]  # tests import fineflow.tasks.*, fineflow.flows.* and deployments throughout
    done = subprocess.run(
        [sys.executable, "-m", "mypy", "--follow-imports=silent", "--no-error-summary", "--cache-dir", str(REPO / ".mypy_cache"), *targets],
        cwd=REPO, capture_output=True, text=True, timeout=600,
    )
    # type errors are not this test's business; an internal module mypy cannot find is
    unresolved = [line for line in done.stdout.splitlines() if re.search(r'import-(not-found|untyped)|Cannot find', line) and '"fineflow' in line]
    assert done.returncode in (0, 1), done.stderr[-2000:]  # 2: mypy itself failed
    assert not unresolved, "\n".join(unresolved)


def test_no_test_module_imports_prefect_when_collected():
    """Prefect fixes its settings when first imported: a test module importing it at collection (before
    the session's `prefect_api` fixture sets PREFECT_API_URL) makes in-process flows start a temporary
    server of their own, while Dask workers report task runs to the session's: 409 conflicts."""
    import subprocess
    import sys

    script = ("import glob, importlib, sys; sys.path.insert(0, '.'); "
              "[importlib.import_module(f[:-3]) for f in sorted(glob.glob('test_*.py'))]; "
              "print(sorted(m for m in sys.modules if m == 'prefect'))")
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO / "tests", capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]", "a test module imports Prefect at module level: import it inside the test"
