"""A pipeline's stages as a DAG: who reads whose documents, checked and ordered before any work.

Each entry of ``stages:`` has a ``name`` (default: its kind) and an ``input``: a stage name, a
list of them (their union), or ``NAME.rejects``; by default the previous entry. A source stage
(crawl) reads no documents. Planning walks the DAG in order: every stage's inputs are known
before it runs (fingerprints chain from inputs and parameters), so ``--dry-run`` plans it all.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from fineflow import registry
from fineflow.stage_config import REJECTS_SUFFIX, StageConfig
from fineflow.steps import Source, StageInputs, StepPlan


class DagError(ValueError):
    """Duplicate or unknown names, a cycle, a misplaced input: the message names the stage."""


@dataclass(frozen=True)
class InputRef:
    stage: str
    rejects: bool = False

    def __str__(self) -> str:
        return self.stage + (REJECTS_SUFFIX if self.rejects else "")


@dataclass(frozen=True)
class Node:
    name: str
    config: StageConfig
    inputs: tuple[InputRef, ...]
    references: tuple[InputRef, ...] = ()  # stages read besides the inputs (StageConfig.references)

    @property
    def kind(self) -> registry.StageKind:
        return registry.of(self.config)

    @property
    def needs(self) -> tuple[InputRef, ...]:
        """Every stage that must have committed before this one runs."""
        return self.inputs + self.references


def _refs(value: str | list[str]) -> tuple[InputRef, ...]:
    names = [value] if isinstance(value, str) else value
    return tuple(
        InputRef(name.removesuffix(REJECTS_SUFFIX), True) if name.endswith(REJECTS_SUFFIX) else InputRef(name) for name in names
    )


def build_dag(stages: list[StageConfig]) -> list[Node]:
    """The stages in an order where every stage comes after its inputs (file order where free)."""
    names = [stage.label for stage in stages]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise DagError(f"stage name(s) used twice: {', '.join(repeated)} (give each entry its own `name`)")
    nodes = []
    for index, stage in enumerate(stages):
        kind = registry.of(stage)
        if not kind.reads_documents:
            if stage.input is not None:
                raise DagError(f"stage {stage.label}: a {kind.kind} stage reads no documents, so it takes no `input`")
            nodes.append(Node(stage.label, stage, ()))
            continue
        if stage.input is None:
            if index == 0:
                raise DagError(f"stage {stage.label}: it reads documents, but no stage comes before it: give it an `input`")
            refs: tuple[InputRef, ...] = (InputRef(names[index - 1]),)
        else:
            refs = _refs(stage.input)
        for ref in refs:
            if ref.stage not in names:
                raise DagError(f"stage {stage.label}: input {ref} names no stage of this pipeline (stages: {', '.join(names)})")
            if ref.stage == stage.label:
                raise DagError(f"stage {stage.label}: it cannot read its own output")
            _check_rejects(stage.label, ref, stages[names.index(ref.stage)])
        if len(set(refs)) < len(refs):
            raise DagError(f"stage {stage.label}: an input is listed twice")
        references = _refs(stage.references())
        for ref in references:
            if ref.stage not in names:
                raise DagError(f"stage {stage.label}: it reads stage {ref}, which is not a stage of this pipeline "
                               f"(stages: {', '.join(names)})")
            if ref.stage == stage.label:
                raise DagError(f"stage {stage.label}: it cannot read its own output")
            _check_rejects(stage.label, ref, stages[names.index(ref.stage)])
        nodes.append(Node(stage.label, stage, refs, tuple(dict.fromkeys(references))))
    return _ordered(nodes)


def _check_rejects(name: str, ref: InputRef, producer: StageConfig) -> None:
    """``NAME.rejects`` of a kind whose document step writes none would find no folder at run time."""
    kind = registry.of(producer)
    if ref.rejects and not kind.writes_rejects:
        raise DagError(f"stage {name}: input {ref}: a {kind.kind} stage writes no rejects (read {ref.stage} itself, or a stage that rejects)")


def _ordered(nodes: list[Node]) -> list[Node]:
    done: list[Node] = []
    placed: set[str] = set()
    waiting = list(nodes)
    while waiting:
        ready = next((node for node in waiting if all(ref.stage in placed for ref in node.needs)), None)
        if ready is None:
            cycle = _cycle({node.name: [ref.stage for ref in node.needs] for node in waiting})
            raise DagError(f"stage {cycle[0]}: its inputs form a cycle: {' -> '.join(cycle)}")
        done.append(ready)
        placed.add(ready.name)
        waiting.remove(ready)
    return done


def _cycle(edges: dict[str, list[str]]) -> list[str]:
    """One cycle among stages that all wait on each other (each reads the next)."""
    path = [next(iter(edges))]
    while True:
        following = next(name for name in edges[path[-1]] if name in edges)
        if following in path:
            return path[path.index(following):] + [following]
        path.append(following)


def descendants(nodes: list[Node], name: str) -> set[str]:
    """``name`` and every stage that reads it, directly or not."""
    found = {name}
    for node in nodes:  # in DAG order, so one pass reaches every descendant
        if any(ref.stage in found for ref in node.needs):
            found.add(node.name)
    return found


def document_step(plans: list[StepPlan], kind: registry.StageKind) -> StepPlan:
    for plan in plans:
        if plan.step == kind.document_step:
            return plan
    raise registry.RegistryError(f"stage kind {kind.kind}: its planner made no {kind.document_step!r} step (its document step)")


def source_of(ref: InputRef, plans: list[StepPlan], kind: registry.StageKind) -> Source:
    """What reading ``ref`` means, from the producing stage's plans (known before it runs)."""
    step = document_step(plans, kind)
    folder = step.location.rejects_folder if ref.rejects else step.location.data_folder
    return Source(ref.stage, step.fingerprint.value, folder, len(step.shards), ref.rejects)


def stage_inputs(node: Node, planned: dict[str, list[StepPlan]], kinds: dict) -> StageInputs | None:
    """What a stage reads: its inputs' and references' committed outputs, from their stages' plans."""
    if not node.inputs:
        return None
    return StageInputs(
        tuple(source_of(ref, planned[ref.stage], kinds[ref.stage]) for ref in node.inputs),
        tuple(replace(source_of(ref, planned[ref.stage], kinds[ref.stage]), reference=True) for ref in node.references),
    )


def plan_dag(stages: list[StageConfig], root: str) -> list[tuple[Node, list[StepPlan]]]:
    """Every stage's step plans, in DAG order."""
    planned: dict[str, list[StepPlan]] = {}
    result = []
    nodes = build_dag(stages)
    kinds = {node.name: node.kind for node in nodes}
    for node in nodes:
        planned[node.name] = node.kind.plan(node.config, root, node.name, stage_inputs(node, planned, kinds))
        result.append((node, planned[node.name]))
    return result
