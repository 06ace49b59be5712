"""Placing a params tree (base + adapter) on a device mesh by strategy: :func:`param_specs`, :func:`shard_params`.

Frozen kernels lie as :func:`fourier_flax.mesh.kernel_spec` says; an adapter leaf that runs along a kernel side
(the method's :meth:`~fourier_flax.methods.base.AdapterMethod.leaf_axes`: LoRA's ``lora_a`` along ``d1``,
``lora_b`` along ``d2``) is split as that side of its kernel, exactly as :mod:`fourier_flax.nnx` shards it; other
adapter leaves (FourierFT's ``n`` coefficients) stay replicated.

Example::

  mesh = jax.make_mesh((2, 4), ("data", "model"))
  params = shard_params(params, mesh, "tp")
"""

from __future__ import annotations

import jax
import numpy as np
from flax import traverse_util
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fourier_flax.mesh import STRATEGIES, Strategy, kernel_spec, parallel_role
from fourier_flax.methods import ADAPTER_LEAVES, METHODS


def param_specs(params, mesh: Mesh, strategy: Strategy):
    """The ``PartitionSpec`` of every leaf of a params tree (base + adapter) under ``strategy``.

    * ``"dp"``: everything replicated; the batch goes over ``"data"``.
    * ``"fsdp"``: every frozen 2-D+ kernel split over ``"model"`` along its last axis that divides (gathered for
      compute by XLA, as FSDP does); adapter leaves, biases, norms and the head replicated.
    * ``"tp"``: column-parallel kernels (:data:`fourier_flax.mesh.COLUMN_PARALLEL`) ``P(None, "model")`` with
      their biases ``P("model")``, row-parallel ones (:data:`fourier_flax.mesh.ROW_PARALLEL`) ``P("model", None)``;
      everything else replicated.

    Adapter leaves of a 2-D kernel follow it along the sides their method names (:func:`adapter_leaf_spec`);
    FourierFT's spectra (``n`` floats, along no side) are replicated.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be 'dp', 'fsdp' or 'tp', got {strategy!r}.")
    model_size = mesh.shape["model"]
    flat = traverse_util.flatten_dict(params)

    def spec(key, leaf) -> P:
        shape = np.shape(leaf)
        name, path = key[-1], ".".join(str(k) for k in key[:-1] if k != "params")
        if name in ADAPTER_LEAVES:
            kernel = flat.get((*key[:-1], "kernel"))
            if kernel is None:
                return P()
            return adapter_leaf_spec(name, np.ndim(leaf), kernel_spec(strategy, path, np.shape(kernel), model_size))
        if name == "kernel":
            return kernel_spec(strategy, path, shape, model_size)
        if strategy == "tp" and name == "bias" and parallel_role(path) == "column" and shape[-1] % model_size == 0:
            return P("model")
        return P()

    return traverse_util.unflatten_dict({key: spec(key, leaf) for key, leaf in flat.items()})


def shard_params(params, mesh: Mesh, strategy: Strategy):
    """``params`` placed on ``mesh`` by :func:`param_specs` (``jax.device_put`` with ``NamedSharding``)."""
    specs = param_specs(params, mesh, strategy)
    return jax.tree.map(lambda leaf, spec: jax.device_put(leaf, NamedSharding(mesh, spec)), params, specs)


def adapter_leaf_spec(name: str, ndim: int, kernel: P) -> P:
    """The ``PartitionSpec`` of adapter leaf ``name`` (``ndim`` axes) beside a kernel laid out as ``kernel``.

    Each leaf axis the method places along the kernel's ``d1`` (``"in"``) or ``d2`` (``"out"``) side is split as
    that side of a 2-D kernel; leading stacked-layer axes follow the kernel's. Leaves along no side, and leaves
    beside kernels with more than two per-layer axes, are replicated.

    Example::

      adapter_leaf_spec("lora_b", 2, P(None, "model"))  # (r, d2) beside a column-parallel kernel
      # PartitionSpec(None, 'model')
    """
    axes = next((method.leaf_axes(name) for method in METHODS if name in method.leaf_names), None)
    if axes is None:
        return P()
    stack = ndim - len(axes)
    sides = (tuple(kernel) + (None,) * (stack + 2))[: stack + 2]
    if len(kernel) > stack + 2:
        return P()
    named = {"in": sides[stack], "out": sides[stack + 1]}
    return P(*sides[:stack], *(named.get(axis) for axis in axes))
