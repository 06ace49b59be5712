"""GLUE metrics against hand computations, closed forms and (if importable) scipy."""

from __future__ import annotations

import math

import numpy as np
import pytest

from fourier_flax.data import GLUE_TASKS, glue_metric
from fourier_flax.data.metrics import accuracy, binary_f1, matthews_corrcoef, pearson, spearman


def test_accuracy_and_f1_by_hand() -> None:
    assert accuracy([1, 0, 1, 1], [1, 1, 0, 1]) == 0.5
    # TP = 2 (rows 0, 3), FP = 1 (row 2), FN = 1 (row 1): F1 = 4 / 6.
    assert binary_f1([1, 0, 1, 1], [1, 1, 0, 1]) == pytest.approx(2 / 3)
    assert binary_f1([0, 0], [0, 0]) == 0.0  # no positives anywhere: 0 / 0 -> 0


def test_matthews_by_hand() -> None:
    # TP = 2, FP = 1, TN = 2, FN = 1: (2*2 - 1*1) / sqrt(3*3*3*3) = 1/3.
    assert matthews_corrcoef([1, 1, 0, 0, 1, 0], [1, 0, 0, 0, 1, 1]) == pytest.approx(1 / 3)
    assert matthews_corrcoef([0, 1, 0], [0, 1, 0]) == pytest.approx(1.0)
    assert matthews_corrcoef([1, 0, 1], [0, 1, 0]) == pytest.approx(-1.0)
    assert matthews_corrcoef([1, 1, 1, 1], [1, 0, 1, 0]) == 0.0  # constant prediction


def test_matthews_matches_closed_forms() -> None:
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 500)
    preds = np.where(rng.random(500) < 0.7, labels, 1 - labels)
    tp = np.sum((preds == 1) & (labels == 1))
    tn = np.sum((preds == 0) & (labels == 0))
    fp = np.sum((preds == 1) & (labels == 0))
    fn = np.sum((preds == 0) & (labels == 1))
    binary = (tp * tn - fp * fn) / math.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    assert matthews_corrcoef(preds, labels) == pytest.approx(binary, abs=1e-12)
    # Binary MCC is also the Pearson correlation of the 0/1 vectors.
    assert matthews_corrcoef(preds, labels) == pytest.approx(np.corrcoef(preds, labels)[0, 1])

    # Multiclass: R_K = sum_k cov(X_k, Y_k) / sqrt(sum_k var(X_k) * sum_k var(Y_k)), one-hot X, Y.
    labels3 = rng.integers(0, 3, 400)
    preds3 = np.where(rng.random(400) < 0.6, labels3, rng.integers(0, 3, 400))
    x, y = np.eye(3)[preds3], np.eye(3)[labels3]
    xc, yc = x - x.mean(0), y - y.mean(0)
    rk = np.sum(xc * yc) / math.sqrt(np.sum(xc * xc) * np.sum(yc * yc))
    assert matthews_corrcoef(preds3, labels3) == pytest.approx(rk, abs=1e-12)


def test_pearson_and_spearman_by_hand() -> None:
    # x - mean = (-1, 0, 1), y - mean = (-4/3, -1/3, 5/3): r = 3 / sqrt(2 * 42/9) = 9 / sqrt(84).
    assert pearson([1, 2, 3], [1, 2, 4]) == pytest.approx(9 / math.sqrt(84))
    # Ties: ranks (1, 2.5, 2.5, 4) vs (1, 3, 2, 4): r = 4.5 / sqrt(4.5 * 5).
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
    assert math.isnan(pearson([1, 1, 1], [1, 2, 3]))


def test_spearman_without_ties_matches_closed_form() -> None:
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=200), rng.normal(size=200)
    y = x + y
    d = np.argsort(np.argsort(x)) - np.argsort(np.argsort(y))
    n = len(x)
    assert spearman(x, y) == pytest.approx(1 - 6 * np.sum(d**2) / (n * (n * n - 1)), abs=1e-12)
    assert pearson(x, y) == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)


def test_against_scipy_if_available() -> None:
    stats = pytest.importorskip("scipy.stats", reason="scipy not installed (optional reference)")
    rng = np.random.default_rng(2)
    x = np.round(rng.uniform(0, 5, 300), 1)  # many ties, like STS-B scores
    y = np.round(x + rng.normal(0, 1, 300), 1)
    assert pearson(x, y) == pytest.approx(stats.pearsonr(x, y)[0], abs=1e-12)
    assert spearman(x, y) == pytest.approx(stats.spearmanr(x, y)[0], abs=1e-12)


def test_glue_metric_keys_and_inputs() -> None:
    labels = np.array([1, 0, 1, 1])
    logits = np.array([[0.1, 0.9], [0.8, 0.2], [0.6, 0.4], [0.3, 0.7]])  # argmax 1, 0, 0, 1
    for task in ("sst2", "qnli", "rte"):
        assert glue_metric(task, logits, labels) == {"accuracy": 0.75}
    mrpc = glue_metric("mrpc", logits, labels)
    assert mrpc == {"accuracy": 0.75, "f1": pytest.approx(0.8)}  # TP 2, FN 1
    cola = glue_metric("cola", np.array([1, 0, 0, 1]), labels)
    # TP 2, TN 1, FP 0, FN 1: 2 / sqrt(2 * 3 * 1 * 2).
    assert cola == {"matthews_correlation": pytest.approx(2 / math.sqrt(12)), "accuracy": 0.75}
    stsb = glue_metric("STS-B", np.array([[1.0], [2.0], [4.0]]), np.array([1.0, 2.0, 3.0]))
    assert stsb == {"pearson": pytest.approx(9 / math.sqrt(84)), "spearman": pytest.approx(1.0)}
    for name, task in GLUE_TASKS.items():
        preds = np.array([1.0, 2.0, 3.0]) if task.is_regression else np.array([0, 1, 1])
        assert task.metric in glue_metric(name, preds, np.array([0, 1, 1]))


def test_glue_metric_rejects_bad_shapes() -> None:
    with pytest.raises(ValueError, match="differ"):
        glue_metric("rte", np.array([0, 1]), np.array([0, 1, 1]))
    with pytest.raises(ValueError, match=r"\(N,\) or \(N, 1\)"):
        glue_metric("stsb", np.zeros((3, 2)), np.zeros(3))
