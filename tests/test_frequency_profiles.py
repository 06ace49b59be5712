"""The frequency picture of ``experiments/studies/frequency_profiles.py``, checked on updates of known spectrum."""

from __future__ import annotations

import numpy as np
import pytest
from experiment_scripts import load_experiment

SIDE = 384  # MiniLM's query/value kernels


@pytest.fixture(scope="module")
def profiles():
    return load_experiment("frequency_profiles")


def cells_below(radius: float) -> int:
    """Cells of a SIDE×SIDE shifted spectrum (offsets −192 … 191 on both axes) closer than ``radius`` to the centre."""
    return sum(
        1 for u in range(-SIDE // 2, SIDE // 2) for v in range(-SIDE // 2, SIDE // 2) if u * u + v * v < radius**2
    )


def test_bands_partition_the_whole_spectrum(profiles):
    masks = profiles.band_masks(profiles.centred_distance((SIDE, SIDE)))
    assert np.array_equal(np.sum(masks, axis=0), np.ones((SIDE, SIDE)))
    assert masks[0].sum() == cells_below(32)


def test_white_noise_is_flat_in_every_band(profiles):
    noise = np.random.default_rng(0).standard_normal((SIDE, SIDE))
    # The smallest band holds ~3,200 cells of exponentially distributed energy: its mean is within ~2% of 1.
    assert np.allclose(profiles.band_energy(noise), 1.0, atol=0.08)
    radial = profiles.radial_energy(noise)
    assert np.median(radial[20:190]) == pytest.approx(1.0, abs=0.05)


def test_a_low_frequency_cosine_sits_in_the_lowest_band_only(profiles):
    rows = np.arange(SIDE)[:, None]
    cosine = np.cos(2 * np.pi * 3 * rows / SIDE) * np.ones((1, SIDE))  # all energy at (±3, 0): D = 3
    energy = profiles.band_energy(cosine)
    # Mean per cell in band 0 over the mean per cell overall = all cells / cells in band 0.
    assert energy[0] == pytest.approx(SIDE * SIDE / cells_below(32), rel=1e-9)
    assert np.all(energy[1:] < 1e-20)
    radial = profiles.radial_energy(cosine)
    assert np.argmax(radial) == 3


def test_entry_distance_wraps_like_fftshift(profiles):
    entries = np.array([[0, SIDE - 1, 5, SIDE // 2], [0, 0, SIDE - 12, SIDE // 2]])
    expected = [0.0, 1.0, np.hypot(5, 12), np.hypot(SIDE // 2, SIDE // 2)]
    assert np.allclose(profiles.entry_distance(entries, (SIDE, SIDE)), expected)


def test_every_cell_as_an_entry_has_density_one(profiles):
    u, v = np.meshgrid(np.arange(SIDE), np.arange(SIDE), indexing="ij")
    distance = profiles.entry_distance(np.stack([u.ravel(), v.ravel()]), (SIDE, SIDE))
    assert np.allclose(profiles.entry_density(distance, (SIDE, SIDE)), 1.0)
