"""Plan the tokenize stage: [sample (map) -> train (a task per trained tokenizer)] -> count (map,
the document step) -> stats (one task) [-> groups (one task) -> merge (``merge_tasks`` tasks)].

A count's fingerprint chains on each tokenizer's fingerprint: the sha256 of its files, or for a
tokenizer trained in the run the train step's fingerprint (known before the file exists), so a
changed tokenizer file or training sample recomputes the counts and the token files after them.
"""

from __future__ import annotations

import numpy as np

from fineflow.steps import PlanContext, StepPlan
from fineflow.tasks.tokenize import count, groups, merge, stats, train
from fineflow.tasks.tokenize.config import TokenizeStage
from fineflow.tasks.tokenize.encoders import (
    WIDEST_DTYPE,
    TokenizerError,
    describe,
    load_encoder,
    source_fingerprint,
    token_dtype,
)


def _train_params(config: TokenizeStage) -> dict:
    return {name: spec.train.model_dump() for name, spec in config.tokenizers.items() if spec.train is not None}


def writer_dtype(config: TokenizeStage) -> str | None:
    """The token files' integer type, from the writer's largest id (a trained tokenizer: its
    configured vocabulary size, an upper bound of what it learns); ``TokenizerError`` in one
    line naming the tokenizer, the id and the type when the id does not fit."""
    if config.writer is None:
        return None
    spec = config.tokenizers[config.writer]
    if spec.train is not None:
        vocab = spec.train.vocab_size
    else:
        vocab = load_encoder(config.writer, describe(spec)).vocab_size
    try:
        return token_dtype(vocab, config.write)
    except TokenizerError:
        widest = WIDEST_DTYPE[config.write]
        raise TokenizerError(
            f"tokenizer {config.writer}: its largest token id {vocab - 1:,} does not fit the {config.write} token files' "
            f"widest integer type {widest} (at most {int(np.iinfo(widest).max):,})"
        ) from None


def required_columns(config: TokenizeStage) -> list[tuple[str, str]]:
    """(column, the option naming it) for every input column the stage cannot run without; the
    registry checks them against the input before any work. ``repeats_column``, ``url`` and
    ``language`` are read where present only."""
    needed = [(column, "partition_by") for column in config.partition_by]
    needed += [(column, "key_columns") for column in config.key_columns]
    needed += [("language", f"tokenizers.{name}.train.languages") for name, spec in config.tokenizers.items()
               if spec.train is not None and spec.train.languages is not None]
    return needed


def plan_tokenize(config: TokenizeStage, ctx: PlanContext) -> list[StepPlan]:
    assert ctx.inputs is not None  # a document-reading kind: the DAG gives it inputs
    inputs = ctx.inputs.shards()
    upstream = {"upstream": ctx.inputs.fingerprint}
    plans: list[StepPlan] = []
    trained = _train_params(config)
    train_plan = None
    if trained:
        sample_plan = ctx.step(train, "sample_shard", step="sample", params={"train": trained}, chained=upstream, shards=inputs)
        train_plan = ctx.step(
            train, "train_shard", step="train",
            params={"train": trained, "samples": [sample_plan.location.shard_url(n) for n in range(len(inputs))]},
            fingerprint_params={"train": trained},
            chained={"sample": sample_plan.fingerprint.value},
            shards=[{"shard": n, "tokenizer": name} for n, name in enumerate(sorted(trained))],
            checks="fineflow.tasks.tokenize.train:vocabulary_warnings",
        )
        plans += [sample_plan, train_plan]

    tokenizers = {}
    for name, spec in config.tokenizers.items():
        trained_url = train_plan.location.artifact_url(train.artifact_name(name)) if spec.train is not None else None
        source = describe(spec, trained_url)
        tokenizers[name] = {
            "source": source,
            "fingerprint": source_fingerprint(source, train_plan.fingerprint.value if train_plan else None),
        }
    write = None
    if config.writer is not None:
        write = {
            "tokenizer": config.writer,
            "format": config.write,
            "dtype": writer_dtype(config),
            "seed": config.seed,
            "partition_by": list(config.partition_by),
            "max_tokens_per_file": config.max_tokens_per_file,
        }
    count_params = {
        "tokenizers": tokenizers,
        "write": write,
        "key_columns": list(config.key_columns),
        "repeats_column": config.repeats_column,
        "max_chars": config.max_chars,
        "batch_size": config.batch_size,
    }
    count_plan = ctx.step(
        count, "count_shard", step="count", params=count_params,
        # Files enter by their content (the tokenizer fingerprints), never by their paths.
        fingerprint_params={
            **{key: value for key, value in count_params.items() if key not in ("tokenizers", "batch_size")},
            "tokenizers": {name: tokenizer["fingerprint"] for name, tokenizer in tokenizers.items()},
        },
        chained={**upstream, **({"train": train_plan.fingerprint.value} if train_plan else {})},
        shards=inputs,
    )
    count_artifacts = count_plan.location.artifacts_folder  # the shards' counts, provenance and token runs
    stats_params = {
        "count_artifacts": count_artifacts,
        "count_shards": len(inputs),
        "key_columns": list(config.key_columns),
        "top_domains": config.top_domains,
        "ranking": count.count_column(next(iter(config.tokenizers))),
    }
    stats_plan = ctx.step(
        stats, "stats_shard", step="stats", params=stats_params,
        fingerprint_params={key: value for key, value in stats_params.items() if key != "count_artifacts"},
        chained={"count": count_plan.fingerprint.value}, shards=[{"shard": 0}],
    )
    plans += [count_plan, stats_plan]
    if write is not None:
        # The files and their tasks are known only from the counts: a small step decides them.
        tasks = max(1, min(config.merge_tasks, len(inputs)))  # a small input: fewer, fuller tasks
        groups_params = {"count_artifacts": count_artifacts, "count_shards": len(inputs), "write": write, "tasks": tasks}
        groups_plan = ctx.step(
            groups, "groups_shard", step="groups", params=groups_params,
            fingerprint_params={key: value for key, value in groups_params.items() if key != "count_artifacts"},
            chained={"count": count_plan.fingerprint.value}, shards=[{"shard": 0}],
        )
        merge_params = {**groups_params, "groups": groups_plan.location.artifact_url(groups.GROUPS)}
        plans += [groups_plan, ctx.step(
            merge, "merge_shard", step="merge", params=merge_params,
            fingerprint_params={"count_shards": len(inputs), "write": write, "tasks": tasks},
            chained={"count": count_plan.fingerprint.value, "groups": groups_plan.fingerprint.value},
            shards=[{"shard": n} for n in range(tasks)],
        )]
    return plans


def preflight(config: TokenizeStage) -> list[str]:
    """Load every tokenizer given by file (a missing or corrupt one is a configuration error
    before any work) and check the token files' integer type."""
    warnings = []
    for name, spec in config.tokenizers.items():
        if spec.train is None:
            encoder = load_encoder(name, describe(spec))
            if name == config.writer and encoder.eos_token is None:
                warnings.append(f"tokenizer {name} has no end-of-document token: written documents are not separated "
                                "by one (set eos: <token>)")
    writer_dtype(config)
    return warnings
