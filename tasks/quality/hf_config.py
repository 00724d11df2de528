"""What a Hugging Face sequence-classification model is, read from its ``config.json`` (no torch).

A scorer is a 0-5 regressor (one output: the score, FineWeb-Edu's ``int_score`` from it) or a
classifier (the probability of one of its labels). ``problem_type`` says which when the model
was saved with it; otherwise one output is a regressor (transformers itself trains a one-label
model with a regression loss) and two or more outputs a classifier. A stated ``regression`` must
agree with the outputs, and a classifier's label must be one the model has: a wrong one used to
fall back to the last class in silence.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from fineflow import storage

LABEL_PREFIX = "__label__"  # fastText's spelling, accepted so one `label` reads for both kinds


class HFModelError(ValueError):
    pass


@dataclass(frozen=True)
class HFModel:
    labels: tuple[str, ...]  # by output index
    regression: bool
    multi_label: bool  # independent sigmoid outputs (problem_type multi_label_classification)
    index: int | None  # the scored output of a classifier


def read_config(folder: str) -> dict:
    path = storage.join(folder, "config.json")  # any storage URL: planning reads it on the client
    try:
        config = json.loads(storage.read_bytes(path).decode("utf-8"))
    except FileNotFoundError:
        raise HFModelError(f"{folder} is not a Hugging Face model folder (no config.json)") from None
    except (OSError, ValueError) as error:
        raise HFModelError(f"{path}: not a readable JSON config ({error})") from None
    if not isinstance(config, dict):
        raise HFModelError(f"{path}: not a model config (a JSON object)")
    return config


def labels_of(config: dict) -> tuple[str, ...]:
    """The output labels by index: ``id2label`` (keys are indices, as transformers saves them), else
    ``num_labels`` outputs (transformers' default: 2) named as transformers names them."""
    id2label = config.get("id2label")
    if isinstance(id2label, dict) and id2label:
        try:
            by_index = {int(k): str(v) for k, v in id2label.items()}
        except (TypeError, ValueError):
            raise HFModelError(f"config.json: id2label keys are not output indices: {sorted(id2label)[:5]}") from None
        if sorted(by_index) != list(range(len(by_index))):
            raise HFModelError(f"config.json: id2label does not number its outputs 0..{len(by_index) - 1}")
        return tuple(by_index[i] for i in range(len(by_index)))
    count = config.get("num_labels", 2)
    if not isinstance(count, int) or isinstance(count, bool) or count < 1:
        raise HFModelError(f"config.json: num_labels must be a positive integer, not {count!r}")
    return tuple(f"LABEL_{i}" for i in range(count))


def resolve(folder: str, label: str, regression: bool | None) -> HFModel:
    """The model in ``folder`` as a scorer: stated ``regression`` checked against its outputs, else read from them."""
    config = read_config(folder)
    labels = labels_of(config)
    problem = config.get("problem_type")
    outputs = len(labels)
    if regression is None:
        regression = problem == "regression" if problem else outputs == 1
    if regression and outputs != 1:
        raise HFModelError(f"{os.path.basename(folder.rstrip('/'))}: a 0-5 regressor has one output, this model has "
                           f"{outputs} ({', '.join(labels[:10])}): set regression: false and a label to score its probability")
    if not regression and outputs == 1:
        raise HFModelError(f"{os.path.basename(folder.rstrip('/'))}: a one-output model has no class probabilities: "
                           "it is a regressor (regression: true)")
    if regression:
        return HFModel(labels, True, False, None)
    name = label.removeprefix(LABEL_PREFIX)
    if name not in labels:
        raise HFModelError(f"{os.path.basename(folder.rstrip('/'))}: the model has no label {name!r} "
                           f"(its labels: {', '.join(labels[:20])}): set the scorer's label to one of them")
    return HFModel(labels, False, problem == "multi_label_classification", labels.index(name))
