"""Running an unmodified Flax model with its adapter: ``with intercept(config): model.apply(params, x)``.

Inside :func:`intercept`, every call of a targeted ``nn.Dense``, ``nn.DenseGeneral``, ``nn.Conv`` or Hugging Face
GPT-2 ``FlaxConv1D`` reads the module's ``kernel`` and adapter leaves (``fourierft_spectrum``, ``lora_a``/``lora_b``,
...), builds the adapted kernel in float32 (``W0 + ΔW``, or the method's own, e.g. DoRA's rescaling), casts it to
the layer's compute dtype and runs the
layer's own computation on it: one matmul per layer, as after :func:`fourier_flax.merge_adapter`. Layers that are
not targeted run untouched. A module's path is its scope path (``encoder.layer.0.attention.self.query``); inside
``nn.scan``/``nn.vmap`` it is the params-tree path of the stacked module and the variables are per-layer slices.
Because the update is built the same way as in :func:`fourier_flax.merge_adapter`, the adapted model and the
merged model agree up to the rounding of the cast.

Contexts nest: FourierFT on some layers and LoRA on others compose (:func:`fourier_flax.init_adapter` refuses
two adapters on one layer).

jit. Entering :func:`intercept` also sets a ``jax.make_user_context`` value that is part of ``jax.jit``'s cache
key, so a function traced inside the context is retraced outside it (and the reverse): a jitted function never
silently reuses a trace made with the other setting (or another config).

Example::

  config = FourierFTConfig(target_modules=["query", "value"], n_frequency=1000, scaling=150.0)
  params = init_adapter(model.params, config, jax.random.key(0))
  with intercept(config):
    hidden = model(input_ids, params=params).last_hidden_state

Own matmuls. For plain matmul layers (``nn.Dense``, GPT-2's ``FlaxConv1D``:
:func:`fourier_flax.layer_kinds.matmul_layer`) the method may compute the layer itself, through the same
call NNX layers use (:func:`fourier_flax.adapted_modules.adapted_matmul_call`): FourierFT's spectral backward
for ``config.backward`` "spectral"/"auto" (:func:`fourier_flax.methods.fourierft.backward.adapted_matmul`,
which computes ``dL/dc`` without forming the ``d1 × d2`` weight gradient), its mesh matmul, adapter banks'
per-example matmul; otherwise the dense path above is used.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
from collections.abc import Iterator, Mapping
from typing import Any

import flax.linen as nn
import jax

from fourier_flax import layer_kinds
from fourier_flax.adapted_modules import (
    adapted_matmul_call,
    adapter_leaf_names,
    module_effective_kernel,
    stacked_layers,
)
from fourier_flax.methods import ADAPTER_LEAVES, AdapterConfig, check_scale_override, method_of

# Part of jax.jit's cache key: the stack of configs intercepting right now.
_ACTIVE = jax.make_user_context(default_value=())
# The (config, alpha) pairs of the active contexts, for models that are not linen (fourier_flax.finetune.nnx_encoder).
_CONFIGS: contextvars.ContextVar[tuple] = contextvars.ContextVar("fourier_flax_active_adapters", default=())
# Set while the interceptor runs a layer itself, so that inner call is not intercepted again.
_INSIDE = contextvars.ContextVar("fourier_flax_inside_adapted_layer", default=False)


def _config_key(config: AdapterConfig) -> tuple[str, str]:
    return type(config).__name__, repr(config)


@contextlib.contextmanager
def intercept(config: AdapterConfig, *, scaling: jax.Array | float | None = None) -> Iterator[None]:
    """Within this context, targeted layers of any Flax model run with their adapter's ``ΔW``.

    Args:
      config: the :class:`FourierFTConfig` or :class:`LoraConfig` the params were adapted with
        (:func:`fourier_flax.init_adapter`).
      scaling: the method's scale factor in place of the config's (FourierFT's ``scaling``, LoRA's
        ``lora_alpha / r``), possibly a traced scalar, so a jitted or vmapped sweep over it compiles once (the
        config is static). Save the adapter with the chosen value in the config, e.g.
        ``dataclasses.replace(config, scaling=chosen)``. Refused for VeRA and SVFT, which have none.

    Raises (at the layer call):
      ValueError: a targeted layer has no adapter leaves (call ``init_adapter`` first), has a layout the config
        does not declare (GPT-2's ``FlaxConv1D`` needs ``fan_in_fan_out=True``, as in PEFT), or is of a kind
        FourierFT does not adapt.
    """
    adapter_leaf_names(config)  # rejects other config types
    check_scale_override(config, scaling)
    alpha = scaling if scaling is not None else getattr(config, "scaling", None)
    interceptor = functools.partial(_intercept_call, config, alpha)
    token = _CONFIGS.set(_CONFIGS.get() + ((config, alpha),))
    try:
        with _ACTIVE(_ACTIVE.value + (_config_key(config),)), nn.intercept_methods(interceptor):
            yield
    finally:
        _CONFIGS.reset(token)


def active_adapters() -> tuple[tuple[AdapterConfig, Any], ...]:
    """The ``(config, alpha)`` of every enclosing :func:`intercept`, outermost first (``alpha``: the scaling
    in effect, possibly traced; None for methods without one)."""
    return _CONFIGS.get()


def _intercept_call(config: AdapterConfig, alpha, next_fun, args, kwargs, context):
    module = context.module
    if _INSIDE.get() or context.method_name != "__call__" or module.scope is None:
        return next_fun(*args, **kwargs)
    path = ".".join(str(key) for key in module.scope.path)
    if module.is_initializing() or not module.has_variable("params", "kernel"):
        return next_fun(*args, **kwargs)
    if not config.is_targeted(path):
        carried = [leaf for leaf in adapter_leaf_names(config) if module.has_variable("params", leaf)]
        if carried:
            raise ValueError(
                f"module {path!r} carries {carried} but the {type(config).__name__} being intercepted does not "
                "target it, so its adapter would silently not run: intercept with the config the params were "
                "adapted with (or use fourier_flax.get_peft_model, which keeps them together)."
            )
        return next_fun(*args, **kwargs)
    _check_layer(config, path, module)
    params = module.variables["params"]
    # A plain matmul layer called on its input alone may run the method's own matmul (as NNX layers do).
    layer = layer_kinds.matmul_layer(module) if len(args) == 1 and not kwargs else None
    y = adapted_matmul_call(config, alpha, path, params, args[0] if args else None, layer)
    if y is not None:
        return y
    kernel = params["kernel"]
    # The layer's compute dtype; with dtype=None the layer promotes itself, so keep the kernel's dtype.
    compute_dtype = getattr(module, "dtype", None) or kernel.dtype
    effective = module_effective_kernel(config, path, params, scaling=alpha).astype(compute_dtype)
    return _call_with_kernel(module, params, effective, args, kwargs)


def _check_layer(config: AdapterConfig, path: str, module: nn.Module) -> None:
    """Clear errors for a targeted layer the adapter cannot run on."""
    is_conv1d = layer_kinds.is_conv1d(module)
    if not (is_conv1d or isinstance(module, nn.Dense | nn.DenseGeneral | nn.Conv)):
        raise ValueError(
            f"module {path!r} is a {type(module).__name__}; adapters apply to nn.Dense, nn.DenseGeneral, nn.Conv "
            "and GPT-2's FlaxConv1D. Narrow target_modules (or add it to exclude_modules)."
        )
    if is_conv1d != config.fan_in_fan_out:
        raise ValueError(
            f"module {path!r} is a {type(module).__name__} but the config has "
            f"fan_in_fan_out={config.fan_in_fan_out}: set fan_in_fan_out=True exactly for GPT-2's Conv1D "
            "(its kernel is stored (out, in)), as in PEFT."
        )
    if isinstance(module, nn.Conv) and method_of(config).uses_view:
        ndim = len(module.kernel_size) + 2
        if config.kernel_in_axes_for(path) != ndim - 1:
            raise ValueError(
                f"module {path!r} is an nn.Conv (kernel (*window, in, out)): its 2-D view must be "
                f"(prod(window)·in, out); set kernel_in_axes={{{path.split('.')[-1]!r}: {ndim - 1}}}."
            )
    if isinstance(module, nn.DenseGeneral):
        axis = (module.axis,) if isinstance(module.axis, int) else tuple(module.axis)
        if module.batch_dims:
            raise ValueError(f"module {path!r}: nn.DenseGeneral with batch_dims is not supported.")
        if method_of(config).uses_view and len(axis) != config.kernel_in_axes_for(path):
            raise ValueError(
                f"module {path!r} is an nn.DenseGeneral contracting {len(axis)} axes, but kernel_in_axes gives "
                f"{config.kernel_in_axes_for(path)}: set kernel_in_axes={{{path.split('.')[-1]!r}: {len(axis)}}}."
            )
    missing = [leaf for leaf in adapter_leaf_names(config) if not module.has_variable("params", leaf)]
    if missing:
        raise ValueError(
            f"module {path!r} is targeted but its params have no {missing}: add the adapter first with "
            "params = fourier_flax.init_adapter(params, config, rng) (same config, and stacked_axes for "
            "nn.scan layers)."
        )
    if stacked_layers(config, module.variables["params"]) != 0:
        raise ValueError(
            f"module {path!r} sees one layer's kernel but stacked adapter leaves: stacked_axes was given to "
            "init_adapter for a module that is not stacked by nn.scan/nn.vmap."
        )


def _call_with_kernel(module, params: Mapping, kernel: jax.Array, args, kwargs):
    """The layer's own computation with ``kernel`` in place of its stored one (and no adapter leaves)."""
    layer_params = {k: v for k, v in params.items() if k not in ADAPTER_LEAVES}
    token = _INSIDE.set(True)
    try:
        return module.clone(parent=None).apply({"params": {**layer_params, "kernel": kernel}}, *args, **kwargs)
    finally:
        _INSIDE.reset(token)
