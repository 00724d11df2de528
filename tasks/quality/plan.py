"""Plan the quality stage: [sample (map)] -> [annotate (parts of the sample)] -> [train (a task per
classifier)] -> score (map) -> [summarize (map)] -> calibrate (one task) -> decide (map, the document step).

Fingerprints: models and label files enter by content (a fastText file's hash, memoised under
the storage root), a model trained in the run by its train step's fingerprint; the LLM by its
model name, decoding parameters and prompt text (not its URL, concurrency or key; annotate's split
into tasks, by default from the concurrency, enters annotate's own fingerprint: a changed split
reads the answers from the cache again, and train, chained on the labels, stays). ``decide``
chains on the scores and the calibration, and its own parameters are only the keep rules, so a
changed threshold re-runs only ``decide``.
"""

from __future__ import annotations

import hashlib
from typing import Any

from fineflow import storage
from fineflow.fingerprint import file_content_hash
from fineflow.steps import PlanContext, StepPlan
from fineflow.tasks.quality import annotate, calibrate, decide, hf_config, sample, score, summarize, train
from fineflow.tasks.quality.config import QualityStage
from fineflow.tasks.quality.prompts import full_template, load_template

CACHE_FOLDER = ("_cache", "llm")  # under the storage root: shared by runs, never collected by gc


def _from_input(labels: dict) -> bool:
    """Whether a classifier's labels are read from the stage's input documents (the sample step)."""
    sides = [labels.get("positives") or {}, labels.get("negatives") or {}]
    return bool(labels.get("column")) or any(side.get("url") or side.get("rest") for side in sides)


def _files_hashes(pattern: str, root: str) -> list[dict[str, Any]]:
    return [file_content_hash(url, root) for url in storage.expand(pattern)]


def _folder_hash(folder: str, root: str) -> list[dict[str, Any]]:
    files = storage.list_tree(folder)  # the folder's files, sub-folders too (any storage: s3 too)
    return [file_content_hash(storage.join(folder, *name.split("/")), root) for name in sorted(files)]


def _classifier_params(config: QualityStage) -> dict[str, dict]:
    return {name: {**spec.model_dump(mode="json"), "regression": spec.is_regression, "max_chars": spec.train_chars}
            for name, spec in config.classifiers.items()}


def _annotate_params(config: QualityStage) -> tuple[dict, dict] | tuple[None, None]:
    if config.annotate is None:
        return None, None
    spec = config.annotate.model_dump(mode="json")
    template = full_template(load_template(config.annotate.prompt), config.annotate.wrapper, config.annotate.answer_prefix)
    server = config.annotate.server
    # What changes an answer enters the fingerprint; where it is asked (URL, key, concurrency) does not,
    # nor how the sample is split into tasks (plan_quality adds the split where it has more than one).
    fingerprinted = {
        **{k: v for k, v in spec.items() if k not in ("server", "prompt", "wrapper", "answer_prefix", "tasks")},
        "model": server.model, "decoding": server.decoding(),
        "prompt_sha256": hashlib.sha256(template.encode()).hexdigest(),
    }
    return spec, fingerprinted


def hf_model(name: str, config: QualityStage) -> hf_config.HFModel:
    """An hf scorer's model as its config.json and the stage's settings make it (a missing label, or a stated
    regression its outputs contradict, is an error naming the scorer)."""
    spec = config.scorers[name]
    assert spec.hf is not None
    try:
        return hf_config.resolve(spec.hf, spec.label, spec.regression)
    except hf_config.HFModelError as error:
        raise ValueError(f"scorers.{name}.hf: {error}") from None


def regressors(config: QualityStage) -> dict[str, bool]:
    """Each scorer: a 0-5 regressor (a quality_<name>_int column) or not; an hf model's config.json decides
    where the stage does not say. A min_int rule on a scorer that is not one is an error."""
    found = {name: (hf_model(name, config).regression if spec.hf is not None else bool(config.is_regressor(name)))
             for name, spec in config.scorers.items()}
    for rule in config.keep:
        if rule.min_int is not None and rule.scorer and not found[rule.scorer]:
            raise ValueError(f"keep: scorer {rule.scorer} is not a 0-5 regressor (its model is a classifier), "
                             "so it has no int score: use min or top_share")
    return found


def _scorer_params(config: QualityStage, train_plan: StepPlan | None, root: str) -> tuple[dict, dict]:
    params, fingerprinted = {}, {}
    regression = regressors(config)
    for name, spec in config.scorers.items():
        common = {"label": spec.label, "max_chars": config.scored_chars(name), "batch_size": spec.batch_size,
                  "device": spec.device, "regression": regression[name]}
        if spec.trained is not None:
            classifier = config.classifiers[spec.trained]
            assert train_plan is not None
            url = train_plan.location.artifact_url(train.model_artifact(spec.trained, classifier.model))
            kind = "fasttext" if classifier.model == "fasttext" else "head"
            params[name] = {"kind": kind, "path": url, **common}
            if kind == "fasttext":
                params[name]["label"] = "__label__hq"
            content: Any = {"trained": spec.trained, "train": train_plan.fingerprint.value}
        elif spec.fasttext is not None:
            params[name] = {"kind": "fasttext", "path": spec.fasttext, **common}
            content = file_content_hash(spec.fasttext, root)
        else:
            params[name] = {"kind": "hf", "path": spec.hf, **common}
            content = _folder_hash(spec.hf, root)
        fingerprinted[name] = {**{k: v for k, v in params[name].items() if k not in ("path", "batch_size", "device")},
                               "model": content}
    return params, fingerprinted


def plan_quality(config: QualityStage, ctx: PlanContext) -> list[StepPlan]:
    assert ctx.inputs is not None  # a document-reading kind: the DAG gives it inputs
    inputs = ctx.inputs.shards()
    upstream = {"upstream": ctx.inputs.fingerprint}
    plans: list[StepPlan] = []
    classifiers = _classifier_params(config)
    annotate_spec, annotate_fingerprinted = _annotate_params(config)

    sample_params: dict[str, Any] = {
        # What choosing the labelled documents needs (training settings do not enter the sample's fingerprint).
        "classifiers": {name: {k: spec[k] for k in ("labels", "seed", "max_per_class", "max_chars", "positive_from")}
                        for name, spec in classifiers.items() if _from_input(spec["labels"])},
    }
    if annotate_spec is not None:
        sample_params["annotate"] = {k: annotate_spec[k] for k in ("sample_size", "per_language", "languages", "max_chars", "seed")}
    sample_plan = None
    if sample_params["classifiers"] or annotate_spec is not None:
        sample_plan = ctx.step(sample, "sample_shard", step="sample", params=sample_params, chained=upstream, shards=inputs)
        plans.append(sample_plan)
    samples = [sample_plan.location.shard_url(n) for n in range(len(inputs))] if sample_plan else []

    annotate_plan = None
    annotations_key = None  # what train chains on: the labels, which do not depend on the split into tasks
    if annotate_spec is not None:
        assert sample_plan is not None and config.annotate is not None

        def annotate_step(tasks: int) -> StepPlan:
            # The split enters the fingerprint (its shards are parts of the sample), except one task's:
            # that is the step's fingerprint of before the split, and the labels' identity.
            return ctx.step(
                annotate, "annotate_shard", step="annotate",
                params={"annotate": annotate_spec, "samples": samples, "cache": storage.join(ctx.root, *CACHE_FOLDER),
                        "tasks": tasks},
                fingerprint_params={"annotate": annotate_fingerprinted, **({"tasks": tasks} if tasks > 1 else {})},
                chained={"sample": sample_plan.fingerprint.value}, shards=[{"shard": n} for n in range(tasks)],
                secrets=tuple(b for b in [annotate_spec["server"].get("api_key_block")] if b),
            )

        annotate_plan = annotate_step(config.annotate.task_count)
        annotations_key = annotate_plan.fingerprint.value if len(annotate_plan.shards) == 1 else annotate_step(1).fingerprint.value
        plans.append(annotate_plan)

    train_plan = None
    if classifiers:
        label_files = {
            f"{name}.{side}": _files_hashes(spec["labels"][side]["files"], ctx.root)
            for name, spec in classifiers.items() for side in ("positives", "negatives")
            if (spec["labels"].get(side) or {}).get("files")
        }
        # Another stage's documents: its committed shards, chained on by that stage's fingerprint.
        by_stage = {f"{name}.{side}": ctx.inputs.reference(spec["labels"][side]["stage"])
                    for name, spec in classifiers.items() for side in ("positives", "negatives")
                    if (spec["labels"].get(side) or {}).get("stage")}
        train_plan = ctx.step(
            train, "train_shard", step="train",
            params={"classifiers": classifiers, "samples": samples,
                    "annotations": [annotate_plan.location.shard_url(n) for n in range(len(annotate_plan.shards))]
                    if annotate_plan else None,
                    "label_stages": {key: source.shard_urls() for key, source in by_stage.items()}},
            fingerprint_params={"classifiers": classifiers, "label_files": label_files,
                                "label_stages": {key: source.key for key, source in by_stage.items()}},
            chained={
                **({"sample": sample_plan.fingerprint.value} if sample_plan else {}),
                **({"annotate": annotations_key} if annotations_key else {}),
            },
            shards=[{"shard": n, "classifier": name} for n, name in enumerate(sorted(classifiers))],
        )
        plans.append(train_plan)

    scorer_params, scorer_fingerprints = _scorer_params(config, train_plan, ctx.root)
    max_chars = max(config.scored_chars(name) for name in config.scorers)  # what the step reads of each text
    score_plan = ctx.step(
        score, "score_shard", step="score", params={"scorers": scorer_params, "max_chars": max_chars},
        fingerprint_params={"scorers": scorer_fingerprints, "max_chars": max_chars},
        chained={**upstream, **({"train": train_plan.fingerprint.value} if train_plan else {})}, shards=inputs,
    )
    calibrate_params = {
        "scores": [score_plan.location.shard_url(n) for n in range(len(inputs))],
        "scorers": sorted(config.scorers), "weight": config.calibrate.weight, "per_language": config.calibrate.per_language,
        "min_docs": config.calibrate.min_docs, "min_distinct_scores": config.calibrate.min_distinct_scores,
    }
    calibrate_chained = {"score": score_plan.fingerprint.value}
    summarize_plans = []
    if config.calibrate.summary != "exact":  # (exact: the plan and fingerprints of before the summaries)
        summarize_params = {"scorers": sorted(config.scorers), "per_language": config.calibrate.per_language,
                            "bins": config.calibrate.bins, "min_distinct_scores": config.calibrate.min_distinct_scores}
        summarize_plan = ctx.step(
            summarize, "summarize_shard", step="summarize", params=summarize_params,
            chained={"score": score_plan.fingerprint.value},
            shards=[{"shard": n, "scores": url} for n, url in enumerate(calibrate_params["scores"])],
        )
        summarize_plans.append(summarize_plan)
        calibrate_params |= {"summary": config.calibrate.summary, "bins": config.calibrate.bins,
                             "max_rank_error": config.calibrate.max_rank_error, "exact_max_docs": config.calibrate.exact_max_docs,
                             "summaries": [summarize_plan.location.shard_url(n) for n in range(len(inputs))]}
        calibrate_chained["summarize"] = summarize_plan.fingerprint.value
    calibrate_plan = ctx.step(
        calibrate, "calibrate_shard", step="calibrate", params=calibrate_params,
        fingerprint_params={k: v for k, v in calibrate_params.items() if k not in ("scores", "summaries")},
        chained=calibrate_chained, shards=[{"shard": 0}],
    )
    decide_params = {
        "grids": calibrate_plan.location.shard_url(0),
        "scorers": sorted(config.scorers), "per_language": config.calibrate.per_language,
        "weight": config.calibrate.weight, "ensemble": config.use_ensemble,
        "keep": [rule.model_dump(mode="json") for rule in config.keep],
    }
    decide_plan = ctx.step(
        decide, "decide_shard", step="decide", params=decide_params,
        fingerprint_params={k: v for k, v in decide_params.items() if k != "grids"},
        chained={**upstream, "score": score_plan.fingerprint.value, "calibrate": calibrate_plan.fingerprint.value},
        shards=[{**shard, "scores": score_plan.location.shard_url(shard["shard"])} for shard in inputs],
    )
    return plans + [score_plan, *summarize_plans, calibrate_plan, decide_plan]


def preflight(config: QualityStage) -> list[str]:
    """Load every model given by path (a missing file or one of the wrong kind is an error before
    any work) and read the prompt file; warn where a run is likely to disappoint."""
    from fineflow.tasks.quality import embedding, fasttext_model

    warnings = []
    if config.annotate is not None:
        load_template(config.annotate.prompt)
    for name, spec in config.scorers.items():
        if spec.fasttext is not None:
            try:  # loaded in a capped child process (fineflow.model_check), never in this one
                fasttext_model.check_label(storage.local_file(spec.fasttext), spec.label)
            except (FileNotFoundError, ValueError) as error:
                raise ValueError(f"scorers.{name}.fasttext: {error}") from None
        if spec.hf is not None and not storage.exists(storage.join(spec.hf, "config.json")):
            raise ValueError(f"scorer {name}: {spec.hf} is not a Hugging Face model folder (no config.json)")
    regressors(config)  # an hf model's labels and outputs against the stage's label, regression and min_int rules
    for name, classifier in config.classifiers.items():
        if classifier.model == "embedding":
            try:
                embedding.model_folder(classifier.embedding.model)
            except FileNotFoundError as error:
                raise ValueError(f"classifier {name}: {error}") from None
        for side in ("positives", "negatives"):
            labels = getattr(classifier.labels, side)
            if labels is not None and labels.files is not None and not storage.expand(labels.files):
                raise ValueError(f"classifier {name}: labels.{side}.files matches no file: {labels.files}")
    return warnings
