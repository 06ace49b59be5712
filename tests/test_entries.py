"""Entry samplers: validity, determinism, PEFT parity (real torch), and the frequency bias."""

import numpy as np
import pytest

from fourier_flax.methods.fourierft import bandpass_probability, frequency_biased_entries, peft_entries, uniform_entries
from fourier_flax.methods.fourierft.entries import centre_distance
from fourier_flax.methods.fourierft.torch_randperm import randperm_prefix

torch = pytest.importorskip("torch")


def torch_randperm_prefix(size: int, n: int, seed: int) -> np.ndarray:
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))[:n].numpy()


@pytest.mark.torch
@pytest.mark.parametrize(
    "size, n, seed",
    [(1, 1, 0), (2, 2, 5), (10, 10, 0), (97, 50, 1), (1000, 1000, 123), (768 * 768, 1000, 777),
     (384 * 1536, 1000, 2**32 + 7), (1024 * 1024, 3000, 0), (768 * 3072, 1000, 42),
     (4096 * 4096, 1000, 777), (4096 * 11008, 1000, 777), (4096 * 11008, 200, 2024)],
)  # fmt: skip
def test_randperm_prefix_matches_torch(size, n, seed):
    np.testing.assert_array_equal(randperm_prefix(size, n, seed), torch_randperm_prefix(size, n, seed))


@pytest.mark.torch
@pytest.mark.parametrize("seed", range(20))
def test_randperm_prefix_matches_torch_over_seeds(seed):
    size = int(np.random.default_rng(seed).integers(2, 5000))
    n = int(np.random.default_rng(seed + 100).integers(1, size + 1))
    np.testing.assert_array_equal(randperm_prefix(size, n, seed), torch_randperm_prefix(size, n, seed))


@pytest.mark.torch
@pytest.mark.parametrize("in_features, out_features", [(768, 768), (768, 3072), (3072, 768), (5, 3)])
def test_peft_entries_are_transposed_peft_indices(in_features, out_features):
    n = min(1000, in_features * out_features)
    idx = torch_randperm_prefix(out_features * in_features, n, 777)
    peft_rows, peft_cols = idx // in_features, idx % in_features  # on PyTorch's (out, in) weight
    flax = peft_entries((in_features, out_features), n, 777)  # Flax (in, out) kernel
    np.testing.assert_array_equal(flax, np.stack([peft_cols, peft_rows]))
    torch_layout = peft_entries((out_features, in_features), n, 777, grid="out_in")
    np.testing.assert_array_equal(torch_layout, np.stack([peft_rows, peft_cols]))


def assert_valid(entries: np.ndarray, shape, n: int):
    assert entries.shape == (2, n) and entries.dtype == np.int32
    assert (entries[0] >= 0).all() and (entries[0] < shape[0]).all()
    assert (entries[1] >= 0).all() and (entries[1] < shape[1]).all()
    assert len(np.unique(entries[0].astype(np.int64) * shape[1] + entries[1])) == n


SAMPLERS = {
    "uniform": lambda shape, n, seed: uniform_entries(shape, n, seed),
    "peft": lambda shape, n, seed: peft_entries(shape, n, seed),
    "bias": lambda shape, n, seed: frequency_biased_entries(shape, n, seed, center_frequency=10.0, bandwidth=8.0),
}


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("shape, n", [((64, 48), 500), ((7, 5), 34), ((30, 30), 1)])
def test_samplers_are_valid_and_deterministic(name, shape, n):
    sample = SAMPLERS[name]
    first = sample(shape, n, 11)
    assert_valid(first, shape, n)
    np.testing.assert_array_equal(first, sample(shape, n, 11))
    if n > 1 and n < shape[0] * shape[1]:
        assert not np.array_equal(first, sample(shape, n, 12))


@pytest.mark.parametrize("name", SAMPLERS)
@pytest.mark.parametrize("n", [0, -3, 49])
def test_samplers_refuse_impossible_n(name, n):
    with pytest.raises(ValueError, match=rf"n={n} spectral entries do not fit a 8x6 kernel.*d1\*d2=48"):
        SAMPLERS[name]((8, 6), n, 0)


def test_frequency_bias_concentrates_where_the_filter_puts_probability():
    shape, fc, width = (256, 256), 60.0, 10.0
    entries = frequency_biased_entries(shape, 2000, 0, center_frequency=fc, bandwidth=width)
    distance = centre_distance(shape)
    sampled = distance[entries[0], entries[1]]
    probability = bandpass_probability(shape, fc, width)
    # Independent reference: the filter's own distribution of D (n ≪ d1·d2, so without-replacement ≈ iid).
    expected_mean = float((probability * distance).sum())
    expected_std = float(np.sqrt((probability * (distance - expected_mean) ** 2).sum()))
    assert abs(sampled.mean() - expected_mean) < 4 * expected_std / np.sqrt(len(sampled))
    band = np.abs(distance - fc) < width
    band_mass = float(probability[band].sum())
    assert abs(np.mean(band[entries[0], entries[1]]) - band_mass) < 0.03
    uniform = uniform_entries(shape, 2000, 0)
    assert np.mean(band[uniform[0], uniform[1]]) < 0.2 * band_mass


def test_frequency_bias_low_and_high_centres_differ():
    shape = (128, 128)
    low = frequency_biased_entries(shape, 300, 1, center_frequency=0.0, bandwidth=8.0)
    high = frequency_biased_entries(shape, 300, 1, center_frequency=50.0, bandwidth=8.0)
    distance = centre_distance(shape)
    assert distance[low[0], low[1]].max() < distance[high[0], high[1]].min()


def test_bandpass_probability_peaks_on_the_ring():
    probability = np.fft.fftshift(bandpass_probability((101, 101), 20.0, 5.0))
    np.testing.assert_allclose(probability.sum(), 1.0)
    assert probability[50, 50] == 0.0  # the centre (D=0) is excluded for f_c > 0
    assert probability[50, 70] > 100 * probability[50, 55]


def test_frequency_bias_errors():
    with pytest.raises(ValueError, match="bandwidth W must be > 0"):
        frequency_biased_entries((8, 8), 4, 0, center_frequency=1.0, bandwidth=0.0)
    with pytest.raises(ValueError, match="center_frequency f_c must be >= 0"):
        frequency_biased_entries((8, 8), 4, 0, center_frequency=-1.0, bandwidth=1.0)


def test_frequency_bias_refuses_more_entries_than_reachable_cells():
    # For f_c > 0 the centre (D = 0) has probability 0, so a full 7x5 grid cannot be drawn.
    with pytest.raises(ValueError, match="gives only 34 cells of the 7x5 grid a non-zero probability"):
        frequency_biased_entries((7, 5), 35, 0, center_frequency=10.0, bandwidth=8.0)


def test_randperm_prefix_errors():
    with pytest.raises(ValueError, match="n=5 and size=4"):
        randperm_prefix(4, 5, 0)
    with pytest.raises(ValueError, match="seed must be >= 0"):
        randperm_prefix(4, 2, -1)


def test_config_draws_its_entries_around_its_own_centre_frequency():
    """Swapping center_frequency and bandwidth where FourierFT draws its entries must fail: with f_c = 20 and
    W = 2 the drawn entries lie near radius 20 of the centred spectrum (swapped: f_c = 2, W = 20 gives a mean
    radius of 16.7), with f_c = 5 near radius 5."""
    from fourier_flax import FourierFTConfig
    from fourier_flax.methods.fourierft.entries import centre_distance, spectral_entries

    shape = (64, 64)
    distance = centre_distance(shape)

    def mean_radius(f_c, w):
        config = FourierFTConfig(
            target_modules=["q"], entry_sampling="frequency_bias", center_frequency=f_c, bandwidth=w
        )
        u, v = spectral_entries(config, shape, 200)
        return float(distance[u, v].mean())

    assert abs(mean_radius(20.0, 2.0) - 20.0) < 1.5
    assert abs(mean_radius(5.0, 2.0) - 5.0) < 1.5
