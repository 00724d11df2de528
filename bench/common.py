"""What the benchmarks share: the record of the machine they ran on, and Markdown table heads.
Standard library only: the datatrove side imports the benchmark modules too."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            return next((line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), platform.processor())
    except OSError:
        return platform.processor()


def _version(package: str) -> str:
    try:
        return version(package)
    except PackageNotFoundError:
        return "absent"


def machine_info(packages: tuple[str, ...] = ("fineflow",)) -> dict:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout

    try:
        memory_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        memory_gib = None
    return {
        "cpus": os.cpu_count(),
        "cpu": _cpu_model(),
        "memory_gib": memory_gib,
        "load_average": [round(x, 2) for x in os.getloadavg()],  # other load skews the timings
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {package: _version(package) for package in packages},
        "git": git("describe", "--always", "--dirty").strip(),
        # uncommitted changes to the code under test, if any
        "git_uncommitted": git("status", "--porcelain", "--", "tasks", "fineflow", "flows").splitlines(),
    }


def table_head(*columns: str) -> list[str]:
    """A Markdown table's header and separator lines."""
    return ["| " + " | ".join(columns) + " |", "|---" * len(columns) + "|"]


def read_list_file(path: Path) -> list[str]:
    """A blocklist file's entries: stripped lines, without blank lines and '#' comments."""
    lines = (line.strip() for line in path.read_text(encoding="utf-8").splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def save_record(record: dict, prefix: str) -> Path:
    """Finish a benchmark's record (the load at its end), print its table, write it as JSON."""
    record["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(record["table"])
    results = ROOT / "bench" / "results"
    results.mkdir(parents=True, exist_ok=True)
    out = results / f"{prefix}-{datetime.now():%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(record, indent=2))
    print(f"\nraw numbers: {out.relative_to(ROOT)}", file=sys.stderr)
    return out


def datatrove_url_filter(lists_dir: Path, **options):  # noqa: ANN201 (datatrove's URLFilter; its venv only)
    """datatrove's URL filter on fineflow's list files (its own integrated lists off)."""
    from datatrove.pipeline.filters import URLFilter

    return URLFilter(
        use_integrated_lists=False,
        extra_domains=read_list_file(lists_dir / "domains.txt"),
        extra_urls=read_list_file(lists_dir / "urls.txt"),
        banned_words=read_list_file(lists_dir / "banned_words.txt"),
        soft_banned_words=read_list_file(lists_dir / "soft_banned_words.txt"),
        banned_subwords=read_list_file(lists_dir / "banned_subwords.txt"),
        **options,
    )
