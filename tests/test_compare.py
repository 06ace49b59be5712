"""Paired seed comparisons against scipy's paired t-test and Holm's correction against a hand-worked family."""

import numpy as np
import pytest
from scipy import stats

from fourier_flax.finetune.compare import holm_adjust, paired_difference


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
