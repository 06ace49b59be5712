"""spectral_matmul: x @ ΔW without ΔW, against the float64 closed form (non-square and odd shapes, shared and
per-example coefficients), gradients against autodiff through x @ delta_w, jit and vmap."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fourier_flax.methods.fourierft import delta_w, peft_entries, spectral_matmul, uniform_entries
from fourier_flax.methods.fourierft.spectral_matmul import fold_tables

SHAPES = [(16, 16), (24, 10), (9, 15), (7, 5)]


def setup(shape, n, lead=(3, 4), seed=0):
    rng = np.random.default_rng(seed)
    entries = uniform_entries(shape, n, seed)
    x = rng.standard_normal((*lead, shape[0])).astype(np.float32)
    return rng, entries, x


@pytest.mark.parametrize("shape", SHAPES)
def test_shared_coefficients_equal_the_float64_closed_form(shape, reference_delta_w):
    rng, entries, x = setup(shape, n=min(20, shape[0] * shape[1]))
    c = rng.standard_normal(entries.shape[1]).astype(np.float32)
    want = x.astype(np.float64) @ reference_delta_w(c, entries, shape, 7.0)
    got = np.asarray(jax.jit(spectral_matmul, static_argnums=3)(jnp.asarray(x), jnp.asarray(c), entries, shape, 7.0))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-5 * np.abs(want).max())


@pytest.mark.parametrize("shape", SHAPES)
def test_per_example_coefficients_equal_each_examples_own_update(shape, reference_delta_w):
    rng, entries, x = setup(shape, n=min(12, shape[0] * shape[1]))
    c = rng.standard_normal((3, entries.shape[1])).astype(np.float32)  # one adapter per example
    got = np.asarray(spectral_matmul(jnp.asarray(x), jnp.asarray(c), entries, shape, 3.0))
    for b in range(3):
        want = x[b].astype(np.float64) @ reference_delta_w(c[b], entries, shape, 3.0)
        np.testing.assert_allclose(got[b], want, rtol=0, atol=2e-5 * np.abs(want).max())


@pytest.mark.parametrize("per_example", [False, True])
def test_gradients_equal_autodiff_through_delta_w(per_example):
    shape = (24, 10)
    rng, entries, x = setup(shape, n=30)
    c = rng.standard_normal((3, 30) if per_example else (30,)).astype(np.float32)
    dy = jnp.asarray(rng.standard_normal((3, 4, shape[1])), jnp.float32)

    def through_delta_w(x, c, alpha):
        if per_example:
            updates = jax.vmap(lambda cb: delta_w(cb, entries, shape, alpha))(c)
            return jnp.sum(jnp.einsum("btp,bpq->btq", x, updates) * dy)
        return jnp.sum((x @ delta_w(c, entries, shape, alpha)) * dy)

    def spectral(x, c, alpha):
        return jnp.sum(spectral_matmul(x, c, entries, shape, alpha) * dy)

    args = (jnp.asarray(x), jnp.asarray(c), jnp.float32(5.0))
    for got, want in zip(
        jax.grad(spectral, (0, 1, 2))(*args), jax.grad(through_delta_w, (0, 1, 2))(*args), strict=True
    ):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4 * float(jnp.abs(want).max()))


def test_vmap_over_adapters_and_peft_entries():
    shape = (32, 16)
    entries = peft_entries(shape, 40, seed=777)
    rng = np.random.default_rng(1)
    x = jnp.asarray(rng.standard_normal((5, shape[0])), jnp.float32)
    cs = jnp.asarray(rng.standard_normal((4, 40)), jnp.float32)
    mapped = jax.vmap(lambda c: spectral_matmul(x, c, entries, shape, 2.0))(cs)
    for k in range(4):
        np.testing.assert_allclose(mapped[k], x @ delta_w(cs[k], entries, shape, 2.0), rtol=0, atol=1e-5)


def test_bad_shapes_name_the_problem():
    entries = uniform_entries((8, 6), 5, 0)
    with pytest.raises(ValueError, match="features"):
        spectral_matmul(jnp.ones((2, 7)), jnp.ones(5), entries, (8, 6), 1.0)
    with pytest.raises(ValueError, match="per-example coefficients"):
        spectral_matmul(jnp.ones((2, 3, 8)), jnp.ones((3, 5)), entries, (8, 6), 1.0)


def test_fold_tables_list_every_entry_of_each_half_spectrum_bin():
    index = np.array([0, 3, 5, 3, 9, 1, 8])  # size 10: half bins 0..5
    direct, mirror = fold_tables(index, 10)
    for q in range(6):
        assert sorted(v for v in direct[q] if v < len(index)) == [k for k in range(7) if index[k] == q]
        assert sorted(v for v in mirror[q] if v < len(index)) == [k for k in range(7) if index[k] == (10 - q) % 10]


@pytest.mark.parametrize("shape", [(24, 10), (9, 15)])
def test_traced_entries_take_the_scatter_path_with_equal_results(shape):
    """Concrete entries gather through fold_tables; traced ones scatter: both give the same values and grads."""
    rng, entries, x = setup(shape, n=40)
    c = jnp.asarray(rng.standard_normal((3, 40)), jnp.float32)
    dy = jnp.asarray(rng.standard_normal((3, 4, shape[1])), jnp.float32)

    def loss(x, c, entries):
        return jnp.sum(spectral_matmul(x, c, entries, shape, 2.0) * dy)

    concrete = jax.value_and_grad(lambda x, c: loss(x, c, entries), (0, 1))(jnp.asarray(x), c)
    traced = jax.jit(jax.value_and_grad(loss, (0, 1)))(jnp.asarray(x), c, jnp.asarray(entries))
    for got, want in zip(jax.tree.leaves(traced), jax.tree.leaves(concrete), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * float(jnp.abs(want).max()))
