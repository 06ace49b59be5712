"""delta_w + peft_entries reproduce PEFT's own FourierFTLayer.get_delta_weight (real torch + peft)."""

import numpy as np
import pytest

from fourier_flax.methods.fourierft import delta_w, peft_entries

torch = pytest.importorskip("torch")
peft = pytest.importorskip("peft")

pytestmark = pytest.mark.torch


def peft_delta_weight(in_features: int, out_features: int, n: int, seed: int, scaling: float, init_weights: bool):
    """PEFT's ΔW (out, in) and spectrum for a single nn.Linear adapted by FourierFT."""
    torch.manual_seed(0)
    model = torch.nn.Sequential()
    model.add_module("lin", torch.nn.Linear(in_features, out_features))
    config = peft.FourierFTConfig(
        target_modules=["lin"], n_frequency=n, scaling=scaling, random_loc_seed=seed, init_weights=init_weights
    )
    layer = peft.get_peft_model(model, config).base_model.model.lin
    with torch.no_grad():
        return layer.get_delta_weight("default").numpy(), layer.fourierft_spectrum["default"].numpy()


@pytest.mark.parametrize(
    "in_features, out_features, n, seed, scaling",
    [(32, 32, 100, 777, 150.0), (48, 20, 200, 3, 64.0), (17, 33, 561, 12345, 1.0), (768, 768, 1000, 777, 150.0),
     (384, 1536, 1000, 2024, 300.0)],
)  # fmt: skip
def test_delta_w_matches_peft_get_delta_weight(in_features, out_features, n, seed, scaling):
    peft_dw, spectrum = peft_delta_weight(in_features, out_features, n, seed, scaling, init_weights=False)
    entries = peft_entries((in_features, out_features), n, seed)  # Flax (in, out) kernel layout
    ours = np.asarray(delta_w(spectrum, entries, (in_features, out_features), scaling))
    assert ours.shape == peft_dw.T.shape
    # Both are float32 FFTs of the same spectrum: agreement to float32 rounding of the largest entry.
    np.testing.assert_allclose(ours, peft_dw.T, rtol=0, atol=2e-6 * np.abs(peft_dw).max())


def test_zero_init_matches_peft():
    peft_dw, spectrum = peft_delta_weight(16, 24, 50, 777, 150.0, init_weights=True)
    assert not spectrum.any()
    np.testing.assert_array_equal(np.asarray(delta_w(spectrum, peft_entries((16, 24), 50, 777), (16, 24), 150.0)), 0)
    np.testing.assert_array_equal(peft_dw, 0)
