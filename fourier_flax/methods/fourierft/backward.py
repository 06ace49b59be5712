"""The adapted matmul ``x @ (W0 + ΔW)`` whose backward never forms the ``d1 × d2`` weight gradient.

Autodiff through ``x @ (W0 + delta_w(c))`` first builds the weight cotangent ``A = xᵀ dy`` (``d1 × d2``, one
more ``T·d1·d2`` matmul) and then reads it at the entries with a 2-D FFT. Since ``A`` is a sum of outer
products, its 2-D DFT factorises over tokens: with ``X̂ = fft(x, axis=-1)`` and ``Ŷ = fft(dy, axis=-1)``,

    Σ_pq A[p, q] e^{-2πi(p u / d1 + q v / d2)} = Σ_t X̂[t, u] Ŷ[t, v],

so ``dL/dc_l = alpha / (d1·d2) · Re Σ_t X̂[t, u_l] Ŷ[t, v_l]``: two 1-D real FFTs of the activations and an
``O(T·n)`` gathered product instead of a ``T·d1·d2`` matmul. For real inputs ``X̂[t, -u] = conj(X̂[t, u])``, so
``rfft`` suffices and entries past the half read their mirror, conjugated.

Whether this beats autodiff depends on shape, token count and ``n``; :func:`choose_backward` holds the rule
measured by ``experiments/benchmarks/bench_backward.py`` (results in ``experiments/results/bench_backward.md``).

Example::

  E = fourier_flax.methods.fourierft.peft_entries((768, 768), n=1000, seed=777)
  y = adapted_matmul(x, kernel, c, E, (768, 768), 150.0)  # x (..., 768) -> y (..., 768)
  dc = jax.grad(lambda c: loss(adapted_matmul(x, kernel, c, E, (768, 768), 150.0)))(c)
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import DTypeLike

from fourier_flax.methods.fourierft.spectral import Shape2D, check_entries, delta_w

# The coefficient gradient gathers (n, block) spectra per block of tokens; about 2^18 gathered values per block
# (256 tokens at n = 1000) kept them in cache and measured fastest of blocks of 16 to 1024 tokens.
GATHERED_PER_BLOCK = 2**18
MAX_TOKEN_BLOCK = 256


def _effective_kernel(kernel, c, entries, shape, alpha, dtype):
    """``W0 + ΔW`` built in float32, then cast to the compute dtype."""
    return (kernel.astype(jnp.float32) + delta_w(c, entries, shape, alpha)).astype(dtype)


def _matmul(x, w, precision):
    """``x (..., d1) @ w (d1, d2)``."""
    return lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)


def _half_index(index: jax.Array, size: int) -> tuple[jax.Array, jax.Array]:
    """Where ``index`` sits in an ``rfft`` of length ``size // 2 + 1``, and ±1 (−1: read conjugated)."""
    in_half = index <= size // 2
    return jnp.where(in_half, index, size - index), jnp.where(in_half, 1.0, -1.0).astype(jnp.float32)


def token_block(tokens: int, n: int) -> int:
    """Tokens per block of the coefficient gradient: a power of two near ``2^18 / n``, in ``[8, 256]``, ``<= T``."""
    block = 1 << max(3, (GATHERED_PER_BLOCK // n).bit_length() - 1)
    return min(block, MAX_TOKEN_BLOCK, tokens)


def _unit_coefficient_grad(x, dy, entries, shape):
    """``Re Σ_t X̂[t, u_l] Ŷ[t, v_l] / (d1·d2)``: ``dL/dc`` for ``alpha = 1``, float32 ``(n,)``.

    Runs over blocks of tokens (:func:`token_block`) so the gathered ``(n, block)`` spectra stay in cache:
    gathering all ``T`` tokens at once measured 3-8x slower at ``T = 4096``.
    """
    d1, d2 = shape
    x, dy = x.reshape(-1, d1).astype(jnp.float32), dy.reshape(-1, d2).astype(jnp.float32)
    block = token_block(x.shape[0], entries.shape[1])
    pad = -x.shape[0] % block  # zero tokens add nothing to the sum
    x = jnp.pad(x, ((0, pad), (0, 0))).reshape(-1, block, d1)
    dy = jnp.pad(dy, ((0, pad), (0, 0))).reshape(-1, block, d2)
    rows, row_sign = _half_index(entries[0], d1)
    cols, col_sign = _half_index(entries[1], d2)

    def add_block(total, blocks):
        x_hat = jnp.fft.rfft(blocks[0], axis=-1).T  # (d1 // 2 + 1, block)
        dy_hat = jnp.fft.rfft(blocks[1], axis=-1).T  # (d2 // 2 + 1, block)
        x_at, dy_at = x_hat[rows], dy_hat[cols]  # (n, block) each; row gathers beat column gathers on CPU
        return total + jnp.stack([jnp.sum(x_at.real * dy_at.real, 1), jnp.sum(x_at.imag * dy_at.imag, 1)]), None

    (real, imag), _ = lax.scan(add_block, jnp.zeros((2, entries.shape[1]), jnp.float32), (x, dy))
    # Re(a·b) with a, b possibly conjugated: Re a Re b − (±1)(±1) Im a Im b.
    return (real - row_sign * col_sign * imag) * np.float32(1.0 / (d1 * d2))


def _adapted_matmul_impl(shape, precision, x, kernel, c, entries, alpha):
    """``x @ (W0 + ΔW)`` with ``x`` already in the compute dtype."""
    return _matmul(x, _effective_kernel(kernel, c, entries, shape, alpha, x.dtype), precision)


_adapted_matmul = jax.custom_vjp(_adapted_matmul_impl, nondiff_argnums=(0, 1))


def _adapted_matmul_fwd(shape, precision, x, kernel, c, entries, alpha):
    y = _adapted_matmul_impl(shape, precision, x.value, kernel.value, c.value, entries.value, alpha.value)
    # Keep only what the wanted cotangents need (None marks the rest). dx recomputes W0 + ΔW (one rfft2)
    # rather than keeping a d1 x d2 copy alive until the backward pass. The kernel's own gradient (a caller
    # differentiating the whole params tree) is the plain x^T dy, formed only when the kernel is perturbed.
    x_for_dc = x.value if (c.perturbed or alpha.perturbed) else None
    x_for_dkernel = x.value if kernel.perturbed else None
    kernel_dtype = jnp.zeros((0,), kernel.value.dtype) if kernel.perturbed else None  # dtype carrier only
    kernel_kept = kernel.value if x.perturbed else None
    return y, (x_for_dc, x_for_dkernel, kernel_dtype, kernel_kept, c.value, entries.value, alpha.value)


def _adapted_matmul_bwd(shape, precision, residuals, dy):
    x_for_dc, x_for_dkernel, kernel_dtype, kernel, c, entries, alpha = residuals
    dx = dkernel = dc = dalpha = None
    if kernel is not None:
        w = _effective_kernel(kernel, c, entries, shape, alpha, dy.dtype)
        dx = lax.dot_general(dy, w, (((dy.ndim - 1,), (1,)), ((), ())), precision=precision)
    if x_for_dc is not None:
        unit = _unit_coefficient_grad(x_for_dc, dy, entries, shape)
        dc, dalpha = unit * alpha, jnp.dot(unit, c)
    if x_for_dkernel is not None:
        dkernel = weight_gradient(x_for_dkernel, dy, precision, kernel_dtype.dtype)
    return dx, dkernel, dc, None, dalpha


def weight_gradient(x: jax.Array, dy: jax.Array, precision: lax.PrecisionLike, dtype: DTypeLike) -> jax.Array:
    """``xᵀ dy`` summed over every leading axis, ``(d1, d2)`` in ``dtype``: the kernel's own gradient, for a
    caller that differentiates the frozen kernel too (a whole-tree ``jax.grad`` with optax masking it)."""
    batch_axes = tuple(range(dy.ndim - 1))
    return lax.dot_general(x, dy, ((batch_axes, batch_axes), ((), ())), precision=precision).astype(dtype)


_adapted_matmul.defvjp(_adapted_matmul_fwd, _adapted_matmul_bwd, symbolic_zeros=True)


def adapted_matmul(
    x: jax.Array,
    kernel: jax.Array,
    c: jax.Array,
    entries: jax.Array | np.ndarray,
    shape: Shape2D,
    alpha: float | jax.Array,
    *,
    precision: lax.PrecisionLike = None,
    dtype: DTypeLike | None = None,
) -> jax.Array:
    """``x @ (kernel + delta_w(c, entries, shape, alpha))`` with the spectral backward pass.

    The forward pass is one matmul against the effective kernel, built in float32 and cast to the compute
    dtype. The backward pass returns

    * ``dL/dx = dy @ W_effᵀ`` (``W_eff`` recomputed, not stored);
    * ``dL/dc`` (and ``dL/dalpha``) from ``rfft`` of ``x`` and ``dy`` along their feature axes, read at the
      entries — ``O(T·(d log d + n))``; the ``d1 × d2`` weight gradient is never formed;
    * ``dL/dkernel = xᵀ dy`` only when the kernel is itself differentiated (``jax.grad`` over a whole params
      tree, with optax masking the frozen leaves): ``symbolic_zeros`` tells the forward rule which inputs are
      perturbed, so a frozen kernel (closed over, or split off with ``split_params``) never costs the
      ``d1 × d2`` product.

    Reverse mode only (``jax.jvp`` is refused, as for any ``custom_vjp``). Jittable with ``shape``,
    ``precision`` and ``dtype`` static; vmappable.

    Args:
      x: activations ``(..., d1)``, any float dtype (bf16 included; the FFTs run in float32).
      kernel: the frozen kernel, ``(d1, d2)``, bf16 or float32.
      c: the layer's coefficients, ``(n,)`` (one layer; slice stacked layers before calling).
      entries: int ``(2, n)`` entry set, checked when concrete.
      shape: static ``(d1, d2)``, equal to ``kernel.shape``.
      alpha: the scaling.
      precision: passed to both matmuls (``lax.dot_general``).
      dtype: compute dtype of the matmuls; ``None`` promotes ``x`` and ``kernel`` as ``nn.Dense(dtype=None)``
        does (``jnp.result_type``).

    Returns:
      ``(..., d2)`` in the compute dtype.
    """
    shape = (int(shape[0]), int(shape[1]))
    check_entries(c, entries, shape)
    if np.ndim(c) != 1:
        raise ValueError(f"c must be one layer's (n,) coefficients, got shape {np.shape(c)}.")
    if tuple(kernel.shape) != shape:
        raise ValueError(f"kernel has shape {tuple(kernel.shape)} but shape={shape}.")
    if x.ndim < 1 or x.shape[-1] != shape[0]:
        raise ValueError(f"x must be (..., {shape[0]}) to multiply a {shape} kernel, got {x.shape}.")
    dtype = jnp.result_type(x, kernel) if dtype is None else jnp.dtype(dtype)
    return _adapted_matmul(
        shape,
        precision,
        x.astype(dtype),
        kernel,
        jnp.asarray(c).astype(jnp.float32),
        jnp.asarray(entries, jnp.int32),
        jnp.asarray(alpha).astype(jnp.float32),
    )


def backward_cost_terms(shape: Shape2D, tokens: int, n: int) -> tuple[tuple[float, float], float, float]:
    """The cost terms that differ between the two backward passes (unitless operation counts).

    Returns:
      ``((T·d1·d2, d1·d2·log2(d1·d2)), T·(d1·log2 d1 + d2·log2 d2), T·n)``: what the spectral pass saves (the
      weight-gradient matmul and its rfft2), then what it spends (rfft of ``x`` and ``dy``; the gather).
    """
    d1, d2 = shape
    saved = (float(tokens * d1 * d2), d1 * d2 * math.log2(d1 * d2))
    return saved, tokens * (d1 * math.log2(d1) + d2 * math.log2(d2)), float(tokens * n)


# Seconds per unit of each backward_cost_terms term: the non-negative least-squares fit printed by
# experiments/benchmarks/bench_backward.py on the shared 2-core AMD EPYC CPU (float32, "grad w.r.t. (c, x)" rows).
_SAVED_MATMUL, _SAVED_RFFT2, _SPENT_RFFT, _SPENT_GATHER = 6.1e-11, 7.8e-11, 2.6e-10, 9.5e-9


def choose_backward(shape: Shape2D, tokens: int, n: int) -> Literal["dense", "spectral"]:
    """Which backward pass is faster for a ``d1 × d2`` layer seeing ``tokens`` tokens with ``n`` coefficients.

    For ``FourierFTConfig(backward="auto")``. The spectral pass trades the weight-gradient matmul
    (``T·d1·d2``) for two feature-axis rffts (``T·Σ d·log d``) and a gather (``T·n``); the rule weighs those
    terms (:func:`backward_cost_terms`) with constants fitted to ``experiments/benchmarks/bench_backward.py`` on this
    project's 2-core CPU:

        spectral  iff  6.1e-11·T·d1·d2 + 7.8e-11·d1·d2·log2(d1·d2) > 2.6e-10·T·(d1·log2 d1 + d2·log2 d2) + 9.5e-9·T·n

    Both costs grow like ``T``, so the choice hardly depends on ``T``: it is mostly "is ``n`` small enough".
    Measured (``experiments/results/bench_backward.md``, a run independent of the fit; one jitted layer step,
    float32, ratios dense/spectral time): at ``n = 1000`` the spectral pass is 1.2-1.8x faster for 768×768,
    768×3072 and 1024×1024 at every ``T`` from 128 to 4096, and 1.1-1.3x for 384×1536 from ``T = 512`` (its
    ``T = 128`` cell flips between runs); at 384×384 dense is faster by up to ~25 %. At 768×768 the two tie at
    ``n = 4000`` and dense is 2x faster at ``n = 16000``; 768×3072 crosses between ``n = 4000`` (spectral 1.3x)
    and ``n = 16000`` (0.85-1.1x). The rule picks the measured winner in 43 of those 48 cells (every miss within
    10 % but one ~3 ms cell) and puts the large-``T`` crossover at ``n ≈ 770`` (384×384), 3400 (768×768), 6200
    (1024×1024), 14000 (768×3072) and ~105000 (4096×4096, extrapolated). Other hardware (GPU, TPU) has other
    constants: set ``backward`` explicitly there, or re-run the benchmark.

    Example::

      choose_backward((768, 768), tokens=4096, n=1000)
      # 'spectral'
    """
    (matmul, rfft2), rfft, gather = backward_cost_terms(shape, tokens, n)
    saved = _SAVED_MATMUL * matmul + _SAVED_RFFT2 * rfft2
    return "spectral" if saved > _SPENT_RFFT * rfft + _SPENT_GATHER * gather else "dense"
