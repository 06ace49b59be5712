"""adapted_matmul against float64 NumPy and dense autodiff; the frozen-kernel rule; choose_backward."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.test_util import check_grads

from fourier_flax.methods.fourierft import delta_w
from fourier_flax.methods.fourierft.backward import adapted_matmul, choose_backward

ALPHA = 150.0
# Float32 FFTs and matmuls at these sizes stay ~1e-6 of the largest value; 1e-5 leaves room across CPUs.
RTOL_OF_MAX = 1e-5
# (d1, d2) and the leading axes of x: square, non-square both ways, odd, prime; the last spans three token
# blocks of the coefficient gradient (token_block = 256 for small n), the last one padded.
CASES = [
    ((8, 8), (2, 5)),
    ((6, 10), (3,)),
    ((12, 7), (2, 2, 4)),
    ((7, 5), (1,)),
    ((9, 9), (4, 3)),
    ((16, 33), (2 * 256 + 3,)),
]


@pytest.fixture(autouse=True)
def strict_promotion():
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        yield


def edge_entries(shape, n_random: int, seed: int) -> np.ndarray:
    """Entries at (0, 0), row 0, column 0, the Nyquist row/column and past-the-half columns, plus random ones."""
    d1, d2 = shape
    special = {(0, 0), (0, d2 - 1), (d1 - 1, 0), (0, d2 // 2), (d1 // 2, 0), (d1 // 2, d2 // 2), (1, d2 - 1)}
    special |= {(d1 // 2, 3 % d2), (2 % d1, d2 // 2), (d1 - 1, d2 - 2)}
    flat = np.array(sorted(u * d2 + v for u, v in special))
    rng = np.random.default_rng(seed)
    others = rng.permutation(np.setdiff1d(np.arange(d1 * d2), flat))[:n_random]
    flat = np.concatenate([rng.permutation(flat), others])
    return np.stack(np.divmod(flat, d2)).astype(np.int32)


def cosine_basis(entries, shape) -> np.ndarray:
    """``B[p, q, l] = cos 2π(p u_l / d1 + q v_l / d2) / (d1 d2)``, float64: ``ΔW = alpha · B c``."""
    d1, d2 = shape
    p = np.arange(d1, dtype=np.float64)[:, None, None]
    q = np.arange(d2, dtype=np.float64)[None, :, None]
    u, v = (np.asarray(axis, np.float64) for axis in entries)
    return np.cos(2 * np.pi * (p * u / d1 + q * v / d2)) / (d1 * d2)


def reference(x, kernel, c, g, entries, shape, alpha):
    """float64 ``y``, ``dL/dx``, ``dL/dc``, ``dL/dalpha`` of ``L = Σ g · (x @ (W0 + alpha B c))``."""
    x, kernel, c, g = (np.asarray(a, np.float64) for a in (x, kernel, c, g))
    basis = cosine_basis(entries, shape)
    w = kernel + alpha * basis @ c
    weight_grad = x.reshape(-1, shape[0]).T @ g.reshape(-1, shape[1])  # ∂L/∂W
    unit = np.einsum("pq,pql->l", weight_grad, basis)
    return x @ w, g @ w.T, alpha * unit, unit @ c


def problem(shape, lead, n_random=6, seed=0):
    """Entries, float32 ``x (*lead, d1)``, kernel, ``c`` and output cotangent ``g (*lead, d2)``."""
    entries = edge_entries(shape, n_random=min(n_random, shape[0] * shape[1] - 10), seed=seed)
    rng = np.random.default_rng(seed)
    x, kernel, c, g = (
        rng.standard_normal(s).astype(np.float32)
        for s in ((*lead, shape[0]), shape, entries.shape[1:], (*lead, shape[1]))
    )
    return entries, x, kernel, c, g


def all_eqns(jaxpr):
    """Every equation of ``jaxpr`` and of the jaxprs nested in its equations' parameters (jit, scan, …)."""
    for eqn in jaxpr.eqns:
        yield eqn
        for param in eqn.params.values():
            for sub in param if isinstance(param, tuple | list) else (param,):
                if isinstance(sub, jax.extend.core.ClosedJaxpr):
                    yield from all_eqns(sub.jaxpr)
                elif isinstance(sub, jax.extend.core.Jaxpr):
                    yield from all_eqns(sub)


def assert_close_of_max(got, want, tol=RTOL_OF_MAX):
    np.testing.assert_allclose(np.asarray(got, np.float64), want, rtol=0, atol=tol * np.abs(want).max())


class AdaptedMatmulTest(chex.TestCase):
    @chex.variants(with_jit=True)
    @parameterized.parameters(*CASES)
    def test_value_and_grads_match_float64(self, shape, lead):
        entries, x, kernel, c, g = problem(shape, lead=lead, seed=shape[0] * shape[1])

        def loss(x, c, alpha):
            y = adapted_matmul(x, kernel, c, entries, shape, alpha)
            return jnp.sum(g * y), y

        step = self.variant(jax.value_and_grad(loss, argnums=(0, 1, 2), has_aux=True))
        (_, y), (dx, dc, dalpha) = step(jnp.asarray(x), jnp.asarray(c), jnp.float32(ALPHA))
        y_want, dx_want, dc_want, dalpha_want = reference(x, kernel, c, g, entries, shape, ALPHA)
        chex.assert_shape((y, dx, dc), ((*lead, shape[1]), (*lead, shape[0]), c.shape))
        chex.assert_type((y, dx, dc, dalpha), jnp.float32)
        assert_close_of_max(y, y_want)
        assert_close_of_max(dx, dx_want)
        assert_close_of_max(dc, dc_want)
        np.testing.assert_allclose(dalpha, dalpha_want, rtol=RTOL_OF_MAX)

    @chex.variants(with_jit=True, without_jit=True)
    def test_grads_match_dense_autodiff(self):
        shape, lead = (9, 8), (2, 2, 4)
        entries, x, kernel, c, g = problem(shape, lead=lead, n_random=20, seed=1)

        def loss(fn):
            return lambda x, c: jnp.sum(g * fn(x, c))

        spectral = self.variant(
            jax.grad(loss(lambda x, c: adapted_matmul(x, kernel, c, entries, shape, ALPHA)), (0, 1))
        )
        dense = self.variant(jax.grad(loss(lambda x, c: x @ (kernel + delta_w(c, entries, shape, ALPHA))), (0, 1)))
        got, want = spectral(x, c), dense(x, c)
        # Same float32 math up to summation order: 2e-6 of the largest gradient.
        chex.assert_trees_all_close(got[0], want[0], atol=2e-6 * float(jnp.abs(want[0]).max()), rtol=0)
        chex.assert_trees_all_close(got[1], want[1], atol=2e-6 * float(jnp.abs(want[1]).max()), rtol=0)

    def test_check_grads(self):
        shape = (10, 7)
        entries, x, kernel, c, _ = problem(shape, lead=(3,), seed=2)
        fn = lambda x, c, alpha: adapted_matmul(x, kernel, c, entries, shape, alpha)  # noqa: E731
        check_grads(jax.jit(fn), (jnp.asarray(x), jnp.asarray(c), jnp.float32(2.0)), order=1, modes=["rev"], eps=1e-2)

    @chex.variants(with_jit=True)
    @parameterized.parameters(jnp.bfloat16, jnp.float32)
    def test_bfloat16_activations(self, kernel_dtype):
        shape = (12, 7)
        entries, x, kernel, c, g = problem(shape, lead=(4, 3), seed=3)
        x16, g16, kernel = jnp.asarray(x, jnp.bfloat16), jnp.asarray(g, jnp.bfloat16), jnp.asarray(kernel, kernel_dtype)

        def loss(x, c):
            return jnp.sum(g16 * adapted_matmul(x, kernel, c, entries, shape, ALPHA, dtype=jnp.bfloat16))

        dx, dc = self.variant(jax.grad(loss, (0, 1)))(x16, jnp.asarray(c))
        chex.assert_type((dx, dc), (jnp.bfloat16, jnp.float32))
        # dy = g16 exactly, so dc (float32 FFTs of the bf16 values) is as exact as in float32.
        _, dx_want, dc_want, _ = reference(x16, kernel, c, g16, entries, shape, ALPHA)
        assert_close_of_max(dc, dc_want)
        assert_close_of_max(dx, dx_want, tol=2e-2)  # bf16 W_eff and a bf16 matmul

    def test_compute_dtype_follows_nn_dense(self):
        shape = (6, 10)
        entries, x, kernel, c, _ = problem(shape, lead=(2,))
        x16 = jnp.asarray(x, jnp.bfloat16)

        def out_dtype(kernel, **kwargs):
            return jax.eval_shape(
                lambda x, k: adapted_matmul(x, k, c, entries, shape, ALPHA, **kwargs), x16, kernel
            ).dtype

        with jax.numpy_dtype_promotion("standard"):
            self.assertEqual(out_dtype(kernel), jnp.float32)
        self.assertEqual(out_dtype(kernel.astype(jnp.bfloat16)), jnp.bfloat16)
        self.assertEqual(out_dtype(kernel, dtype=jnp.bfloat16), jnp.bfloat16)
        with pytest.raises(jax.dtypes.TypePromotionError):
            out_dtype(kernel)  # like nn.Dense under strict promotion

    def test_vmap_over_a_leading_batch(self):
        shape = (9, 12)
        entries, x, kernel, c, g = problem(shape, lead=(3, 5), seed=4)

        def loss(x, c, g):
            return jnp.sum(g * adapted_matmul(x, kernel, c, entries, shape, ALPHA))

        per_example = jax.jit(jax.vmap(jax.grad(loss, (0, 1)), in_axes=(0, None, 0)))(x, c, g)
        for b in range(3):
            _, dx_want, dc_want, _ = reference(x[b], kernel, c, g[b], entries, shape, ALPHA)
            assert_close_of_max(per_example[0][b], dx_want)
            assert_close_of_max(per_example[1][b], dc_want)
        batched = jax.jit(jax.grad(lambda c: jnp.sum(jax.vmap(loss, (0, None, 0))(x, c, g))))(c)
        assert_close_of_max(batched, reference(x, kernel, c, g, entries, shape, ALPHA)[2])

    def test_backward_forms_no_weight_gradient(self):
        shape = (12, 20)
        entries, x, kernel, c, g = problem(shape, lead=(30,))

        def weight_sized_dots(fn, argnums):
            """The matmuls (in any sub-jaxpr) of the gradient with a d1 x d2 output, and how many there are."""
            jaxpr = jax.make_jaxpr(jax.grad(lambda x, c: jnp.sum(g * fn(x, c)), argnums))(x, c)
            dots = [e for e in all_eqns(jaxpr.jaxpr) if e.primitive.name == "dot_general" and e.outvars[0].aval.ndim]
            return [e for e in dots if sorted(e.outvars[0].aval.shape) == sorted(shape)], len(dots)

        dense = lambda x, c: x @ (kernel + delta_w(c, entries, shape, ALPHA))  # noqa: E731
        spectral = lambda x, c: adapted_matmul(x, kernel, c, entries, shape, ALPHA)  # noqa: E731
        self.assertLen(weight_sized_dots(dense, 1)[0], 1)  # xᵀ dy: what the spectral backward avoids
        self.assertEqual(weight_sized_dots(spectral, 1), ([], 1))  # only the forward matmul
        self.assertEqual(weight_sized_dots(spectral, (0, 1)), ([], 2))  # plus dy @ W_effᵀ

    @parameterized.parameters(jnp.float32, jnp.bfloat16)
    def test_kernel_gradient_when_the_kernel_is_differentiated(self, dtype):
        """jax.grad over a whole params tree: the kernel gets x^T dy (float64 reference), c its spectral grad;
        a frozen kernel costs no d1 x d2 product."""
        shape = (6, 10)
        entries, x, kernel, c, _ = problem(shape, lead=(4,))
        g = np.random.default_rng(5).standard_normal((4, 10))
        params = {"kernel": jnp.asarray(kernel, dtype), "c": jnp.asarray(c)}

        def loss(params):
            y = adapted_matmul(jnp.asarray(x, dtype), params["kernel"], params["c"], entries, shape, ALPHA)
            return jnp.sum(jnp.asarray(g, jnp.float32) * y.astype(jnp.float32))

        grads = jax.jit(jax.grad(loss))(params)
        self.assertEqual(grads["kernel"].dtype, dtype)
        want_kernel = np.asarray(x, np.float64).T @ g
        tol = 2e-6 if dtype == jnp.float32 else 2e-2
        assert_close_of_max(np.asarray(grads["kernel"], np.float64), want_kernel, tol)
        _, _, dc_want, _ = reference(x, kernel, c, g, entries, shape, ALPHA)
        if dtype == jnp.float32:
            assert_close_of_max(grads["c"], dc_want)
        dense = jax.grad(lambda p: jnp.sum(g * (x @ (p["kernel"] + delta_w(p["c"], entries, shape, ALPHA)))))
        want = dense({"kernel": jnp.asarray(kernel), "c": jnp.asarray(c)})
        if dtype == jnp.float32:
            chex.assert_trees_all_close(grads, want, rtol=1e-5, atol=1e-5)

    @parameterized.parameters(
        ({"kernel": np.zeros((6, 9), np.float32)}, "kernel has shape"),
        ({"c": np.zeros((2, 16), np.float32)}, "one layer's"),
        ({"x": np.zeros((4, 5), np.float32)}, "x must be"),
        ({"entries": np.zeros((2, 16), np.int32)}, "appears"),
    )
    def test_rejects_mismatched_inputs(self, override, message):
        shape = (6, 10)
        entries, x, kernel, c, _ = problem(shape, lead=(4,))
        args = {"x": x, "kernel": kernel, "c": c, "entries": entries, **override}
        with pytest.raises(ValueError, match=message):
            adapted_matmul(args["x"], args["kernel"], args["c"], args["entries"], shape, ALPHA)


class ChooseBackwardTest(parameterized.TestCase):
    @parameterized.parameters(
        # Cells of experiments/results/bench_backward.md whose winner is >= 1.4x faster.
        ((768, 3072), 128, 1000, "spectral"),
        ((1024, 1024), 512, 1000, "spectral"),
        ((768, 768), 4096, 16000, "dense"),
    )
    def test_measured_winners(self, shape, tokens, n, want):
        self.assertEqual(choose_backward(shape, tokens, n), want)

    def test_more_coefficients_never_favour_spectral(self):
        for shape in [(384, 384), (768, 768), (768, 3072), (4096, 4096)]:
            for tokens in [1, 128, 4096, 65536]:
                choices = [choose_backward(shape, tokens, n) for n in (10, 1000, 10**5, shape[0] * shape[1])]
                self.assertEqual(choices, sorted(choices, key=["spectral", "dense"].index), (shape, tokens))
