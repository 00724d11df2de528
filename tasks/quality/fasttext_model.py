"""fastText quality classifiers: trained reproducibly, applied as DCLM does.

Training uses one thread and a fixed seed, so the same labelled lines give the same model bytes.
It runs in a fresh interpreter: fastText's trainer has failed with "Encountered NaN" on an input
that trains cleanly in a new process, after other native code (the embedding forward pass) had
run in the same one, so its result must not depend on what the worker did before.
Texts are put on one line with newlines replaced by spaces (DCLM and PreSelect; deleting them
instead, datatrove's default, glues words across lines).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from functools import lru_cache

import numpy as np

from fineflow.tasks.text import fasttext_file

POSITIVE = "__label__hq"
NEGATIVE = "__label__lq"
_SPACES = re.compile(r"\s+")


def one_line(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def train(texts: list[str], positive: list[bool], params: dict, seed: int, path: str) -> None:
    """Write the model for these labelled texts to ``path`` (a local file)."""
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False, encoding="utf-8") as handle:
        for text, is_positive in zip(texts, positive):
            handle.write(f"{POSITIVE if is_positive else NEGATIVE} {one_line(text)}\n")
        lines = handle.name
    try:
        done = subprocess.run([sys.executable, "-m", __name__, lines, json.dumps(params), str(seed), path],
                              capture_output=True, text=True, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"fastText training failed: {done.stderr.strip()[-500:]}")
    finally:
        os.unlink(lines)


def _train_file(lines: str, params: dict, seed: int, path: str) -> None:
    import fasttext

    model = fasttext.train_supervised(
        input=lines, epoch=params["epoch"], lr=params["lr"], dim=params["dim"], wordNgrams=params["word_ngrams"],
        minCount=params["min_count"], ws=params["ws"], bucket=params["bucket"], thread=1, seed=seed, verbose=0,
    )
    model.save_model(path)


def check_label(path: str, label: str) -> None:
    """The model at local ``path`` loads (checked in a capped child process, once per machine) and has ``label``:
    a truncated or damaged file fails here, in one line, never in this process."""
    labels = fasttext_file.check(path)["labels"]
    if label not in labels:
        raise ValueError(f"{os.path.basename(path)}: the fastText model has no label {label!r} "
                         f"(its labels: {', '.join(labels[:10])})")


class FastTextScorer:
    def __init__(self, path: str, label: str) -> None:
        import fasttext

        if not os.path.isfile(path):
            raise FileNotFoundError(f"fastText model not found: {path}")
        try:
            self.model = fasttext.load_model(path)
        except ValueError as error:
            raise ValueError(f"{path} is not a fastText model: {error}") from None
        labels = self.model.get_labels()
        if label not in labels:
            raise ValueError(f"fastText model {path}: it has no label {label!r} (its labels: {', '.join(labels[:10])})")
        self.label = label

    def score(self, texts: list[str]) -> np.ndarray:
        """P(label) per text: every label's probability is asked for, so it is exact, not 1 - p of the top."""
        if not texts:
            return np.zeros(0)
        labels, probabilities = self.model.predict([one_line(t) for t in texts], k=-1)
        return np.array([
            next((float(p) for name, p in zip(names, probs) if name == self.label), 0.0)
            for names, probs in zip(labels, probabilities)
        ])


@lru_cache(maxsize=8)
def scorer(path: str, label: str) -> FastTextScorer:
    """One loaded model per worker process, checked before fastText loads it here."""
    check_label(path, label)
    return FastTextScorer(path, label)


if __name__ == "__main__":  # the training subprocess: LINES PARAMS_JSON SEED OUT
    _train_file(sys.argv[1], json.loads(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
