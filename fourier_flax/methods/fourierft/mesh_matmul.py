"""FourierFT's adapted matmul on a device mesh: ΔW built block-local, ``dL/dc`` reduced as ``n`` floats.

Under a mesh strategy (:func:`fourier_flax.mesh.use_mesh`), an adapted ``nn.Dense`` computes
``y = x @ (W0 + ΔW)`` with

* **forward**: ``ΔW`` made by :func:`fourier_flax.methods.fourierft.sharding.sharded_delta_w` in the kernel's own
  layout — each device builds its block from the replicated ``c`` and ``E``, and the matmul is partitioned by XLA
  exactly as the frozen layer's ``x @ W0`` would be;
* **backward**: ``dx = dy @ W_effᵀ`` (partitioned as the frozen layer's), and

      dL/dc_l = alpha/(d1·d2) · Σ_t [(x C_u)[t, l] (dy C_v)[t, l] − (x S_u)[t, l] (dy S_v)[t, l]]

  computed inside ``jax.shard_map`` from each device's own tokens and feature blocks (``C_u[p, l] =
  cos(2π p u_l / d1)`` for its rows ``p`` etc.): the products are summed over the local tokens *before* anything
  crosses devices, so one ``psum`` of ``n`` floats per layer is the only communication the adapter adds. No
  ``d1 × d2`` weight gradient is formed (unless the kernel itself is differentiated) and no ``tokens × n``
  partial sums are exchanged.

The activation layout (:class:`MatmulLayout`: which mesh axes split the tokens, the input features and the output
features) must be the one XLA gives ``x`` and ``dy`` under the strategy, or it inserts reshards;
:func:`matmul_layout` derives it.

Example::

  layout = MatmulLayout(mesh, kernel_spec=P(None, "model"), tokens="data", x_features=None, dy_features="model")
  y = mesh_adapted_matmul(x, kernel, c, E, (768, 768), 150.0, layout)
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from fourier_flax.mesh import active_mesh, axis_names, batch_spec, block_index, kernel_spec, to_varying
from fourier_flax.methods.fourierft.backward import weight_gradient
from fourier_flax.methods.fourierft.sharding import sharded_delta_w
from fourier_flax.methods.fourierft.spectral import Shape2D, delta_w, dft_tables

# Tokens per block of the dL/dc sum: four (block, n) products live at a time (4 MiB at n = 1000).
TOKEN_BLOCK = 256


@dataclasses.dataclass(frozen=True)
class MatmulLayout:
    """How one adapted matmul is laid out on ``mesh``.

    Attributes:
      mesh: the device mesh.
      kernel_spec: the kernel's (and ΔW's) ``PartitionSpec`` over ``(d1, d2)``.
      tokens: mesh axes splitting the leading (batch) axis of ``x`` and ``dy``.
      x_features / dy_features: mesh axes splitting the last axis of ``x`` (``d1``) / ``dy`` (``d2``).
    """

    mesh: Mesh
    kernel_spec: P
    tokens: Any = None
    x_features: Any = None
    dy_features: Any = None

    def activation_spec(self, ndim: int, features: Any) -> P:
        return P(self.tokens, *([None] * (ndim - 2)), features)


def _effective(kernel, c, entries, shape, alpha, layout: MatmulLayout, dtype):
    if any(axis_names(names) for names in layout.kernel_spec):
        update = sharded_delta_w(c, entries, shape, alpha, layout.mesh, layout.kernel_spec)
    else:  # a replicated kernel ("dp"): every device needs the whole ΔW; the FFT form makes it with least memory
        update = delta_w(c, entries, shape, alpha)
    return (kernel.astype(jnp.float32) + update).astype(dtype)


def _unit_coefficient_grad(x, dy, entries, shape: Shape2D, layout: MatmulLayout) -> jax.Array:
    """``dL/dc`` at ``alpha = 1``, ``(n,)`` float32, replicated: local products, then one psum of n floats."""
    d1, d2 = shape
    row_names, col_names = axis_names(layout.x_features), axis_names(layout.dy_features)
    reduced = tuple(dict.fromkeys(axis_names(layout.tokens) + row_names + col_names))
    rows = d1 // int(np.prod([layout.mesh.shape[a] for a in row_names], dtype=int))
    cols = d2 // int(np.prod([layout.mesh.shape[a] for a in col_names], dtype=int))

    def local(x, dy, entries):
        cos_u, sin_u = dft_tables(entries[0], block_index(row_names) * rows, rows, d1)  # (rows, n)
        cos_v, sin_v = dft_tables(entries[1], block_index(col_names) * cols, cols, d2)  # (cols, n)
        x = x.reshape(-1, rows).astype(jnp.float32)
        dy = dy.reshape(-1, cols).astype(jnp.float32)
        # Blocks of tokens, so the (tokens, n) products never exist whole (zero padding adds nothing).
        block = min(TOKEN_BLOCK, x.shape[0])
        pad = -x.shape[0] % block
        x = jnp.pad(x, ((0, pad), (0, 0))).reshape(-1, block, rows)
        dy = jnp.pad(dy, ((0, pad), (0, 0))).reshape(-1, block, cols)

        def add(total, pair):
            xb, dyb = pair
            return total + jnp.sum((xb @ cos_u) * (dyb @ cos_v) - (xb @ sin_u) * (dyb @ sin_v), axis=0), None

        start = jnp.zeros(entries.shape[1], jnp.float32)
        partial, _ = lax.scan(add, to_varying(start, reduced) if reduced else start, (x, dy))
        partial = partial * np.float32(1.0 / (d1 * d2))
        return lax.psum(partial, reduced) if reduced else partial

    mapped = jax.shard_map(
        local,
        mesh=layout.mesh,
        in_specs=(
            layout.activation_spec(x.ndim, layout.x_features),
            layout.activation_spec(dy.ndim, layout.dy_features),
            P(),
        ),
        out_specs=P(),
    )
    return mapped(x, dy, entries)


def _impl(shape, layout, precision, x, kernel, c, entries, alpha):
    w = _effective(kernel, c, entries, shape, alpha, layout, x.dtype)
    return lax.dot_general(x, w, (((x.ndim - 1,), (0,)), ((), ())), precision=precision)


_mesh_matmul = jax.custom_vjp(_impl, nondiff_argnums=(0, 1, 2))


def _fwd(shape, layout, precision, x, kernel, c, entries, alpha):
    w = _effective(kernel.value, c.value, entries.value, shape, alpha.value, layout, x.value.dtype)
    y = lax.dot_general(x.value, w, (((x.value.ndim - 1,), (0,)), ((), ())), precision=precision)
    x_kept = x.value if (c.perturbed or alpha.perturbed or kernel.perturbed) else None
    # dx needs W0 + ΔW: keep this device's block (as the frozen layer keeps W0), so XLA reuses the forward's
    # gather of it under "fsdp" instead of building and gathering it again.
    w_kept = w if x.perturbed else None
    kernel_dtype = jnp.zeros((0,), kernel.value.dtype) if kernel.perturbed else None
    dc_marker = jnp.zeros((0,)) if (c.perturbed or alpha.perturbed) else None
    return y, (x_kept, w_kept, kernel_dtype, c.value, entries.value, alpha.value, dc_marker)


def _bwd(shape, layout, precision, residuals, dy):
    x, w, kernel_dtype, c, entries, alpha, dc_marker = residuals
    dx = dkernel = dc = dalpha = None
    if w is not None:
        dx = lax.dot_general(dy, w.astype(dy.dtype), (((dy.ndim - 1,), (1,)), ((), ())), precision=precision)
    if dc_marker is not None:
        unit = _unit_coefficient_grad(x, dy, entries, shape, layout)
        dc, dalpha = unit * alpha, jnp.dot(unit, c)
    if kernel_dtype is not None:
        dkernel = weight_gradient(x, dy, precision, kernel_dtype.dtype)
    return dx, dkernel, dc, None, dalpha


_mesh_matmul.defvjp(_fwd, _bwd, symbolic_zeros=True)


def mesh_adapted_matmul(
    x: jax.Array,
    kernel: jax.Array,
    c: jax.Array,
    entries: jax.Array | np.ndarray,
    shape: Shape2D,
    alpha: float | jax.Array,
    layout: MatmulLayout,
    *,
    precision: lax.PrecisionLike = None,
    dtype: Any = None,
) -> jax.Array:
    """``x @ (kernel + delta_w(c, entries, shape, alpha))`` on ``layout.mesh`` (see the module docstring).

    Args:
      x: activations ``(batch, ..., d1)`` laid out as ``layout`` says.
      kernel: ``(d1, d2)``, sharded as ``layout.kernel_spec``.
      c: ``(n,)`` coefficients (replicated). entries: int ``(2, n)``. alpha: the scaling (may be traced).
      shape: static ``(d1, d2)``.
      layout: a :class:`MatmulLayout` (static).
      precision / dtype: as :func:`fourier_flax.methods.fourierft.backward.adapted_matmul`.

    Returns:
      ``(batch, ..., d2)`` in the compute dtype.
    """
    shape = (int(shape[0]), int(shape[1]))
    if x.ndim < 2:
        raise ValueError(f"x must have a leading batch axis and features, got shape {x.shape}.")
    dtype = jnp.result_type(x, kernel) if dtype is None else jnp.dtype(dtype)
    return _mesh_matmul(
        shape,
        layout,
        precision,
        x.astype(dtype),
        kernel,
        jnp.asarray(c).astype(jnp.float32),
        jnp.asarray(entries, jnp.int32),
        jnp.asarray(alpha).astype(jnp.float32),
    )


def matmul_layout(path: str, shape: tuple[int, int]) -> MatmulLayout | None:
    """The :class:`MatmulLayout` of the 2-D kernel at ``path`` under the active :func:`fourier_flax.mesh.use_mesh`,
    or None outside one."""
    if active_mesh() is None:
        return None
    mesh, strategy = active_mesh()
    spec = kernel_spec(strategy, path, shape, mesh.shape["model"])
    rows, cols = (tuple(spec) + (None, None))[:2]
    tokens = batch_spec(strategy)[0]
    if strategy == "tp":  # activations split like the kernel's features (Megatron)
        return MatmulLayout(mesh, spec, tokens, x_features=rows, dy_features=cols)
    return MatmulLayout(mesh, spec, tokens)  # dp: replicated kernel; fsdp: gathered for compute
