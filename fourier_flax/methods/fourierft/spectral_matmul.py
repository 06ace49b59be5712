"""``x @ ΔW`` straight from the spectrum, without forming the ``d1 × d2`` update.

With ``ΔW = alpha · Re(ifft2(F))`` and ``F`` holding ``c_l`` at ``(u_l, v_l)``,

    x·ΔW = (alpha / d1) · Re( ifft_d2( scatter_v( c ⊙ conj(fft_d1(x))[u] ) ) )

— one real FFT of each row of ``x``, a gather at the ``n`` row frequencies, a scatter-add at the ``n`` column
frequencies and one inverse real FFT: ``O(d1 log d1 + n + d2 log d2)`` per token instead of ``O(d1 · d2)``, and no
``d1 × d2`` array. Because nothing is shared across rows but the entries, every example may carry its own
coefficients (a batch of requests on different adapters). The backward is a custom VJP of the same form:
``dL/dx = spectral_matmul(dy, c, E[::-1], (d2, d1), alpha)`` (``ΔWᵀ`` is the update of the swapped entries) and
``dL/dc_l = alpha/(d1·d2) · Σ_t Re(conj(fft(x_t))[u_l] · conj(fft(dy_t))[v_l])``, summed over each example's tokens.
FFTs run in float32 (complex64) whatever the input dtype.

Example::

  E = peft_entries((768, 768), 1000, seed=777)
  y = spectral_matmul(x, c, E, (768, 768), 150.0)  # x (B, T, 768), c (1000,) or per example (B, 1000)
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from fourier_flax.methods.fourierft.spectral import Shape2D, check_entries


def _row_spectrum(x: jax.Array, index: jax.Array, size: int) -> jax.Array:
    """``conj(fft(x))[..., index]`` of real rows ``x`` (..., size) through the real FFT (float32 → complex64)."""
    half = jnp.fft.rfft(x.astype(jnp.float32), axis=-1)
    folded = jnp.where(index <= size // 2, index, size - index)
    picked = jnp.take(half, folded, axis=-1)
    return jnp.where(index <= size // 2, jnp.conj(picked), picked)


def _leading(c: jax.Array, x_ndim: int) -> jax.Array:
    """``c`` (*lead, n) with singleton axes for the rest of ``x``'s leading axes: (*lead, 1, ..., 1, n)."""
    return c.reshape(c.shape[:-1] + (1,) * (x_ndim - c.ndim) + c.shape[-1:])


def _apply(x, c, entries, shape: Shape2D, alpha):
    d1, d2 = shape
    u, v = entries[0], entries[1]
    weighted = _row_spectrum(x, u, d1) * _leading(c, x.ndim).astype(jnp.float32)  # (..., n) complex64
    spectrum = jnp.zeros((*weighted.shape[:-1], d2), jnp.complex64).at[..., v].add(weighted)
    # Re(ifft(G)) is the ifft of G's Hermitian part, which the inverse real FFT takes from its first half.
    mirrored = jnp.conj(jnp.roll(jnp.flip(spectrum, axis=-1), 1, axis=-1))  # G[(-q) mod d2]*
    hermitian = 0.5 * (spectrum + mirrored)[..., : d2 // 2 + 1]
    out = jnp.fft.irfft(hermitian, n=d2, axis=-1)
    return (out * (jnp.asarray(alpha, jnp.float32) / d1)).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(3,))
def _spectral_matmul(x, c, entries, shape, alpha):
    return _apply(x, c, entries, shape, alpha)


def _forward(x, c, entries, shape, alpha):
    return _apply(x, c, entries, shape, alpha), (x, c, entries, alpha)


def _backward(shape, residuals, dy):
    x, c, entries, alpha = residuals
    d1, d2 = shape
    dx = _apply(dy, c, entries[::-1], (d2, d1), alpha).astype(x.dtype)
    products = jnp.real(_row_spectrum(x, entries[0], d1) * _row_spectrum(dy, entries[1], d2))  # (..., n)
    summed = jnp.sum(products, axis=tuple(range(c.ndim - 1, x.ndim - 1)))  # each example's tokens
    alpha32 = jnp.asarray(alpha, jnp.float32)
    dc = (summed * (alpha32 / (d1 * d2))).astype(c.dtype)
    dalpha = jnp.sum(jnp.real(_apply(x, c, entries, shape, 1.0).astype(jnp.float32) * dy.astype(jnp.float32)))
    return dx, dc, None, jnp.asarray(dalpha, jnp.asarray(alpha).dtype)


_spectral_matmul.defvjp(_forward, _backward)


def spectral_matmul(
    x: jax.Array, c: jax.Array, entries: jax.Array | np.ndarray, shape: Shape2D, alpha: float | jax.Array
) -> jax.Array:
    """``x @ delta_w(c, entries, shape, alpha)`` without forming ``ΔW``.

    Args:
      x: ``(..., d1)`` activations.
      c: coefficients ``(n,)`` shared by every row, or ``(*lead, n)`` where ``lead`` are ``x``'s leading axes
        (e.g. ``(B, n)`` for ``x`` ``(B, T, d1)``: one adapter per example).
      entries: int ``(2, n)`` ``(u, v)`` frequencies.
      shape: static ``(d1, d2)``.
      alpha: the scaling (may be traced).

    Returns:
      ``(..., d2)`` in ``x``'s dtype.

    Raises:
      ValueError: ``x``'s last axis is not ``d1``, ``c``'s leading axes are not a prefix of ``x``'s, or the
        entries do not fit ``shape``.
    """
    shape = (int(shape[0]), int(shape[1]))
    c = jnp.asarray(c)
    check_entries(c[(0,) * (c.ndim - 1)] if c.ndim > 1 else c, entries, shape)
    if x.shape[-1] != shape[0]:
        raise ValueError(f"x has {x.shape[-1]} features, the update's view is {shape}.")
    if c.ndim > x.ndim or tuple(c.shape[:-1]) != tuple(x.shape[: c.ndim - 1]):
        raise ValueError(
            f"per-example coefficients {c.shape} must lead with x's leading axes {x.shape[:-1]} "
            "(e.g. c (B, n) for x (B, T, d1))."
        )
    return _spectral_matmul(x, c, jnp.asarray(entries, jnp.int32), shape, jnp.asarray(alpha, jnp.float32))
