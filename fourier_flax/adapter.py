"""Adding an adapter to a pretrained params tree: :func:`init_adapter`.

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

  config = FourierFTConfig(target_modules=["query", "value"], n_frequency=1000)
  params = init_adapter(model.params, config, jax.random.key(0))  # HF FlaxBertModel: a bare params tree
  params["encoder"]["layer"]["0"]["attention"]["self"]["query"]["fourierft_spectrum"].shape
  # (1000,)
  variables = init_adapter(variables, config, rng, stacked_axes={"layers": 1})  # a linen nn.scan model
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping

import jax
import jax.numpy as jnp

from fourier_flax import module_paths, targeting
from fourier_flax.adapted_modules import kernel_view, module_layout_check, targeted_paths
from fourier_flax.methods import ADAPTER_LEAVES, AdapterConfig, method_of
from fourier_flax.update_scale import check_update_scale


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
    method = method_of(config)  # rejects other config types
    stacked_axes = dict(stacked_axes or {})
    _check_stacked_axes(module_paths.kernel_paths(tree), stacked_axes)
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
        check_update_scale(adapted, config)
    return adapted
