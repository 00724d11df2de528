"""The hard window lives in ``fineflow.tasks.text.window`` (shared with other text-rewriting
stages); this name stays for the translate stage's modules."""

from fineflow.tasks.text.window import DEFAULT_INPUT_TOKENS, cut, estimate

__all__ = ["DEFAULT_INPUT_TOKENS", "cut", "estimate"]
