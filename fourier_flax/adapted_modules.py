"""One adapted module seen through its method: its kernel's 2-D view, its ``ΔW`` and effective kernel.

A module is a params subtree holding a ``kernel`` and the leaves its adapter method adds (see
:func:`fourier_flax.init_adapter`). The update is defined on the kernel's 2-D view ``(d1, d2) =
(prod(shape[:k]), prod(shape[k:]))`` with ``k = config.kernel_in_axes_for(path)`` (1 for ``nn.Dense``'s
``(in, out)``); modules of layers stacked by ``nn.scan`` carry leading stacked-layer axes on every leaf.

Example::

  kernel_view("encoder.layer.0.attention.self.query", (384, 384), 1)
  # (384, 384)
  module_delta_w(config, path, params_of_the_module).shape  # the kernel's own shape
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp

from fourier_flax import module_paths, targeting
from fourier_flax.layer_kinds import MatmulLayer
from fourier_flax.methods import ADAPTER_LEAVES, AdapterConfig, method_of


def adapter_leaf_names(config: AdapterConfig) -> tuple[str, ...]:
    """The leaves ``config``'s adapter adds beside a kernel."""
    return method_of(config).leaves_for(config)


def trained_leaf_names(config: AdapterConfig) -> tuple[str, ...]:
    """The leaves of ``config``'s adapter that train (all but frozen ones such as VeRA's projections)."""
    return method_of(config).trained_leaves_for(config)


def kernel_view(path: str, kernel_shape: tuple[int, ...], in_axes: int) -> tuple[int, int]:
    """The 2-D view ``(prod(shape[:k]), prod(shape[k:]))`` of one layer's kernel, ``k = in_axes``.

    Raises:
      ValueError: ``k`` does not split the kernel's axes into two non-empty groups.
    """
    if not 1 <= in_axes < len(kernel_shape):
        raise ValueError(
            f"module {path!r}: a kernel of shape {tuple(kernel_shape)} has no 2-D view with "
            f"kernel_in_axes={in_axes}; it must be between 1 and {len(kernel_shape) - 1}. If this kernel "
            "carries layers stacked by nn.scan, pass stacked_axes (e.g. {'layers': 1})."
        )
    return math.prod(kernel_shape[:in_axes]), math.prod(kernel_shape[in_axes:])


def stacked_layers(config: AdapterConfig, module: Mapping) -> int:
    """How many leading stacked-layer axes the adapter leaves (and so the kernel) of ``module`` carry."""
    return method_of(config).stacked_layers(module)


def check_kernel_layout(
    config: AdapterConfig, path: str, kernel_shape: tuple[int, ...], bias_shape: tuple[int, ...] | None
) -> None:
    """Refuses a 2-D kernel (one layer's, unstacked) whose stored layout contradicts ``config.fan_in_fan_out``.

    The layout shows when the kernel is not square and has a bias: ``bias (out,)`` matching axis 0 means the
    kernel is stored ``(out, in)`` (Hugging Face's GPT-2 ``FlaxConv1D``), which needs ``fan_in_fan_out=True``,
    as in PEFT; matching the last axis means ``(in, out)`` (``nn.Dense``), which needs False. Square kernels
    show nothing here; :func:`fourier_flax.intercept` checks the layer type when it runs.

    Raises:
      ValueError: naming the module, the evidence and the flag to set.
    """
    if bias_shape is None or len(kernel_shape) != 2 or kernel_shape[0] == kernel_shape[1]:
        return
    out_in = bias_shape[-1] == kernel_shape[0]
    if out_in != config.fan_in_fan_out:
        layout = "(out, in), like GPT-2's FlaxConv1D" if out_in else "(in, out), like nn.Dense"
        raise ValueError(
            f"module {path!r}: its kernel {kernel_shape} with bias {bias_shape} is stored {layout}, but the config "
            f"has fan_in_fan_out={config.fan_in_fan_out}. Set fan_in_fan_out={out_in} (PEFT sets it for Conv1D "
            "itself, with a warning; fourier_flax.get_peft_model does the same), or the update lands on the "
            "transposed layout."
        )


def module_layout_check(config: AdapterConfig, path: str, module: Mapping, stack: int) -> None:
    """:func:`check_kernel_layout` on the params of one module (``stack`` leading stacked-layer axes)."""
    bias = module.get("bias")
    bias_shape = None if bias is None else tuple(jnp.shape(bias))[stack:]
    check_kernel_layout(config, path, tuple(jnp.shape(module["kernel"]))[stack:], bias_shape)


def module_effective_kernel(
    config: AdapterConfig, path: str, module: Mapping, *, scaling: jax.Array | float | None = None
) -> jax.Array:
    """The float32 kernel the adapted module at ``path`` computes with (``W0 + ΔW``, or DoRA's rescaling), in
    the shape of its ``kernel``."""
    stack = stacked_layers(config, module)
    kernel_shape = tuple(jnp.shape(module["kernel"]))
    shape = kernel_view(path, kernel_shape[stack:], config.kernel_in_axes_for(path))
    return method_of(config).effective_kernel(config, path, module, shape, scaling=scaling).reshape(kernel_shape)


def module_delta_w(
    config: AdapterConfig, path: str, module: Mapping, *, scaling: jax.Array | float | None = None
) -> jax.Array:
    """The float32 update ``ΔW`` of the adapted module at ``path``, in the shape of its ``kernel``.

    Args:
      config: the adapter's configuration.
      path: the module path (for ``kernel_in_axes`` and the ``n`` checks).
      module: the module's params, holding ``kernel`` and the adapter leaves; leaves stacked by ``nn.scan``
        give a stacked ``ΔW``.
      scaling: FourierFT's ``alpha`` in place of ``config.scaling`` (may be traced); None uses the config's.
    """
    stack = stacked_layers(config, module)
    kernel_shape = tuple(jnp.shape(module["kernel"]))
    shape = kernel_view(path, kernel_shape[stack:], config.kernel_in_axes_for(path))
    update = method_of(config).delta_w(config, path, module, shape, scaling=scaling)
    return update.reshape(kernel_shape)


def adapted_matmul_call(
    config: AdapterConfig, alpha: Any, path: str, params: Mapping, inputs: jax.Array, layer: MatmulLayer | None
) -> jax.Array | None:
    """``inputs @ W' (+ bias)`` of an adapted plain matmul ``layer`` by its method's own matmul, or None: run the
    layer's own computation on the adapted kernel (:func:`module_effective_kernel`). The one call the linen
    interceptor and the NNX layers share.

    Args:
      config, alpha: the adapter and its scale in effect (FourierFT's possibly traced ``scaling``).
      path: the module's path; ``params``: its stored ``kernel`` and adapter leaves.
      inputs: ``(..., in)``; ``layer``: :func:`fourier_flax.layer_kinds.matmul_layer` of the layer (None: not a
        plain matmul).

    Raises:
      ValueError: the method runs only through its own matmul (adapter banks) and the layer is not a plain one.
    """
    method = method_of(config)
    if layer is None:
        if method.matmul_only:
            raise ValueError(
                f"module {path!r} is not a plain x @ kernel layer; {method.name} runs on plain nn.Dense / nnx.Linear "
                "layers only. Narrow target_modules."
            )
        return None
    x = inputs if layer.dtype is None else jnp.asarray(inputs, layer.dtype)
    params = {name: value for name, value in params.items() if name == "kernel" or name in ADAPTER_LEAVES}
    y = method.matmul(
        config, alpha, path, params, x, precision=layer.precision, dtype=layer.dtype, transposed=layer.transposed
    )
    return None if y is None else layer.add_bias(y)


def adapter_module_paths(tree: module_paths.Tree) -> list[str]:
    """Sorted paths of the modules in ``tree`` that carry adapter leaves (FourierFT or LoRA)."""
    return [
        path
        for path in module_paths.kernel_paths(tree)
        if any(leaf in module_paths.get_module(tree, path) for leaf in ADAPTER_LEAVES)
    ]


def targeted_paths(tree: module_paths.Tree, config: AdapterConfig) -> list[str]:
    """Sorted paths of the kernel modules of ``tree`` that ``config`` targets.

    Raises:
      ValueError: nothing matches; the message lists the module paths that exist.
    """
    available = module_paths.kernel_paths(tree)
    paths = [path for path in available if config.is_targeted(path)]
    if not paths:
        raise ValueError(
            f"target_modules={config.target_modules!r} (exclude_modules={config.exclude_modules!r}, "
            f"layers_to_transform={config.layers_to_transform!r}) matches none of the {len(available)} "
            "modules with a kernel in this params tree. Module paths are dotted, without the 'params' key:\n"
            + targeting.describe_paths(available)
        )
    return paths
