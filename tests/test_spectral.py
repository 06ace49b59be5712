"""delta_w against an independent float64 NumPy closed form, its gradient, stacking, dtypes and errors."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.test_util import check_grads

from fourier_flax.methods.fourierft import delta_w, delta_w_reference, uniform_entries

ALPHA = 150.0
# Float32 FFTs of these sizes stay well inside this bound relative to the largest |ΔW| (measured ~1e-7).
RTOL_OF_MAX = 2e-6


def cosine_basis(entries: np.ndarray, shape) -> np.ndarray:
    """B[p, q, l] = cos 2π(p u_l / d1 + q v_l / d2), float64 (d1, d2, n)."""
    d1, d2 = shape
    p = np.arange(d1, dtype=np.float64)[:, None, None]
    q = np.arange(d2, dtype=np.float64)[None, :, None]
    u, v = (np.asarray(axis, np.float64) for axis in entries)
    return np.cos(2 * np.pi * (p * u / d1 + q * v / d2))


def closed_form(c: np.ndarray, entries: np.ndarray, shape, alpha: float) -> np.ndarray:
    """ΔW[p, q] = alpha / (d1 d2) Σ_l c_l cos 2π(p u_l / d1 + q v_l / d2), float64."""
    basis = cosine_basis(entries, shape)
    return alpha / (shape[0] * shape[1]) * np.tensordot(basis, np.asarray(c, np.float64), axes=([2], [-1]))


def closed_form_grad(cotangent: np.ndarray, entries: np.ndarray, shape, alpha: float) -> np.ndarray:
    """d/dc of Σ G ΔW: alpha / (d1 d2) Σ_pq G[p, q] cos 2π(p u_l / d1 + q v_l / d2), float64."""
    basis = cosine_basis(entries, shape)
    return alpha / (shape[0] * shape[1]) * np.einsum("pq,pql->l", np.asarray(cotangent, np.float64), basis)


def edge_entries(shape, n_random: int, seed: int) -> np.ndarray:
    """Entries on (0,0), row 0, column 0, the Nyquist row/column and their crossings, plus random ones."""
    d1, d2 = shape
    special = {
        (0, 0),
        (0, d2 - 1),
        (d1 - 1, 0),
        (0, d2 // 2),
        (d1 // 2, 0),
        (d1 // 2, d2 // 2),
        (1, d2 - 1),
    }
    special |= {(d1 // 2, 3 % d2), (2 % d1, d2 // 2)}
    rng = np.random.default_rng(seed)
    flat = [u * d2 + v for u, v in special]
    others = rng.permutation(np.setdiff1d(np.arange(d1 * d2), flat))[:n_random]
    flat = np.concatenate([rng.permutation(flat), others])
    return np.stack(np.divmod(flat, d2)).astype(np.int32)


SHAPES = [(8, 8), (6, 10), (7, 5), (9, 12), (16, 33), (64, 48)]


class DeltaWTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*SHAPES)
    def test_matches_float64_closed_form(self, d1, d2):
        shape = (d1, d2)
        entries = edge_entries(shape, n_random=min(20, d1 * d2 - 12), seed=d1 * d2)
        c = np.random.default_rng(1).standard_normal(entries.shape[1]).astype(np.float32)
        fn = self.variant(lambda c: delta_w(c, entries, shape, ALPHA))
        with jax.numpy_dtype_promotion("strict"):
            got = fn(jnp.asarray(c))
        chex.assert_shape(got, shape)
        chex.assert_type(got, jnp.float32)
        want = closed_form(c, entries, shape, ALPHA)
        np.testing.assert_allclose(got, want, rtol=0, atol=RTOL_OF_MAX * np.abs(want).max())

    @chex.variants(with_jit=True, without_jit=True)
    @parameterized.parameters(*SHAPES)
    def test_gradient_matches_closed_form(self, d1, d2):
        shape = (d1, d2)
        entries = edge_entries(shape, n_random=min(20, d1 * d2 - 12), seed=d1 + d2)
        rng = np.random.default_rng(2)
        c = rng.standard_normal(entries.shape[1]).astype(np.float32)
        cotangent = rng.standard_normal(shape).astype(np.float32)
        grad = self.variant(jax.grad(lambda c: jnp.sum(cotangent * delta_w(c, entries, shape, ALPHA))))
        with jax.numpy_dtype_promotion("strict"):
            got = grad(jnp.asarray(c))
        want = closed_form_grad(cotangent, entries, shape, ALPHA)
        np.testing.assert_allclose(got, want, rtol=0, atol=RTOL_OF_MAX * np.abs(want).max() * 10)

    def test_check_grads(self):
        shape = (12, 10)
        entries = edge_entries(shape, n_random=8, seed=0)
        c = jnp.asarray(np.random.default_rng(3).standard_normal(entries.shape[1]), jnp.float32)
        check_grads(lambda c: delta_w(c, entries, shape, 2.0), (c,), order=1, modes=["rev"])
        check_grads(lambda a: delta_w(c, entries, shape, a), (jnp.float32(2.0),), order=1, modes=["rev"])

    def test_hessian_of_a_loss(self):
        shape = (10, 6)
        entries = edge_entries(shape, n_random=5, seed=1)
        n = entries.shape[1]
        c = jnp.asarray(np.random.default_rng(3).standard_normal(n), jnp.float32)
        hessian = jax.hessian(lambda c: jnp.sum(delta_w(c, entries, shape, 1.0) ** 2))(c)
        # ΔW = B c with B[pq, l] = cos(...) / (d1 d2), so the Hessian of |ΔW|² is 2 BᵀB (float64 reference).
        basis = closed_form(np.eye(n), entries, shape, 1.0).reshape(-1, n)
        np.testing.assert_allclose(hessian, 2 * basis.T @ basis, atol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_fast_path_matches_ifft2_reference(self):
        shape = (48, 80)
        entries = uniform_entries(shape, 300, seed=5)
        c = jnp.asarray(np.random.default_rng(4).standard_normal((3, 300)), jnp.float32)
        got = self.variant(lambda c: delta_w(c, entries, shape, ALPHA))(c)
        want = self.variant(lambda c: delta_w_reference(c, entries, shape, ALPHA))(c)
        chex.assert_trees_all_close(got, want, atol=1e-6 * float(jnp.abs(want).max()))

    def test_stacked_layers_equal_per_layer_calls(self):
        shape = (20, 12)
        entries = uniform_entries(shape, 30, seed=1)
        c = jnp.asarray(np.random.default_rng(5).standard_normal((2, 3, 30)), jnp.float32)
        stacked = jax.jit(delta_w, static_argnums=2)(c, entries, shape, ALPHA)
        chex.assert_shape(stacked, (2, 3, *shape))
        for i in range(2):
            for j in range(3):
                single = delta_w(c[i, j], entries, shape, ALPHA)
                np.testing.assert_allclose(stacked[i, j], single, atol=1e-6 * float(jnp.abs(single).max()))
        grad_stacked = jax.grad(lambda c: jnp.sum(delta_w(c, entries, shape, ALPHA) ** 2))(c)
        grad_single = jax.grad(lambda c: jnp.sum(delta_w(c, entries, shape, ALPHA) ** 2))(c[1, 2])
        np.testing.assert_allclose(grad_stacked[1, 2], grad_single, rtol=1e-6)

    def test_vmap_equals_stacking(self):
        shape = (10, 14)
        entries = uniform_entries(shape, 25, seed=2)
        c = jnp.asarray(np.random.default_rng(6).standard_normal((4, 25)), jnp.float32)
        mapped = jax.vmap(lambda c: delta_w(c, entries, shape, ALPHA))(c)
        chex.assert_trees_all_close(mapped, delta_w(c, entries, shape, ALPHA), atol=1e-7)

    @parameterized.parameters(jnp.bfloat16, jnp.float16)
    def test_low_precision_input_gives_float32(self, dtype):
        shape = (32, 24)
        entries = uniform_entries(shape, 50, seed=3)
        c = jnp.asarray(np.random.default_rng(7).standard_normal(50), dtype)
        got = jax.jit(delta_w, static_argnums=2)(c, entries, shape, ALPHA)
        chex.assert_type(got, jnp.float32)
        chex.assert_tree_all_finite(got)
        want = closed_form(np.asarray(c.astype(jnp.float32)), entries, shape, ALPHA)
        np.testing.assert_allclose(got, want, atol=RTOL_OF_MAX * np.abs(want).max())
        grad = jax.grad(lambda c: jnp.sum(delta_w(c, entries, shape, ALPHA)))(c)
        chex.assert_type(grad, dtype)

    def test_traced_entries_work_under_jit(self):
        shape = (9, 7)
        entries = edge_entries(shape, n_random=10, seed=4)
        c = np.random.default_rng(8).standard_normal(entries.shape[1]).astype(np.float32)
        got = jax.jit(delta_w, static_argnums=2)(c, jnp.asarray(entries), shape, ALPHA)
        np.testing.assert_allclose(got, closed_form(c, entries, shape, ALPHA), atol=1e-5)

    def test_retraces_once_per_shape(self):
        entries = uniform_entries((16, 16), 10, seed=0)
        fn = jax.jit(chex.assert_max_traces(delta_w, n=1), static_argnums=2)
        for seed in range(3):
            fn(jnp.full((10,), float(seed)), entries, (16, 16), ALPHA)


@pytest.mark.parametrize(
    "entries, c_len, match",
    [
        (np.array([[0, 8], [0, 1]]), 2, r"entry 1 = \(8, 1\) lies outside the 8x6 grid"),
        (np.array([[0, 1], [0, -1]]), 2, r"entry 1 = \(1, -1\) lies outside"),
        (np.array([[2, 2], [3, 3]]), 2, r"entry \(2, 3\) appears 2 times"),
        (np.array([[0, 1], [0, 1]]), 3, r"c has shape \(3,\) but entries hold n=2"),
        (np.array([0, 1, 2]), 3, r"entries must have shape \(2, n\)"),
    ],
)
def test_bad_entries_are_refused(entries, c_len, match):
    with pytest.raises(ValueError, match=match):
        delta_w(jnp.ones(c_len), entries, (8, 6), 1.0)


@pytest.mark.parametrize("shape", [(8, 8), (6, 10), (7, 5), (16, 33), (64, 48)])
def test_matmul_impl_matches_float64_and_fft(shape, reference_delta_w):
    """impl="matmul" (two matmuls of DFT columns) against the float64 closed form, and equal to impl="fft"."""
    n = min(20, shape[0] * shape[1])
    entries = uniform_entries(shape, n, seed=3)
    c = np.random.default_rng(1).standard_normal((2, n)).astype(np.float32)  # two stacked layers
    got = jax.jit(lambda c: delta_w(c, entries, shape, 7.0, impl="matmul"))(c)
    want = np.stack([reference_delta_w(layer, entries, shape, 7.0) for layer in c])
    np.testing.assert_allclose(got, want, rtol=0, atol=5e-6 * np.abs(want).max())
    np.testing.assert_allclose(got, delta_w(c, entries, shape, 7.0), rtol=0, atol=5e-6 * np.abs(want).max())
    check_grads(lambda c: delta_w(c, entries, shape, 7.0, impl="matmul"), (c[0],), order=1, modes=("fwd", "rev"))


def test_impl_choice_and_errors():
    from fourier_flax.methods.fourierft.spectral import choose_impl

    # The CPU rule against cells of results/bench_delta_w_impl.md (measured winners, forward + backward).
    assert choose_impl((4096, 4096), 100, backend="cpu") == "matmul"
    assert choose_impl((4096, 4096), 200, backend="cpu") == "fft"
    assert choose_impl((768, 3072), 50, backend="cpu") == "matmul"
    assert choose_impl((768, 3072), 100, backend="cpu") == "fft"
    assert choose_impl((768, 768), 50, backend="cpu") == "fft"
    assert choose_impl((768, 768), 1000, backend="cpu") == "fft"
    assert choose_impl((768, 768), 1000, backend="tpu") == "matmul"
    assert choose_impl((50000, 8), 10, backend="tpu") == "fft"
    entries = np.array([[0, 1], [1, 0]], np.int32)
    with pytest.raises(ValueError, match="impl must be"):
        delta_w(np.ones(2, np.float32), entries, (4, 4), 1.0, impl="dft")
    with pytest.raises(ValueError, match="use impl='fft'"):
        delta_w(np.ones(2, np.float32), entries, (50000, 4), 1.0, impl="matmul")
