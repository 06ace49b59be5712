"""Adding an adapter to a pretrained params tree, and the weight update ``ΔW`` each adapted module carries.

:func:`init_adapter` puts the adapter's leaves beside the ``kernel`` of every targeted module — for FourierFT a
float32 ``fourierft_spectrum`` ``(n,)``, for LoRA ``lora_a`` ``(d1, r)`` and ``lora_b`` ``(r, d2)``, for the other
methods what their module in :mod:`fourier_flax.methods` declares — and changes nothing else: every pretrained leaf
is the same object in the returned tree and the model is not re-initialised. Everything method-specific is asked
of the method registered for the config's type (:func:`fourier_flax.methods.method_of`).

The update is defined on a kernel's 2-D view ``(d1, d2) = (prod(shape[:k]), prod(shape[k:]))`` with ``k`` from
``config.kernel_in_axes_for(path)`` (1 for ``nn.Dense``'s ``(in, out)``). With ``config.entry_sampling == "peft"``
the entries are PEFT's for the same layer: ``grid="in_out"`` for Flax kernels, and ``grid="out_in"`` when
``config.fan_in_fan_out`` is set, which (as in PEFT) marks GPT-2's ``Conv1D``, stored ``(out, in)`` by Hugging
Face's ``FlaxConv1D``.

Layers stacked by ``nn.scan`` (kernel ``(L, in, out)``) need ``stacked_axes``, module-path prefix → number of
leading stacked axes; their spectrum is ``(L, n)``, and the interceptor sees one ``(n,)`` slice per layer.

Example::

  >>> config = FourierFTConfig(target_modules=["query", "value"], n_frequency=1000)
  >>> params = init_adapter(model.params, config, jax.random.key(0))  # HF FlaxBertModel: a bare params tree
  >>> params["encoder"]["layer"]["0"]["attention"]["self"]["query"]["fourierft_spectrum"].shape
  (1000,)
  >>> variables = init_adapter(variables, config, rng, stacked_axes={"layers": 1})  # a linen nn.scan model
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from fourier_flax import module_paths, targeting
from fourier_flax.config import FourierFTConfig, LoraConfig
from fourier_flax.methods import ADAPTER_LEAVES, DoraConfig, FloraConfig, SvftConfig, VeraConfig, method_of
from fourier_flax.methods.fourierft import SPECTRUM, kernel_grid, spectral_entries
from fourier_flax.methods.lora import LORA_A, LORA_B

# The config types registered in fourier_flax.methods.
AdapterConfig = FourierFTConfig | LoraConfig | VeraConfig | DoraConfig | FloraConfig | SvftConfig

__all__ = [
    "ADAPTER_LEAVES",
    "LORA_A",
    "LORA_B",
    "SPECTRUM",
    "adapter_leaf_names",
    "adapter_module_paths",
    "init_adapter",
    "kernel_grid",
    "kernel_view",
    "module_delta_w",
    "spectral_entries",
    "stacked_layers",
    "targeted_paths",
    "trained_leaf_names",
]


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


def _stack_count(path: str, stacked_axes: Mapping[str, int]) -> int:
    counts = [v for k, v in stacked_axes.items() if path == k or path.startswith(k + ".")]
    return max(counts, default=0)


def _check_stacked_axes(available: list[str], stacked_axes: Mapping[str, int]) -> None:
    for prefix, count in stacked_axes.items():
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"stacked_axes[{prefix!r}] must be a positive int, got {count!r}.")
        if not any(p == prefix or p.startswith(prefix + ".") for p in available):
            raise ValueError(
                f"stacked_axes key {prefix!r} is not a prefix of any module path; the modules with a kernel "
                "are:\n" + targeting.describe_paths(available)
            )


def _module_rng(rng: jax.Array, path: str) -> jax.Array:
    """A key per module path, stable when other modules are added or removed from the targets."""
    return jax.random.fold_in(rng, zlib.crc32(path.encode()) & 0x7FFFFFFF)


def _new_leaves(config, path, kernel, stack, rng, shared) -> dict[str, jax.Array]:
    kernel_shape = tuple(jnp.shape(kernel))
    shape = kernel_view(path, kernel_shape[stack:], config.kernel_in_axes_for(path))
    kernel_2d = jnp.reshape(kernel, (*kernel_shape[:stack], *shape))
    return method_of(config).init_leaves(
        config,
        path,
        shape,
        tuple(kernel_shape[:stack]),
        rng,
        kernel=kernel_2d,
        modes=kernel_shape[stack:],
        shared=shared,
    )


def init_adapter(
    tree: module_paths.Tree,
    config: AdapterConfig,
    rng: jax.Array,
    *,
    stacked_axes: Mapping[str, int] | None = None,
    check_scale: bool = True,
) -> module_paths.Tree:
    """Adds the adapter leaves of ``config`` beside the kernel of every targeted module of ``tree``.

    Args:
      tree: a pretrained variables dict ``{'params': ...}`` or a bare params tree (Hugging Face's
        ``model.params``); the result has the same form.
      config: a registered adapter config — :class:`FourierFTConfig` (adds ``fourierft_spectrum``: N(0, 1), or
        zeros when ``config.init_weights``), :class:`LoraConfig` (``lora_a`` Kaiming-uniform, ``lora_b`` zeros),
        ``DoraConfig``, ``VeraConfig``, ``FloraConfig`` or ``SvftConfig`` (see their modules).
      rng: PRNG key; each module's leaves use a key derived from it and the module path.
      stacked_axes: module-path prefix → number of leading axes of layers stacked by ``nn.scan`` (or a
        ``variable_axes`` ``nn.vmap``) under it, e.g. ``{"layers": 1}``: those modules get ``(L, n)`` spectra.
      check_scale: measure the initial ``‖ΔW‖/‖W0‖`` and warn when large (below).

    Returns:
      A new tree: every pretrained leaf (and every untouched subtree) is the same object as in ``tree``.

    Warns:
      UserWarning: FourierFT's random initial ΔW exceeds ``update_scale.WARN_RATIO`` of some kernel's norm
        (:func:`fourier_flax.update_scale.check_update_scale`; skipped when the leaves are traced).

    Raises:
      ValueError: the targets match no module (the message lists the module paths), ``n`` exceeds a kernel's
        size, a kernel has no 2-D view, or a targeted module already carries adapter leaves.
    """
    adapter_leaf_names(config)  # rejects other config types
    stacked_axes = dict(stacked_axes or {})
    _check_stacked_axes(module_paths.kernel_paths(tree), stacked_axes)
    method = method_of(config)
    paths = targeted_paths(tree, config)
    views = {}
    for path in paths:
        kernel_shape = tuple(jnp.shape(module_paths.get_module(tree, path)["kernel"]))
        stack = _stack_count(path, stacked_axes)
        views[path] = kernel_view(path, kernel_shape[stack:], config.kernel_in_axes_for(path))
    shared = method.prepare(config, views)
    updates = {}
    for path in paths:
        module = module_paths.get_module(tree, path)
        present = [leaf for leaf in ADAPTER_LEAVES if leaf in module]
        if present:
            raise ValueError(
                f"module {path!r} already carries adapter leaves {present}; start from the pretrained tree "
                "(or merge_adapter first)."
            )
        stack = _stack_count(path, stacked_axes)
        module_layout_check(config, path, module, stack)
        leaves = _new_leaves(config, path, module["kernel"], stack, _module_rng(rng, path), shared)
        updates[path] = lambda m, leaves=leaves: {**m, **leaves}
    adapted = module_paths.update_modules(tree, updates)
    if check_scale:
        from fourier_flax.update_scale import check_update_scale  # imports this module

        check_update_scale(adapted, config)
    return adapted
