"""The mesh vocabulary every adapted layer shares: strategies, kernel specs, and the active mesh.

A strategy ("dp", "fsdp", "tp") says how a frozen kernel lies on a ``("data", "model")`` mesh
(:func:`kernel_spec`) and how batches are split (:func:`batch_spec`); :func:`use_mesh` makes one active so that
adapted layers lay their own computations out to match (FourierFT's
:func:`fourier_flax.methods.fourierft.mesh_matmul.mesh_adapted_matmul`). Placing a whole params tree is
:func:`fourier_flax.sharding.shard_params`.

Example::

  kernel_spec("tp", "encoder.layer.0.attention.self.query", (384, 384), model_size=2)
  # PartitionSpec(None, 'model')
  with use_mesh(mesh, "tp"), intercept(config):
    trainable, opt_state, metrics = step(shard_params(trainable, mesh, "tp"), opt_state, frozen, batch, rng)
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import jax
import jax.numpy as jnp
from jax.sharding import Mesh
from jax.sharding import PartitionSpec as P

from fourier_flax import targeting


def axis_names(names) -> tuple[str, ...]:
    """A ``PartitionSpec`` entry (None, a name or a tuple of names) as a tuple of mesh axis names."""
    if names is None:
        return ()
    return (names,) if isinstance(names, str) else tuple(names)


def axis_size(mesh: Mesh, names) -> int:
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


Strategy = str  # "dp" | "fsdp" | "tp"
STRATEGIES = ("dp", "fsdp", "tp")
# Megatron-style roles by module name (BERT/RoBERTa, LLaMA): column-parallel kernels split their outputs,
# row-parallel kernels their inputs, so a column/row pair needs one reduction, as in Megatron-LM.
COLUMN_PARALLEL = ("query", "key", "value", "intermediate.dense", "q_proj", "k_proj", "v_proj", "gate_proj", "up_proj")
ROW_PARALLEL = ("attention.output.dense", "output.dense", "o_proj", "down_proj")


def parallel_role(path: str) -> str | None:
    if targeting.matches_module(path, ROW_PARALLEL):
        return "row"
    if targeting.matches_module(path, COLUMN_PARALLEL):
        return "column"
    return None


def kernel_spec(strategy: Strategy, path: str, shape: tuple[int, ...], model_size: int) -> P:
    """The ``PartitionSpec`` of the frozen ``kernel`` of the module at ``path`` under ``strategy``.

    ``shape`` is the kernel's ``(*stack, in, out)`` (leading axes: layers stacked by ``nn.scan``, never split):
    under ``"tp"`` a column-parallel layer splits ``out``, a row-parallel one ``in``.

    Example::

      kernel_spec("tp", "encoder.layer.attention.output.dense", (6, 384, 384), 4)
      # PartitionSpec(None, 'model', None)
    """
    if strategy == "dp" or len(shape) < 2:
        return P()
    if strategy == "fsdp":
        for axis in reversed(range(len(shape))):
            if shape[axis] % model_size == 0:
                return P(*([None] * axis + ["model"] + [None] * (len(shape) - axis - 1)))
        return P()
    role, stack = parallel_role(path), [None] * (len(shape) - 2)
    if role == "column" and shape[-1] % model_size == 0:
        return P(*stack, None, "model")
    if role == "row" and shape[-2] % model_size == 0:
        return P(*stack, "model", None)
    return P()


def batch_spec(strategy: Strategy) -> P:
    """How a batch's leading axis is split: over ``"data"``, or over both axes under ``"fsdp"``."""
    return P(("data", "model")) if strategy == "fsdp" else P("data")


# The (mesh, strategy) adapted layers lay their matmuls out for; part of jax.jit's cache key.
_MESH = jax.make_user_context(default_value=None)


@contextlib.contextmanager
def use_mesh(mesh: Mesh, strategy: Strategy) -> Iterator[None]:
    """Within this context, FourierFT's adapted ``nn.Dense`` layers (linen under :func:`fourier_flax.intercept`,
    and NNX) run :func:`fourier_flax.methods.fourierft.mesh_matmul.mesh_adapted_matmul` with the layout
    ``strategy`` gives their kernel: ΔW built block-local, ``dL/dc`` reduced as ``n`` floats.

    Example::

      with use_mesh(mesh, "tp"), intercept(config):
        trainable, state, metrics = step(trainable, state, frozen, batch, rng)
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be 'dp', 'fsdp' or 'tp', got {strategy!r}.")
    if "data" not in mesh.shape or "model" not in mesh.shape:
        raise ValueError(f"the mesh needs axes 'data' and 'model', got {tuple(mesh.shape)}.")
    with _MESH((mesh, strategy)):
        yield


def active_mesh() -> tuple[Mesh, Strategy] | None:
    """The ``(mesh, strategy)`` of the enclosing :func:`use_mesh`, or None outside one."""
    return _MESH.value
