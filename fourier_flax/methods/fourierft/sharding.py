"""FourierFT on a device mesh: each device builds only its own block of ΔW, from the replicated spectrum.

``ΔW[p, q] = alpha/(d1·d2) · Σ_l c_l cos(2π(p·u_l/d1 + q·v_l/d2))`` is separable: the block of rows ``R`` and
columns ``C`` is ``alpha/(d1·d2) · (C_u[R] diag(c) C_v[C]ᵀ − S_u[R] diag(c) S_v[C]ᵀ)`` with ``C_u[p, l] =
cos(2π p u_l / d1)`` etc. :func:`sharded_delta_w` runs that inside ``jax.shard_map``: the coefficients and entries
(n numbers each) are replicated, every device computes the DFT columns of its own rows and columns, and no device
ever holds — or receives — the whole ``d1 × d2`` update. Its gradient with respect to ``c`` is each device's
partial sum, reduced by one ``psum`` of ``n`` floats (what ``shard_map``'s transpose inserts).
:func:`sharded_merged_kernel` merges a sharded kernel the same way (multi-process included).

Example::

  mesh = jax.make_mesh((2, 4), ("data", "model"))
  w = sharded_delta_w(c, E, (768, 768), 150.0, mesh, P(None, "model"))  # (768, 768), columns over "model"
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from fourier_flax.mesh import axis_names, axis_size, block_index, to_varying
from fourier_flax.methods.fourierft.config import SPECTRUM, FourierFTConfig
from fourier_flax.methods.fourierft.entries import spectral_entries
from fourier_flax.methods.fourierft.spectral import MATMUL_MAX_SIDE, check_entries, dft_tables


def sharded_delta_w(
    c: jax.Array,
    entries: jax.Array | np.ndarray,
    shape: tuple[int, int],
    alpha: float | jax.Array,
    mesh: Mesh,
    spec: P,
) -> jax.Array:
    """``delta_w(c, entries, shape, alpha)`` laid out as ``spec`` on ``mesh``, each block built on its device.

    Args:
      c: coefficients ``(n,)`` (replicated).
      entries: int ``(2, n)`` (replicated).
      shape: static ``(d1, d2)``; each sharded dimension must divide evenly over its mesh axes.
      alpha: the scaling.
      mesh: the device mesh.
      spec: the output's ``PartitionSpec`` over ``(d1, d2)``, e.g. ``P(None, "model")`` for a column-parallel
        kernel, ``P("model", None)`` for a row-parallel one.

    Returns:
      float32 ``(d1, d2)`` with ``NamedSharding(mesh, spec)``.

    Raises:
      ValueError: a sharded dimension does not divide by its mesh axes, or a side exceeds the int32 phase range.
    """
    check_entries(c, entries, shape)
    d1, d2 = int(shape[0]), int(shape[1])
    if max(d1, d2) > MATMUL_MAX_SIDE:
        raise ValueError(f"sides up to {MATMUL_MAX_SIDE} (int32 phases); got {shape}.")
    row_names, col_names = (tuple(spec) + (None, None))[:2]
    rows, cols = d1 // axis_size(mesh, row_names), d2 // axis_size(mesh, col_names)
    if rows * axis_size(mesh, row_names) != d1 or cols * axis_size(mesh, col_names) != d2:
        raise ValueError(f"shape {shape} does not divide over the mesh axes of {spec} ({dict(mesh.shape)}).")
    scale = np.float32(1.0 / (d1 * d2))

    varying = axis_names(row_names) + axis_names(col_names)

    def block(c, entries, alpha):
        # Mark the replicated coefficients device-varying here, so that the transpose's psum acts on their (n,)
        # cotangent, not on a (rows, n) intermediate.
        c, alpha = (to_varying(x, varying) for x in (c, alpha)) if varying else (c, alpha)
        cos_u, sin_u = dft_tables(entries[0], block_index(row_names) * rows, rows, d1)
        cos_v, sin_v = dft_tables(entries[1], block_index(col_names) * cols, cols, d2)
        weighted = c.astype(jnp.float32)[None, :]
        update = (cos_u * weighted) @ cos_v.T - (sin_u * weighted) @ sin_v.T
        return update * (scale * alpha.astype(jnp.float32))

    mapped = jax.shard_map(block, mesh=mesh, in_specs=(P(), P(), P()), out_specs=P(row_names, col_names))
    return mapped(jnp.asarray(c), jnp.asarray(entries, jnp.int32), jnp.asarray(alpha, jnp.float32))


def sharded_merged_kernel(config: FourierFTConfig, path: str, module) -> jax.Array | None:
    """For a FourierFT module whose 2-D kernel carries a multi-device ``NamedSharding``: the merged kernel
    ``W0 + ΔW``, built block by block on the kernel's own devices (so it also works when the arrays are not fully
    addressable, e.g. multi-process). None when this does not apply (the caller merges densely)."""
    kernel = module["kernel"]
    if np.ndim(kernel) != 2 or np.ndim(module[SPECTRUM]) != 1:
        return None
    # Concrete arrays carry their sharding; under jit, tracers carry it in their type on explicit-axis meshes.
    sharding = kernel.sharding if isinstance(kernel, jax.Array) and not isinstance(kernel, jax.core.Tracer) else None
    sharding = sharding or getattr(jax.typeof(kernel), "sharding", None)
    if not hasattr(sharding, "spec") or not hasattr(sharding, "mesh") or sharding.mesh.size == 1:
        return None
    shape = tuple(np.shape(kernel))
    if config.kernel_in_axes_for(path) != 1 or max(shape) > MATMUL_MAX_SIDE:
        return None
    spectrum = module[SPECTRUM]
    entries = spectral_entries(config, shape, spectrum.shape[-1])
    update = sharded_delta_w(spectrum, entries, shape, config.scaling, sharding.mesh, sharding.spec)
    return (kernel.astype(jnp.float32) + update).astype(kernel.dtype)
