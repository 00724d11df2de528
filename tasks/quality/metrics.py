"""Held-out agreement of a classifier with its labels: precision, recall and F1 at the
threshold, Spearman's rank correlation, and a confusion table."""

from __future__ import annotations

import numpy as np


def evaluate(labels: np.ndarray, predicted: np.ndarray, positive_from: float, regression: bool,
             threshold: float = 0.5) -> dict:
    """``labels``: the held-out labels (0-5 scores, or 0/1); ``predicted``: the model's scores
    (0-5 for a regressor, P(positive) otherwise). A document is positive when its label is at
    least ``positive_from``, and predicted positive when its score is at least ``positive_from``
    (regressor, after clip-and-round) or ``threshold`` (probability)."""
    labels = np.asarray(labels, dtype=np.float64)
    predicted = np.asarray(predicted, dtype=np.float64)
    truth = labels >= positive_from
    if regression:
        rounded = np.rint(np.clip(predicted, 0, 5))
        guess = rounded >= positive_from
    else:
        guess = predicted >= threshold
    tp = int(np.sum(truth & guess))
    fp = int(np.sum(~truth & guess))
    fn = int(np.sum(truth & ~guess))
    tn = int(np.sum(~truth & ~guess))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    from scipy.stats import spearmanr  # (scipy.stats takes ~0.7 s to import: only where a model is evaluated)

    rho = float(spearmanr(labels, predicted).statistic) if len(set(labels)) > 1 and len(set(predicted)) > 1 else None
    result = {
        "held_out": int(len(labels)),
        "positives": int(truth.sum()),
        "precision": round(precision, 4),
        "recall": round(recall, 4),
        "f1": round(f1, 4),
        "accuracy": round((tp + tn) / len(labels), 4) if len(labels) else None,
        "spearman": None if rho is None or np.isnan(rho) else round(rho, 4),
        "confusion": {"tp": tp, "fp": fp, "fn": fn, "tn": tn},
    }
    if regression:  # the 6x6 table of label vs rounded prediction, FineWeb-Edu's view
        table = np.zeros((6, 6), dtype=int)
        for truth_value, guess_value in zip(np.rint(np.clip(labels, 0, 5)).astype(int), rounded.astype(int)):
            table[truth_value, guess_value] += 1
        result["confusion_scores"] = table.tolist()
    return result
