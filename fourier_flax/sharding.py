"""FourierFT on a device mesh: each device builds only its own block of ΔW, from the replicated spectrum.

``ΔW[p, q] = alpha/(d1·d2) · Σ_l c_l cos(2π(p·u_l/d1 + q·v_l/d2))`` is separable: the block of rows ``R`` and
columns ``C`` is ``alpha/(d1·d2) · (C_u[R] diag(c) C_v[C]ᵀ − S_u[R] diag(c) S_v[C]ᵀ)`` with ``C_u[p, l] =
cos(2π p u_l / d1)`` etc. :func:`sharded_delta_w` runs that inside ``jax.shard_map``: the coefficients and entries
(n numbers each) are replicated, every device computes the DFT columns of its own rows and columns, and no device
ever holds — or receives — the whole ``d1 × d2`` update. Its gradient with respect to ``c`` is each device's
partial sum, reduced by one ``psum`` of ``n`` floats (what ``shard_map``'s transpose inserts).

Training: :func:`param_specs` / :func:`shard_params` / :func:`batch_spec` place a params tree and batches by
strategy ("dp", "fsdp", "tp"); inside :func:`use_mesh`, FourierFT's adapted layers run
:func:`fourier_flax.mesh_matmul.mesh_adapted_matmul` with the layout :func:`matmul_layout` derives (ΔW block-local,
``dL/dc`` from local token sums), so a train step adds only ``n`` floats per adapted layer to the frozen model's
collectives.

Example::

  >>> mesh = jax.make_mesh((2, 4), ("data", "model"))
  >>> w = sharded_delta_w(c, E, (768, 768), 150.0, mesh, P(None, "model"))  # (768, 768), columns over "model"
  >>> with use_mesh(mesh, "tp"), intercept(config):
  ...   trainable, opt_state, metrics = step(shard_params(trainable, mesh, "tp"), opt_state, frozen, batch, rng)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from fourier_flax.spectral import MATMUL_MAX_SIDE, check_entries, dft_tables


def axis_names(names) -> tuple[str, ...]:
    """A ``PartitionSpec`` entry (None, a name or a tuple of names) as a tuple of mesh axis names."""
    if names is None:
        return ()
    return (names,) if isinstance(names, str) else tuple(names)


def _axis_size(mesh: Mesh, names) -> int:
    return math.prod(mesh.shape[name] for name in axis_names(names))


def block_index(names) -> jax.Array:
    """Inside ``shard_map``: this device's block number along a dimension split over ``names`` (row-major)."""
    index = jnp.int32(0)
    for name in axis_names(names):
        index = index * jax.lax.axis_size(name) + jax.lax.axis_index(name)
    return index


def to_varying(x: jax.Array, names: tuple[str, ...]) -> jax.Array:
    """``x`` marked as varying over ``names`` inside ``shard_map`` (``pcast`` in jax >= 0.8, ``pvary`` before)."""
    if hasattr(jax.lax, "pcast"):
        return jax.lax.pcast(x, names, to="varying")
    return jax.lax.pvary(x, names)


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
    rows, cols = d1 // _axis_size(mesh, row_names), d2 // _axis_size(mesh, col_names)
    if rows * _axis_size(mesh, row_names) != d1 or cols * _axis_size(mesh, col_names) != d2:
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


def sharded_module_update(config, path: str, module) -> jax.Array | None:
    """For a FourierFT module whose 2-D kernel carries a multi-device ``NamedSharding``: the merged kernel
    ``W0 + ΔW``, built block by block on the kernel's own devices (so it also works when the arrays are not fully
    addressable, e.g. multi-process). None when this does not apply (the caller merges densely)."""
    from fourier_flax.adapter import SPECTRUM, spectral_entries
    from fourier_flax.config import FourierFTConfig

    kernel = module["kernel"]
    if not isinstance(config, FourierFTConfig) or np.ndim(kernel) != 2 or np.ndim(module[SPECTRUM]) != 1:
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


Strategy = str  # "dp" | "fsdp" | "tp"
STRATEGIES = ("dp", "fsdp", "tp")
# Megatron-style roles by module name (BERT/RoBERTa, LLaMA): column-parallel kernels split their outputs,
# row-parallel kernels their inputs, so a column/row pair needs one reduction, as in Megatron-LM.
COLUMN_PARALLEL = ("query", "key", "value", "intermediate.dense", "q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
ROW_PARALLEL = ("attention.output.dense", "output.dense", "o_proj", "down_proj")


def _role(path: str) -> str | None:
    from fourier_flax import targeting

    if targeting.matches_module(path, ROW_PARALLEL):
        return "row"
    if targeting.matches_module(path, COLUMN_PARALLEL):
        return "column"
    return None


def kernel_spec(strategy: Strategy, path: str, shape: tuple[int, ...], model_size: int) -> P:
    """The ``PartitionSpec`` of the frozen ``kernel`` of the module at ``path`` under ``strategy``."""
    if strategy == "dp" or len(shape) < 2:
        return P()
    if strategy == "fsdp":
        for axis in reversed(range(len(shape))):
            if shape[axis] % model_size == 0:
                return P(*([None] * axis + ["model"] + [None] * (len(shape) - axis - 1)))
        return P()
    role = _role(path)
    if role == "column" and shape[-1] % model_size == 0:
        return P(None, "model")
    if role == "row" and shape[0] % model_size == 0:
        return P("model", None)
    return P()


def param_specs(params, mesh: Mesh, strategy: Strategy):
    """The ``PartitionSpec`` of every leaf of a params tree (base + adapter) under ``strategy``.

    * ``"dp"``: everything replicated; the batch goes over ``"data"``.
    * ``"fsdp"``: every frozen 2-D+ kernel split over ``"model"`` along its last axis that divides (gathered for
      compute by XLA, as FSDP does); adapter leaves, biases, norms and the head replicated.
    * ``"tp"``: column-parallel kernels (:data:`COLUMN_PARALLEL`) ``P(None, "model")`` with their biases
      ``P("model")``, row-parallel ones (:data:`ROW_PARALLEL`) ``P("model", None)``; everything else replicated.

    The spectra and other adapter leaves (a few thousand floats per layer) are always replicated.
    """
    from flax import traverse_util

    from fourier_flax.methods import ADAPTER_LEAVES

    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be 'dp', 'fsdp' or 'tp', got {strategy!r}.")
    model_size = mesh.shape["model"]
    flat = traverse_util.flatten_dict(params)

    def spec(key, leaf) -> P:
        shape = np.shape(leaf)
        name, path = key[-1], ".".join(str(k) for k in key[:-1] if k != "params")
        if name in ADAPTER_LEAVES:
            return P()
        if name == "kernel":
            return kernel_spec(strategy, path, shape, model_size)
        if strategy == "tp" and name == "bias" and _role(path) == "column" and shape[-1] % model_size == 0:
            return P("model")
        return P()

    return traverse_util.unflatten_dict({key: spec(key, leaf) for key, leaf in flat.items()})


def shard_params(params, mesh: Mesh, strategy: Strategy):
    """``params`` placed on ``mesh`` by :func:`param_specs` (``jax.device_put`` with ``NamedSharding``)."""
    from jax.sharding import NamedSharding

    specs = param_specs(params, mesh, strategy)
    return jax.tree.map(lambda leaf, spec: jax.device_put(leaf, NamedSharding(mesh, spec)), params, specs)


def batch_spec(strategy: Strategy) -> P:
    """How a batch's leading axis is split: over ``"data"``, or over both axes under ``"fsdp"``."""
    return P(("data", "model")) if strategy == "fsdp" else P("data")


# The (mesh, strategy) adapted layers lay their matmuls out for; part of jax.jit's cache key.
_MESH = jax.make_user_context(default_value=None)


@contextlib.contextmanager
def use_mesh(mesh: Mesh, strategy: Strategy) -> Iterator[None]:
    """Within this context, FourierFT's adapted ``nn.Dense`` layers (linen under :func:`fourier_flax.intercept`,
    and NNX) run :func:`fourier_flax.mesh_matmul.mesh_adapted_matmul` with the layout ``strategy`` gives their
    kernel: ΔW built block-local, ``dL/dc`` reduced as ``n`` floats.

    Example::

      >>> with use_mesh(mesh, "tp"), intercept(config):
      ...   trainable, state, metrics = step(trainable, state, frozen, batch, rng)
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be 'dp', 'fsdp' or 'tp', got {strategy!r}.")
    if "data" not in mesh.shape or "model" not in mesh.shape:
        raise ValueError(f"the mesh needs axes 'data' and 'model', got {tuple(mesh.shape)}.")
    with _MESH((mesh, strategy)):
        yield


def matmul_layout(path: str, shape: tuple[int, int]):
    """The :class:`fourier_flax.mesh_matmul.MatmulLayout` of the 2-D kernel at ``path`` under the active
    :func:`use_mesh`, or None outside one (or when a sharded side does not divide)."""
    from fourier_flax.mesh_matmul import MatmulLayout

    if _MESH.value is None:
        return None
    mesh, strategy = _MESH.value
    spec = kernel_spec(strategy, path, shape, mesh.shape["model"])
    rows, cols = (tuple(spec) + (None, None))[:2]
    tokens = batch_spec(strategy)[0]
    if strategy == "tp":  # activations split like the kernel's features (Megatron)
        return MatmulLayout(mesh, spec, tokens, x_features=rows, dy_features=cols)
    return MatmulLayout(mesh, spec, tokens)  # dp: replicated kernel; fsdp: gathered for compute
