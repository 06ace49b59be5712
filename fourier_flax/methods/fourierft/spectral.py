"""ΔW from spectral coefficients: ``delta_w(c, E, shape, alpha) = alpha · Re(ifft2(F))``.

``F`` is a ``d1 × d2`` spectrum that is zero except ``F[E[0, l], E[1, l]] = c[l]``; ifft2 carries its
``1/(d1·d2)`` normalisation (Hugging Face PEFT's convention).

Because ``F`` is real, ``Re(ifft2(F)) = Re(fft2(F)) / (d1·d2)``, and ``Re(fft2(F))`` of a real array is fixed by
its half spectrum ``Re(rfft2(F))`` (``d1 × (d2//2 + 1)``) through ``X[p, q] = X[-p, -q]``. The fast path therefore
runs one real-to-complex 2-D FFT and unfolds the other half with a flip, and its backward pass is a second
``rfft2`` (of the cotangent) read at the ``n`` entries:

    dL/dc_l = alpha / (d1·d2) · Re(rfft2(G))[u_l, v_l]   (entries past the half read their mirror)

so neither pass touches complex ``d1 × d2`` arrays. FFTs always run in float32 (no complex128, which TPUs lack).
:func:`delta_w_reference` keeps the plain ``ifft2`` formulation the fast path is tested against.

Example::

  E = fourier_flax.methods.fourierft.peft_entries((768, 768), n=1000, seed=777)
  c = jax.random.normal(jax.random.key(0), (1000,))
  dw = jax.jit(delta_w, static_argnums=2)(c, E, (768, 768), 150.0)  # float32 (768, 768)
"""

from __future__ import annotations

import math
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

Shape2D = tuple[int, int]


def check_entries(c: jax.Array, entries: jax.Array | np.ndarray, shape: Shape2D) -> None:
    """Validates a concrete entry set against ``c`` and ``shape``; a traced one is passed through.

    Raises:
      ValueError: ``entries`` is not ``(2, n)`` with ``n == c.shape[-1]``, has an entry outside the grid, or
        repeats an entry.
    """
    if len(shape) != 2 or min(shape) < 1:
        raise ValueError(f"shape must be a static (d1, d2) of positive ints, got {shape}.")
    if np.ndim(entries) != 2 or np.shape(entries)[0] != 2:
        raise ValueError(f"entries must have shape (2, n), got {np.shape(entries)}.")
    n = np.shape(entries)[1]
    if np.ndim(c) < 1 or np.shape(c)[-1] != n:
        raise ValueError(f"c has shape {np.shape(c)} but entries hold n={n} positions: c must be (..., {n}).")
    if isinstance(entries, jax.core.Tracer):
        return
    rows, cols = np.asarray(entries, np.int64)
    outside = (rows < 0) | (rows >= shape[0]) | (cols < 0) | (cols >= shape[1])
    if outside.any():
        bad = int(np.argmax(outside))
        raise ValueError(
            f"entry {bad} = ({rows[bad]}, {cols[bad]}) lies outside the {shape[0]}x{shape[1]} grid "
            "(entries must satisfy 0 <= row < d1 and 0 <= col < d2)."
        )
    flat = rows * shape[1] + cols
    unique, counts = np.unique(flat, return_counts=True)
    if (counts > 1).any():
        repeated = int(unique[np.argmax(counts > 1)])
        raise ValueError(
            f"entry ({repeated // shape[1]}, {repeated % shape[1]}) appears {int(counts.max())} times; "
            "an entry set must not repeat a position (sample it without replacement)."
        )


def _dense_spectrum(c: jax.Array, entries: jax.Array, shape: Shape2D) -> jax.Array:
    """Scatters ``c (..., n)`` into a real ``(..., d1, d2)`` spectrum."""
    zeros = jnp.zeros((*c.shape[:-1], *shape), c.dtype)
    return zeros.at[..., entries[0], entries[1]].set(c, unique_indices=True)


def _mirror(x: jax.Array) -> jax.Array:
    """``x[(-p) % d1, :]``: the rows of the conjugate-symmetric partner."""
    return jnp.roll(jnp.flip(x, axis=0), 1, axis=0)


def _half_spectrum_entries(entries: jax.Array, shape: Shape2D) -> tuple[jax.Array, jax.Array]:
    """Each entry's position in ``rfft2``'s half spectrum (its mirror ``(-u, -v)`` when ``v > d2 // 2``)."""
    d1, d2 = shape
    rows, cols = entries[0], entries[1]
    in_half = cols <= d2 // 2
    return jnp.where(in_half, rows, (-rows) % d1), jnp.where(in_half, cols, (-cols) % d2)


def _per_layer(fn, stacked: jax.Array, core_ndim: int) -> jax.Array:
    """Applies ``fn`` to each slice of ``stacked`` over its leading (stacked-layer) axes, one layer at a time.

    XLA's CPU FFT and scatter run a batched ``(L, d1, d2)`` array about twice as slowly as ``L`` single-layer
    calls (measured in experiments/benchmarks/bench_delta_w.py), so stacked layers go through ``lax.map``.
    """
    lead = stacked.shape[: stacked.ndim - core_ndim]
    if not lead:
        return fn(stacked)
    out = jax.lax.map(fn, stacked.reshape(-1, *stacked.shape[len(lead) :]))
    return out.reshape(*lead, *out.shape[1:])


def _unit_delta_w_impl(c: jax.Array, entries: jax.Array, shape: Shape2D) -> jax.Array:
    """``Re(ifft2(F))`` for float32 ``c (..., n)``: float32 ``(..., d1, d2)``."""
    d1, d2 = shape

    def one_layer(c_layer):
        half = jnp.fft.rfft2(_dense_spectrum(c_layer, entries, shape)).real  # (d1, d2 // 2 + 1)
        upper = _mirror(half)[:, 1 : d2 - half.shape[-1] + 1][:, ::-1]
        return jnp.concatenate([half, upper], axis=-1) * np.float32(1.0 / (d1 * d2))

    return _per_layer(one_layer, c, core_ndim=1)


# Reverse mode gets the hand-written backward (one rfft2 of the cotangent, read at the entries). A custom_vjp
# has no forward mode: jax.jvp/jacfwd of delta_w itself are refused (use delta_w_reference there), while
# jax.hessian and other forward-over-reverse compositions work because both rules below are plain JAX.
_unit_delta_w = jax.custom_vjp(_unit_delta_w_impl, nondiff_argnums=(2,))


def _unit_delta_w_fwd(c, entries, shape):
    return _unit_delta_w_impl(c, entries, shape), entries


def _unit_delta_w_bwd(shape, entries, cotangent):
    d1, d2 = shape
    rows, cols = _half_spectrum_entries(entries, shape)

    def one_layer(cotangent_layer):
        return jnp.fft.rfft2(cotangent_layer.astype(jnp.float32)).real[rows, cols] * np.float32(1.0 / (d1 * d2))

    return _per_layer(one_layer, cotangent, core_ndim=2), None


_unit_delta_w.defvjp(_unit_delta_w_fwd, _unit_delta_w_bwd)


# The matmul form builds cos/sin tables from integer phases p·u mod d1 in int32: exact while d1·d1 < 2^31.
MATMUL_MAX_SIDE = 46340
# "auto" on CPU: the matmul form costs ~4·d1·d2·n flops of dense matmul against the FFT's ~d1·d2·log(d1·d2) of
# memory-bound passes, so the crossover n grows with the kernel. experiments/benchmarks/bench_mesh.py delta_w
# (quiet rounds, results/bench_delta_w_impl.md; forward + backward, shapes 384² to 4096², n 50-4000) found matmul
# faster only at n <= 100 on 4096² and n = 50 on 768×3072, FFT everywhere else: matmul iff n <= sqrt(d1·d2) / 30
# separates all 30 measured cells. GPU (cuFFT is fast) takes the CPU rule, reasoned. On TPU (fast matrix units,
# slow FFTs) matmul up to MATMUL_TPU_MAX_N, reasoned, not measured.
MATMUL_CPU_CELLS_PER_N = 30.0
MATMUL_TPU_MAX_N = 4096
Impl = Literal["fft", "matmul", "auto"]


def choose_impl(shape: Shape2D, n: int, backend: str | None = None) -> Literal["fft", "matmul"]:
    """The ``delta_w`` implementation ``impl="auto"`` runs for this shape, ``n`` and backend (default: JAX's).

    Example::

      choose_impl((4096, 4096), 100, "cpu"), choose_impl((768, 768), 100, "cpu")
      # ('matmul', 'fft')
    """
    if max(shape) > MATMUL_MAX_SIDE:
        return "fft"
    backend = backend or jax.default_backend()
    if backend == "tpu":
        return "matmul" if n <= MATMUL_TPU_MAX_N else "fft"
    return "matmul" if n <= math.sqrt(shape[0] * shape[1]) / MATMUL_CPU_CELLS_PER_N else "fft"


def dft_tables(index: jax.Array, start: jax.Array | int, count: int, size: int) -> tuple[jax.Array, jax.Array]:
    """cos and sin of ``2π p u_l / size`` for the ``count`` positions ``p`` from ``start``: ``(count, n)`` each.

    The phase ``p·u mod size`` is reduced in int32 first (exact while ``size² < 2^31``), so the tables are accurate
    to float32 rounding. Used whole by ``delta_w(impl="matmul")`` and per device block by
    :func:`fourier_flax.methods.fourierft.sharding.sharded_delta_w`.
    """
    positions = start + jnp.arange(count, dtype=jnp.int32)[:, None]
    angle = ((positions * index[None, :]) % size).astype(jnp.float32) * np.float32(2 * np.pi / size)
    return jnp.cos(angle), jnp.sin(angle)


def _matmul_delta_w(c: jax.Array, entries: jax.Array, shape: Shape2D) -> jax.Array:
    """``Re(ifft2(F))`` as ``(C_u diag(c) C_vᵀ − S_u diag(c) S_vᵀ) / (d1·d2)``: two matmuls of DFT columns.

    ``C_u[p, l] = cos(2π p u_l / d1)`` (``d1 × n``) etc.; phases are reduced modulo the side in int32 first, so
    the tables are accurate to float32 rounding at any size up to :data:`MATMUL_MAX_SIDE`.
    """
    d1, d2 = shape

    cos_u, sin_u = dft_tables(entries[0], 0, d1, d1)
    cos_v, sin_v = dft_tables(entries[1], 0, d2, d2)
    scale = np.float32(1.0 / (d1 * d2))
    cosine = jnp.einsum("pl,...l,ql->...pq", cos_u, c, cos_v)
    sine = jnp.einsum("pl,...l,ql->...pq", sin_u, c, sin_v)
    return (cosine - sine) * scale


def delta_w(
    c: jax.Array,
    entries: jax.Array | np.ndarray,
    shape: Shape2D,
    alpha: float | jax.Array,
    *,
    impl: Impl = "fft",
) -> jax.Array:
    """The FourierFT weight update ``alpha · Re(ifft2(F))``.

    Pure, jittable (``shape`` static), vmappable, reverse-mode differentiable in ``c`` and ``alpha`` (also
    forward-over-reverse, e.g. ``jax.hessian`` of a loss; plain ``jax.jvp`` of ``delta_w`` itself is not
    defined — :func:`delta_w_reference` supports it).

    Args:
      c: coefficients, float ``(..., n)``; leading axes are stacked layers (e.g. under ``nn.scan``) that share
        one entry set. bf16/fp16 are upcast: the FFTs always run in float32.
      entries: int ``(2, n)``: row and column of each coefficient on the ``d1 × d2`` grid. When concrete, it is
        checked (in range, no repeats, ``n`` matching ``c``).
      shape: static ``(d1, d2)``.
      alpha: the scaling (PEFT's ``scaling``).
      impl: ``"fft"`` (one rfft2 and a hand-written backward), ``"matmul"`` (the same sum of cosines as two
        matmuls of gathered DFT columns, ``O(d1·d2·n)``: what TPUs' matrix units run fast, and the form a device
        holding a block of rows/columns can build locally), or ``"auto"`` (:func:`choose_impl`).

    Returns:
      float32 ``(..., d1, d2)``.

    Example::

      E = fourier_flax.methods.fourierft.peft_entries((768, 768), 64, seed=777)
      w = delta_w(c, E, (768, 768), 150.0, impl="matmul")  # equals impl="fft" to float32 rounding
    """
    check_entries(c, entries, shape)
    shape = (int(shape[0]), int(shape[1]))
    c32, entries32 = jnp.asarray(c).astype(jnp.float32), jnp.asarray(entries, jnp.int32)
    if impl not in ("fft", "matmul", "auto"):
        raise ValueError(f"impl must be 'fft', 'matmul' or 'auto', got {impl!r}.")
    if impl == "auto":
        impl = choose_impl(shape, c32.shape[-1])
    if impl == "matmul":
        if max(shape) > MATMUL_MAX_SIDE:
            raise ValueError(
                f"impl='matmul' builds int32 phases, exact for sides up to {MATMUL_MAX_SIDE}; {shape} is larger: "
                "use impl='fft'."
            )
        unit = _matmul_delta_w(c32, entries32, shape)
    else:
        unit = _unit_delta_w(c32, entries32, shape)
    return unit * jnp.asarray(alpha, jnp.float32)


def delta_w_reference(
    c: jax.Array, entries: jax.Array | np.ndarray, shape: Shape2D, alpha: float | jax.Array
) -> jax.Array:
    """The plain formulation: scatter ``c`` into a complex64 spectrum and take ``ifft2(F).real * alpha``.

    Same contract as :func:`delta_w`; kept as the reference the fast path is tested and benchmarked against.
    """
    check_entries(c, entries, shape)
    spectrum = _dense_spectrum(jnp.asarray(c).astype(jnp.complex64), jnp.asarray(entries), tuple(shape))
    return jnp.fft.ifft2(spectrum).real * jnp.asarray(alpha, jnp.float32)
