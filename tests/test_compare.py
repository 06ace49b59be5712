"""Paired seed comparisons against scipy's paired t-test and Holm's correction against a hand-worked family."""

import numpy as np
import pytest
from scipy import stats

from fourier_flax.finetune.compare import holm_adjust, metric_by_seed, paired_by_seed, paired_difference, shared_seeds


def test_paired_difference_matches_scipy_ttest_rel():
    treatment, baseline = [74.0, 73.3, 74.5, 72.9], [73.9, 73.5, 74.3, 72.0]
    diff = paired_difference(treatment, baseline)
    reference = stats.ttest_rel(treatment, baseline)
    d = np.array(treatment) - np.array(baseline)
    assert diff.pairs == 4
    assert diff.mean == pytest.approx(d.mean(), abs=1e-12)
    assert diff.standard_error == pytest.approx(np.sqrt(((d - d.mean()) ** 2).sum() / 3 / 4), rel=1e-12)
    assert diff.p_value == pytest.approx(reference.pvalue, rel=1e-10)


def test_pairing_removes_the_shared_seed_spread():
    # Seeds move both settings together by ±5; the treatment is always 1 higher: pairing sees it clearly.
    baseline = [70.0, 75.0, 80.0]
    diff = paired_difference([71.0, 76.1, 80.9], baseline)
    assert diff.mean == pytest.approx(1.0) and diff.p_value < 0.01
    assert stats.ttest_ind([71.0, 76.1, 80.9], baseline).pvalue > 0.5  # unpaired: lost in the spread


def test_degenerate_pairs():
    one = paired_difference([1.0], [0.5])
    assert one.mean == 0.5 and np.isnan(one.standard_error) and np.isnan(one.p_value) and one.pairs == 1
    constant = paired_difference([2.0, 3.0], [1.0, 2.0])
    assert constant.standard_error == 0.0 and np.isnan(constant.p_value)
    with pytest.raises(ValueError, match="equal-length"):
        paired_difference([1.0, 2.0], [1.0])
    with pytest.raises(ValueError, match="non-empty"):
        paired_difference([], [])


def test_holm_by_hand():
    # Sorted: 0.005*4 = 0.02, 0.01*3 = 0.03, 0.03*2 = 0.06, 0.04*1 = 0.04 -> raised to 0.06 (monotone).
    assert holm_adjust([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm_adjust([0.6, 0.9]) == pytest.approx([1.0, 1.0])  # capped at 1
    adjusted = holm_adjust([0.02, float("nan"), 0.04])  # nan neither adjusted nor counted
    assert adjusted[0] == pytest.approx(0.04) and np.isnan(adjusted[1]) and adjusted[2] == pytest.approx(0.04)


RECORDS = [
    {"task": "stsb", "method": "fourierft", "seed": 0, "dev_metric": 80.0},
    {"task": "stsb", "method": "fourierft", "seed": 2, "dev_metric": 79.0},
    {"task": "stsb", "method": "lora", "seed": 0, "dev_metric": 77.0},
    {"task": "stsb", "method": "lora", "seed": 1, "dev_metric": 78.0},
    {"task": "stsb", "method": "lora", "seed": 2, "dev_metric": 77.5},
    {"task": "rte", "method": "lora", "seed": 0, "dev_metric": 52.0},
    {"task": "stsb", "method": "uniform", "center_frequency": 50.0, "seed": 0, "dev_metric": 1.0},
]


def test_metric_by_seed_selects_by_fields_and_reads_missing_fields_as_none():
    assert metric_by_seed(RECORDS, task="stsb", method="lora") == {0: 77.0, 1: 78.0, 2: 77.5}
    assert metric_by_seed(RECORDS, method="lora", task="rte") == {0: 52.0}
    assert metric_by_seed(RECORDS, task="stsb", method="fourierft", center_frequency=None) == {0: 80.0, 2: 79.0}
    assert metric_by_seed(RECORDS, task="stsb", center_frequency=50.0) == {0: 1.0}
    assert metric_by_seed(RECORDS, task="cola") == {}


def test_metric_by_seed_refuses_an_ambiguous_match():
    with pytest.raises(ValueError, match="two records of seed 0 .* add the fields"):
        metric_by_seed(RECORDS, task="stsb")


def test_pairing_uses_only_the_seeds_both_settings_have():
    ours = metric_by_seed(RECORDS, task="stsb", method="fourierft")
    theirs = metric_by_seed(RECORDS, task="stsb", method="lora")
    assert shared_seeds(ours, theirs) == [0, 2]
    assert shared_seeds(ours, theirs, {2: 0.0, 5: 1.0}) == [2]
    diff = paired_by_seed(ours, theirs)
    # Seed 0: 80 - 77 = 3; seed 2: 79 - 77.5 = 1.5 (seed 1 has no FourierFT run and drops out).
    assert diff.pairs == 2 and diff.mean == pytest.approx(2.25)
    assert diff.standard_error == pytest.approx(np.std([3.0, 1.5], ddof=1) / np.sqrt(2))
    assert paired_by_seed(ours, metric_by_seed(RECORDS, task="rte", method="fourierft")) is None


def test_half_width_is_scipys_paired_t_interval():
    a, b = [74.0, 73.3, 74.5, 72.9], [73.9, 73.5, 74.3, 72.1]
    diff = paired_difference(a, b)
    d = np.subtract(a, b)
    for confidence in (0.95, 0.8):
        low, high = stats.t.interval(confidence, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
        np.testing.assert_allclose(diff.half_width(confidence), (high - low) / 2, rtol=1e-12)
    assert np.isnan(paired_difference([1.0], [0.5]).half_width())
