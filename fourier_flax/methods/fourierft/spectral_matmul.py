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

The scatter-add at the column frequencies is done as gathers when the entries are concrete (the usual case: they
are drawn from the config): per bin of the inverse real FFT's half spectrum, a padded table of the entries landing
in it or in its mirror bin (:func:`fold_tables`, at most a handful per bin). XLA:CPU runs a scatter element by
element, so the gathers are ~3x faster there at 768 x 768, n = 1000
(``experiments/benchmarks/bench_spectral_matmul.py``); traced entries fall back to the scatter.

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
    # Flat rows: XLA:CPU's FFT needs a row-major operand, and the reshape makes one even when x comes from a
    # partitioned matmul laid out otherwise (adapter banks on a "tp" mesh failed a layout check without it).
    rows = x.astype(jnp.float32).reshape(-1, size)
    half = jnp.fft.rfft(rows, axis=-1).reshape(*x.shape[:-1], size // 2 + 1)
    folded = jnp.where(index <= size // 2, index, size - index)
    picked = jnp.take(half, folded, axis=-1)
    return jnp.where(index <= size // 2, jnp.conj(picked), picked)


def _leading(c: jax.Array, x_ndim: int) -> jax.Array:
    """``c`` (*lead, n) with singleton axes for the rest of ``x``'s leading axes: (*lead, 1, ..., 1, n)."""
    return c.reshape(c.shape[:-1] + (1,) * (x_ndim - c.ndim) + c.shape[-1:])


def fold_tables(index: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Gather tables for scattering ``n`` values at frequencies ``index`` into the half spectrum of length
    ``size``: ``direct[q]`` lists the ``l`` with ``index[l] == q``, ``mirror[q]`` those with
    ``index[l] == -q mod size``, for ``q <= size // 2``; padded with ``n`` (a zero slot appended to the values).

    Returns:
      int32 ``(size // 2 + 1, m_direct)`` and ``(size // 2 + 1, m_mirror)``.
    """
    index = np.asarray(index, np.int64)
    half, n = size // 2 + 1, len(index)
    tables = []
    for bins in (index, (size - index) % size):
        keep = np.flatnonzero(bins < half)
        order = keep[np.argsort(bins[keep], kind="stable")]
        counts = np.bincount(bins[order], minlength=half)
        table = np.full((half, max(int(counts.max(initial=0)), 1)), n, np.int32)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        slots = np.arange(len(order)) - np.repeat(starts, counts)
        table[bins[order], slots] = order
        tables.append(table)
    return tables[0], tables[1]


@functools.lru_cache(maxsize=256)
def _cached_tables(key: bytes, n: int, shape: Shape2D) -> tuple[np.ndarray, ...]:
    entries = np.frombuffer(key, np.int32).reshape(2, n)
    return (*fold_tables(entries[1], shape[1]), *fold_tables(entries[0], shape[0]))


def _half_spectrum(weighted: jax.Array, index: jax.Array, size: int, tables) -> jax.Array:
    """The Hermitian part ``(G + conj(G[-q]))/2`` of ``G = scatter_add(weighted at index)``, bins ``0..size//2``:
    the half the inverse real FFT reads (``Re(ifft(G)) == irfft`` of it)."""
    if tables is not None:
        direct, mirror = tables
        padded = jnp.concatenate([weighted, jnp.zeros((*weighted.shape[:-1], 1), weighted.dtype)], axis=-1)
        return 0.5 * (jnp.take(padded, direct, axis=-1).sum(-1) + jnp.conj(jnp.take(padded, mirror, axis=-1).sum(-1)))
    spectrum = jnp.zeros((*weighted.shape[:-1], size), jnp.complex64).at[..., index].add(weighted)
    mirrored = jnp.conj(jnp.roll(jnp.flip(spectrum, axis=-1), 1, axis=-1))  # G[(-q) mod size]*
    return 0.5 * (spectrum + mirrored)[..., : size // 2 + 1]


def _apply(x, c, entries, tables, shape: Shape2D, alpha):
    d1, d2 = shape
    weighted = _row_spectrum(x, entries[0], d1) * _leading(c, x.ndim).astype(jnp.float32)  # (..., n) complex64
    out = jnp.fft.irfft(_half_spectrum(weighted, entries[1], d2, tables), n=d2, axis=-1)
    return (out * (jnp.asarray(alpha, jnp.float32) / d1)).astype(x.dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _spectral_matmul(x, c, entries, tables, shape, alpha):
    return _apply(x, c, entries, tables and tables[:2], shape, alpha)


def _forward(x, c, entries, tables, shape, alpha):
    return _apply(x, c, entries, tables and tables[:2], shape, alpha), (x, c, entries, tables, alpha)


def _backward(shape, residuals, dy):
    x, c, entries, tables, alpha = residuals
    d1, d2 = shape
    dx = _apply(dy, c, entries[::-1], tables and tables[2:], (d2, d1), alpha).astype(x.dtype)
    products = jnp.real(_row_spectrum(x, entries[0], d1) * _row_spectrum(dy, entries[1], d2))  # (..., n)
    summed = jnp.sum(products, axis=tuple(range(c.ndim - 1, x.ndim - 1)))  # each example's tokens
    alpha32 = jnp.asarray(alpha, jnp.float32)
    dc = (summed * (alpha32 / (d1 * d2))).astype(c.dtype)
    forward = _apply(x, c, entries, tables and tables[:2], shape, 1.0)
    dalpha = jnp.sum(forward.astype(jnp.float32) * dy.astype(jnp.float32))
    return dx, dc, None, None, jnp.asarray(dalpha, jnp.asarray(alpha).dtype)


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
    tables = None
    if not isinstance(entries, jax.core.Tracer):
        concrete = np.ascontiguousarray(np.asarray(entries), np.int32)
        tables = tuple(jnp.asarray(t) for t in _cached_tables(concrete.tobytes(), concrete.shape[1], shape))
    return _spectral_matmul(x, c, jnp.asarray(entries, jnp.int32), tables, shape, jnp.asarray(alpha, jnp.float32))
