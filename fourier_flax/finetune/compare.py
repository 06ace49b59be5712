"""Comparing two settings run on the same seeds: paired differences, a paired t-test and Holm's correction.

Runs of two settings with the same seed share the head's initialisation, the dropout masks and the data order, so
the per-seed difference cancels most of the seed-to-seed spread that an unpaired comparison of means keeps.

Example::

  diff = paired_difference([74.0, 73.3, 74.5], [73.9, 73.5, 74.3])  # f_c = 0 vs uniform, seeds 0-2
  diff.mean, diff.standard_error, diff.p_value
  holm_adjust([0.01, 0.04, 0.03, 0.005])  # -> [0.03, 0.06, 0.06, 0.02]
  lora = metric_by_seed(records, task="stsb", method="lora")  # {seed: dev_metric} from a runs JSONL
  paired_by_seed(metric_by_seed(records, task="stsb", method="fourierft"), lora)  # over the shared seeds
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import stats


@dataclasses.dataclass(frozen=True)
class PairedDifference:
    """``treatment − baseline`` over paired seeds.

    Attributes:
      mean: mean of the per-seed differences.
      standard_error: their sample standard deviation / √pairs (nan for one pair).
      p_value: two-sided paired t-test of mean zero, ``pairs − 1`` degrees of freedom (nan below two pairs or when
        every difference is equal).
      pairs: how many seeds both settings have.
    """

    mean: float
    standard_error: float
    p_value: float
    pairs: int

    def half_width(self, confidence: float = 0.95) -> float:
        """Half the paired-t ``confidence`` interval of the mean: ``t(pairs − 1) quantile · standard_error``
        (nan for one pair)."""
        if self.pairs < 2:
            return float("nan")
        return float(stats.t.isf((1 - confidence) / 2, self.pairs - 1) * self.standard_error)


def paired_difference(treatment: Sequence[float], baseline: Sequence[float]) -> PairedDifference:
    """Mean, standard error and paired t-test p-value of ``treatment[i] − baseline[i]``.

    Args:
      treatment: one metric per seed, shape ``(pairs,)``.
      baseline: the same seeds' metrics of the other setting, in the same order.
    """
    a, b = np.asarray(treatment, np.float64), np.asarray(baseline, np.float64)
    if a.shape != b.shape or a.ndim != 1 or a.size == 0:
        raise ValueError(f"need two equal-length, non-empty 1-d sequences of paired seeds; got {a.shape}, {b.shape}")
    diff = a - b
    if diff.size < 2:
        return PairedDifference(float(diff[0]), float("nan"), float("nan"), 1)
    se = float(diff.std(ddof=1) / np.sqrt(diff.size))
    if se == 0.0:
        return PairedDifference(float(diff.mean()), 0.0, float("nan"), diff.size)
    t = diff.mean() / se
    return PairedDifference(float(diff.mean()), se, float(2 * stats.t.sf(abs(t), diff.size - 1)), diff.size)


def metric_by_seed(records: Iterable[Mapping[str, Any]], metric: str = "dev_metric", **match: Any) -> dict[int, float]:
    """``{seed: record[metric]}`` over the run records whose fields equal ``match`` (a missing field is None).

    Raises:
      ValueError: two matching records share a seed (``match`` does not single out one setting).
    """
    by_seed: dict[int, float] = {}
    for record in records:
        if all(record.get(field) == value for field, value in match.items()):
            if record["seed"] in by_seed:
                raise ValueError(
                    f"two records of seed {record['seed']} match {match}; add the fields that tell them apart"
                )
            by_seed[record["seed"]] = record[metric]
    return by_seed


def shared_seeds(*by_seed: Mapping[int, float]) -> list[int]:
    """The seeds every one of the ``{seed: metric}`` mappings has, ascending."""
    return sorted(set.intersection(*(set(m) for m in by_seed))) if by_seed else []


def paired_by_seed(treatment: Mapping[int, float], baseline: Mapping[int, float]) -> PairedDifference | None:
    """:func:`paired_difference` over the seeds both ``{seed: metric}`` mappings have; None when they share none."""
    seeds = shared_seeds(treatment, baseline)
    if not seeds:
        return None
    return paired_difference([treatment[s] for s in seeds], [baseline[s] for s in seeds])


def holm_adjust(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment of a family of p-values (family-wise error), in the input order.

    The i-th smallest p is multiplied by ``m − i`` (i from 0), made non-decreasing along that order and capped at
    1. nan p-values stay nan and do not count towards ``m``.
    """
    p = np.asarray(p_values, np.float64)
    adjusted = np.full(p.shape, np.nan)
    valid = np.flatnonzero(~np.isnan(p))
    order = valid[np.argsort(p[valid], kind="stable")]
    running = 0.0
    for rank, index in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[index]))
        adjusted[index] = running
    return adjusted.tolist()
