"""The init-scale guardrail: ‖ΔW‖/‖W0‖ per layer against float64 NumPy, and when init_adapter warns."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fourier_flax import FourierFTConfig, LoraConfig, init_adapter
from fourier_flax.methods.fourierft import spectral_entries
from fourier_flax.update_scale import WARN_RATIO, check_update_scale, update_norm_ratios


def _tree(scale: float = 1.0):
    rng = np.random.default_rng(0)
    return {
        "a": {"query": {"kernel": jnp.asarray(scale * rng.standard_normal((48, 40)), jnp.float32)}},
        "b": {"query": {"kernel": jnp.asarray(scale * rng.standard_normal((32, 32)), jnp.float32)}},
    }


def _closed_form(c, entries, shape, alpha):
    p, q = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
    u, v = np.asarray(entries, np.float64)
    phase = 2 * np.pi * (p[..., None] * u / shape[0] + q[..., None] * v / shape[1])
    return alpha / (shape[0] * shape[1]) * (np.cos(phase) * np.asarray(c, np.float64)).sum(-1)


def test_ratios_match_float64_closed_form():
    config = FourierFTConfig(target_modules=["query"], n_frequency=50, scaling=30.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = init_adapter(_tree(), config, jax.random.key(1))
    ratios = update_norm_ratios(params, config)
    for path in ("a.query", "b.query"):
        module = params[path[0]]["query"]
        kernel = np.asarray(module["kernel"], np.float64)
        entries = spectral_entries(config, kernel.shape, 50)
        update = _closed_form(module["fourierft_spectrum"], entries, kernel.shape, 30.0)
        expected = np.linalg.norm(update) / np.linalg.norm(kernel)
        assert ratios[path] == pytest.approx(expected, rel=1e-5)


def test_init_adapter_warns_above_the_threshold_only():
    big = FourierFTConfig(target_modules=["query"], n_frequency=50, scaling=3000.0)
    with pytest.warns(UserWarning, match=r"‖ΔW‖/‖W0‖ = .* at 'b.query'.*Lower scaling"):
        init_adapter(_tree(), big, jax.random.key(0))
    small = FourierFTConfig(target_modules=["query"], n_frequency=50, scaling=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        params = init_adapter(_tree(), small, jax.random.key(0))
        assert max(update_norm_ratios(params, small).values()) < WARN_RATIO
        # zero init and LoRA start at ΔW = 0: nothing to warn about, whatever the scaling
        init_adapter(
            _tree(), FourierFTConfig(target_modules=["query"], scaling=1e6, init_weights=True), jax.random.key(0)
        )
        init_adapter(_tree(), LoraConfig(target_modules=["query"]), jax.random.key(0))
        # traced leaves (init inside jit/vmap) are not measured
        jax.jit(lambda key: init_adapter(_tree(), big, key))(jax.random.key(0))


def test_check_update_scale_threshold_is_a_parameter():
    config = FourierFTConfig(target_modules=["query"], n_frequency=50, scaling=30.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        params = init_adapter(_tree(), config, jax.random.key(0))
    largest = max(update_norm_ratios(params, config).values())
    with pytest.warns(UserWarning, match="2 of 2 layers|1 of 2 layers"):
        check_update_scale(params, config, threshold=largest / 2)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_update_scale(params, config, threshold=largest * 1.01)
