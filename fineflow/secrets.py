"""Secrets a step needs (an LLM server's API key), by name, never by value in parameters.

A step's config names where a secret comes from: an environment variable, or a Prefect Secret
block. Only the block's name travels in step parameters; ``fineflow.flows`` loads the block in
the flow process and hands the value to each worker's copy of this module (the run's worker
plugin), so stage code (which imports no Prefect) finds it here. Values are never logged, written or put in results.
"""

from __future__ import annotations

import os

_PROVIDED: dict[str, str] = {}


class MissingSecret(RuntimeError):
    pass


def provide(block: str, value: str) -> None:
    """Called by the flows with a Prefect Secret block's value, in the process that runs tasks."""
    _PROVIDED[block] = value


def resolve(env: str | None = None, block: str | None = None) -> str | None:
    """The secret from block ``block`` (loaded by the flows) or else environment variable ``env``;
    None when neither is configured. A block that was named but not loaded is an error."""
    if block:
        if block not in _PROVIDED:
            raise MissingSecret(
                f"secret block {block!r} was not loaded in this process (run through fineflow's flows, which load it)"
            )
        return _PROVIDED[block]
    if env:
        return os.environ.get(env) or None
    return None
