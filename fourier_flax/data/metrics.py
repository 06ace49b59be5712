"""GLUE metrics in numpy, as reported in the FourierFT paper.

Headline metric per task (``GlueTask.metric``): Matthews correlation for CoLA, Pearson for STS-B,
accuracy otherwise. Extras: F1 for MRPC, Spearman for STS-B, accuracy for CoLA.

Usage::

    glue_metric("cola", logits, labels)       # logits (N, 2) or class ids (N,)
    # {"matthews_correlation": 0.57, "accuracy": 0.82}
    glue_metric("stsb", scores, gold_scores)  # (N,) or (N, 1) floats
    # {"pearson": 0.88, "spearman": 0.87}
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike

from fourier_flax.data.glue import GlueTask, get_task

__all__ = ["accuracy", "binary_f1", "glue_metric", "matthews_corrcoef", "pearson", "spearman"]


def accuracy(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Fraction of equal entries; both (N,)."""
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    return float(np.mean(predictions == labels))


def binary_f1(predictions: ArrayLike, labels: ArrayLike, positive: int = 1) -> float:
    """F1 of class ``positive``: 2 TP / (2 TP + FP + FN); 0.0 when that is 0 / 0."""
    pred_pos = np.asarray(predictions) == positive
    true_pos = np.asarray(labels) == positive
    tp = np.sum(pred_pos & true_pos)
    denominator = 2 * tp + np.sum(pred_pos & ~true_pos) + np.sum(~pred_pos & true_pos)
    return float(2 * tp / denominator) if denominator else 0.0


def matthews_corrcoef(predictions: ArrayLike, labels: ArrayLike) -> float:
    """Multiclass Matthews correlation (Gorodkin's R_K, as sklearn); 0.0 when undefined.

    With confusion matrix C (rows true, columns predicted), s = N, c = trace(C),
    t = row sums, p = column sums: (c s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)).
    For two classes this is (TP TN - FP FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)).
    """
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    _, codes = np.unique(np.concatenate([labels, predictions]), return_inverse=True)
    k = int(codes.max()) + 1 if codes.size else 0
    n = len(labels)
    confusion = np.zeros((k, k), dtype=np.float64)
    np.add.at(confusion, (codes[:n], codes[n:]), 1.0)
    t, p = confusion.sum(axis=1), confusion.sum(axis=0)
    s, c = confusion.sum(), np.trace(confusion)
    denominator = np.sqrt((s * s - p @ p) * (s * s - t @ t))
    return float((c * s - t @ p) / denominator) if denominator else 0.0


def pearson(x: ArrayLike, y: ArrayLike) -> float:
    """Pearson correlation of two (N,) vectors; nan if either is constant."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    xc, yc = x - x.mean(), y - y.mean()
    denominator = np.sqrt((xc @ xc) * (yc @ yc))
    return float(xc @ yc / denominator) if denominator else float("nan")


def _average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks with ties given their mean rank (scipy's ``rankdata(method="average")``)."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x), dtype=np.float64)
    ranks[order] = np.repeat((starts + ends + 1) / 2.0, ends - starts)
    return ranks


def spearman(x: ArrayLike, y: ArrayLike) -> float:
    """Spearman rank correlation: Pearson of average ranks; nan if either is constant."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    return pearson(_average_ranks(x), _average_ranks(y))


def glue_metric(task: str | GlueTask, predictions: ArrayLike, labels: ArrayLike) -> dict[str, float]:
    """Scores predictions for one GLUE task; the headline key is ``get_task(task).metric``.

    Args:
        task: task name or spec.
        predictions: classification: class ids (N,) or logits (N, C) (argmax taken);
            regression: scores (N,) or (N, 1).
        labels: (N,) class ids or gold scores.

    Returns:
        CoLA ``{"matthews_correlation", "accuracy"}``; STS-B ``{"pearson", "spearman"}``;
        MRPC ``{"accuracy", "f1"}``; SST-2, QNLI, RTE ``{"accuracy"}``.

    Example::

        glue_metric("mrpc", np.array([1, 0, 1]), np.array([1, 1, 1]))
        # {"accuracy": 0.667, "f1": 0.8}
    """
    task = get_task(task)
    predictions, labels = np.asarray(predictions), np.asarray(labels)
    if task.is_regression:
        predictions = predictions.reshape(len(predictions), -1)
        if predictions.shape[1] != 1:
            raise ValueError(f"{task.name} expects (N,) or (N, 1) scores, got {predictions.shape}")
        predictions = predictions[:, 0]
    elif predictions.ndim == 2:
        predictions = predictions.argmax(axis=-1)
    if predictions.shape != labels.shape:
        raise ValueError(f"predictions {predictions.shape} and labels {labels.shape} differ")
    if task.is_regression:
        return {"pearson": pearson(predictions, labels), "spearman": spearman(predictions, labels)}
    result = {"accuracy": accuracy(predictions, labels)}
    if task.metric == "matthews_correlation":
        result = {"matthews_correlation": matthews_corrcoef(predictions, labels)} | result
    if task.name == "mrpc":
        result["f1"] = binary_f1(predictions, labels)
    return result
