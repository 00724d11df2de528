"""What the benchmarks share: the record of the machine they ran on, and Markdown table heads.
Standard library only: the datatrove side imports the benchmark modules too."""

from __future__ import annotations

import os
import platform
import subprocess
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
