"""Targets per cell from the hierarchical config: absolute tokens or shares normalized among
siblings, level by level over the cell columns (e.g. language -> source -> quality level).

At each level a node's tokens go first to the values given absolute ``tokens`` (or no amount:
their natural size), then the rest to the values with a ``share``, in proportion; ``*`` stands for
every value not listed, as one group whose tokens its values divide by ``split``. A node without
``by`` divides its tokens among the next column's values by ``split`` (natural: in proportion to
their weighted tokens; even). A listed value without documents is a cell with nothing to give
(infeasible, reported); a value without a target and no ``*`` is a configuration error.
"""

from __future__ import annotations

from dataclasses import dataclass

from fineflow.tasks.rebalance.config import MAX_TOKENS, REST, RebalanceStage, TargetNode

MISSING = "(none)"  # the remaining values of a listed cell that has no documents


@dataclass
class CellTarget:
    values: tuple[str, ...]
    target: int
    natural: bool  # no target of its own: every document at its weight (lambda = 1)
    max_epochs: int
    min_epochs: int


def _child(nodes: dict[str, TargetNode] | None, value: str) -> TargetNode | None:
    if not nodes:
        return None
    return nodes.get(value) or nodes.get(REST)


def epochs_of(config: RebalanceStage, values: tuple[str, ...]) -> tuple[int, int]:
    """A cell's (max_epochs, min_epochs): the deepest node on its path that sets them."""
    high, low = config.max_epochs, config.min_epochs
    nodes = config.targets
    for value in values:
        node = _child(nodes, value)
        if node is None:
            break
        high = node.max_epochs if node.max_epochs is not None else high
        low = node.min_epochs if node.min_epochs is not None else low
        nodes = node.by
    return high, low


def _divide(tokens: float, groups: dict[str, float], split: str) -> dict[str, float]:
    """``tokens`` over groups by their natural sizes (``groups``) or evenly."""
    if not groups:
        return {}
    if split == "even":
        return {value: tokens / len(groups) for value in groups}
    total = sum(groups.values())
    return {value: tokens * size / total if total else 0.0 for value, size in groups.items()}


def resolve(config: RebalanceStage, natural: dict[tuple[str, ...], float]) -> list[CellTarget]:
    """Every cell's target. ``natural``: each cell present in the data and its natural tokens
    (every document at its weight, within its epochs). Raises ValueError on targets that
    cannot be divided (absolute amounts over their parent, values without a target)."""
    columns = config.cells
    found: dict[tuple[str, ...], float] = {}
    pure = config.budget is None and config.targets is None
    root = float(config.budget) if config.budget is not None else float(sum(natural.values()))

    def size(prefix: tuple[str, ...]) -> float:
        return sum(tokens for cell, tokens in natural.items() if cell[: len(prefix)] == prefix)

    def visit(prefix: tuple[str, ...], tokens: float, nodes: dict[str, TargetNode] | None, split: str) -> None:
        level = len(prefix)
        if level == len(columns):
            found[prefix] = found.get(prefix, 0.0) + tokens
            return
        present = sorted({cell[level] for cell in natural if cell[:level] == prefix})
        if not nodes:
            for value, share in _divide(tokens, {v: size((*prefix, v)) for v in present}, split).items():
                visit((*prefix, value), share, None, config.split)
            return
        listed = [value for value in nodes if value != REST]
        rest = [value for value in present if value not in nodes]
        where = f"targets at {'/'.join(prefix) or 'the top'} ({columns[level]})"
        if rest and REST not in nodes:
            raise ValueError(f"{where}: {', '.join(rest)} have no target: list them or add '{REST}'")
        members = [*listed, *([REST] if rest else [])]
        amounts: dict[str, float] = {}
        for value in members:
            node = nodes[value]
            if node.tokens is not None:
                amounts[value] = float(node.tokens)
            elif node.share is None:  # no amount: as it is
                amounts[value] = size((*prefix, value)) if value != REST else sum(size((*prefix, v)) for v in rest)
        left = tokens - sum(amounts.values())
        if left < -0.5:
            raise ValueError(f"{where}: absolute targets ({sum(amounts.values()):,.0f} tokens) exceed their parent's "
                             f"{tokens:,.0f}")
        shares = {value: nodes[value].share for value in members if value not in amounts}
        total_share = sum(shares.values())
        for value, share in shares.items():
            amounts[value] = max(left, 0.0) * (share / total_share)  # the ratio first: tiny shares must not underflow
        for value in listed:
            node = nodes[value]
            if value in present:
                visit((*prefix, value), amounts[value], node.by, node.split or config.split)
            else:  # a listed value without documents: one cell that cannot be filled
                found[(*prefix, value, *[MISSING] * (len(columns) - level - 1))] = amounts[value]
        if rest:
            star = nodes[REST]
            for value, share in _divide(amounts[REST], {v: size((*prefix, v)) for v in rest}, star.split or "natural").items():
                visit((*prefix, value), share, star.by, config.split)

    if columns:
        visit((), root, config.targets, config.split)
    else:
        found[()] = root
    targets = []
    for cell in sorted(found):
        if not 0 <= found[cell] <= MAX_TOKENS:  # NaN fails both: the config's bounds make it a bug
            raise ValueError(f"targets: the target of {'/'.join(cell)} came out as {found[cell]} tokens (not a count)")
        high, low = epochs_of(config, cell)
        exact = pure and cell in natural
        targets.append(CellTarget(cell, int(round(natural[cell])) if exact else int(round(found[cell])), exact, high, low))
    return targets
