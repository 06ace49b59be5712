"""Folding an adapter into its kernels (PEFT's ``merge_and_unload``) and taking it back out.

:func:`merge_adapter` returns exactly the base model's tree — adapter leaves removed, each adapted kernel replaced
by ``W0 + ΔW`` (computed in float32, stored in the kernel's own dtype) — so the merged params run in the
unmodified model at no extra cost. :func:`unmerge_adapter` subtracts the same ``ΔW`` and re-attaches the leaves.

Example::

  merged = merge_adapter(params, config, safe_merge=True)
  model(input_ids, params=merged)  # no intercept() needed
  params_again = unmerge_adapter(merged, params, config)  # kernels back up to float rounding
"""

from __future__ import annotations

from collections.abc import Mapping

import jax.numpy as jnp
import numpy as np

from fourier_flax import module_paths
from fourier_flax.adapted_modules import (
    adapter_leaf_names,
    module_delta_w,
    module_effective_kernel,
    module_layout_check,
    stacked_layers,
)
from fourier_flax.methods import AdapterConfig, method_of


def _adapted_paths(tree: module_paths.Tree, config: AdapterConfig) -> list[str]:
    leaves = adapter_leaf_names(config)
    return [
        path
        for path in module_paths.kernel_paths(tree)
        if all(leaf in module_paths.get_module(tree, path) for leaf in leaves)
    ]


def merge_adapter(tree: module_paths.Tree, config: AdapterConfig, *, safe_merge: bool = False) -> module_paths.Tree:
    """Folds every adapter of ``config`` in ``tree`` into its kernel and removes the adapter leaves.

    Args:
      tree: adapted params (variables dict or bare, as from :func:`fourier_flax.init_adapter`).
      config: the adapter's configuration.
      safe_merge: check every merged kernel for NaN/inf first (needs concrete arrays, not under jit).

    Returns:
      A tree with the base model's structure; kernels keep their dtype; all other leaves are the same objects.

    Raises:
      ValueError: ``tree`` has no adapter of this kind, or (``safe_merge``) a merged kernel is not finite.
    """
    paths = _adapted_paths(tree, config)
    if not paths:
        raise ValueError(
            f"no module in this tree carries {list(adapter_leaf_names(config))}: nothing to merge "
            "(was it built with init_adapter and this kind of config?)."
        )
    leaves = method_of(config).leaf_names  # every leaf the method may add (FLoRA's factors vary by module)
    merged_kernels = {}
    for path in paths:
        module = module_paths.get_module(tree, path)
        module_layout_check(config, path, module, stacked_layers(config, module))
        kernel = module["kernel"]
        merged = method_of(config).sharded_merged_kernel(config, path, module)  # on a device mesh, else None
        if merged is None:
            merged = module_effective_kernel(config, path, module).astype(kernel.dtype)
        if safe_merge and not np.isfinite(np.asarray(merged, np.float32)).all():
            raise ValueError(
                f"merging the adapter of module {path!r} gives non-finite kernel values (NaN/inf); its "
                "adapter leaves have probably diverged. The tree was not merged."
            )
        merged_kernels[path] = merged

    def fold(path):
        def update(module):
            kept = {k: v for k, v in module.items() if k not in leaves}
            return {**kept, "kernel": merged_kernels[path]}

        return update

    return module_paths.update_modules(tree, {path: fold(path) for path in paths})


def unmerge_adapter(merged: module_paths.Tree, adapter: module_paths.Tree, config: AdapterConfig) -> module_paths.Tree:
    """Undoes :func:`merge_adapter`: ``W0 = W - ΔW`` and the adapter leaves re-attached.

    Args:
      merged: the merged tree (base structure).
      adapter: any tree in the same form holding the adapter leaves at their module paths — the adapted tree
        itself, or only its adapter leaves (e.g. a trainable partition or a loaded adapter checkpoint).
      config: the adapter's configuration.

    Returns:
      The adapted tree, kernels restored up to the rounding of the kernel dtype.

    Raises:
      ValueError: ``adapter`` holds no leaves of this adapter, or names a module ``merged`` lacks.
    """
    if not method_of(config).additive:
        raise ValueError(
            f"{type(config).__name__} merges as m·(W0 + ΔW)/‖W0 + ΔW‖, which the merged kernel cannot be undone "
            "from (its column norms are m, not ‖W0 + ΔW‖): keep the adapted tree and merge again when needed."
        )
    marks = adapter_leaf_names(config)
    leaves = method_of(config).leaf_names
    found = {}

    def walk(node, prefix):
        if all(leaf in node for leaf in marks):
            found[".".join(prefix)] = {leaf: node[leaf] for leaf in leaves if leaf in node}
        for key, child in node.items():
            if isinstance(child, Mapping) and key not in leaves:
                walk(child, (*prefix, str(key)))

    walk(module_paths.params_of(adapter), ())
    if not found:
        raise ValueError(f"`adapter` holds no {list(marks)} leaves: nothing to unmerge.")
    absent = sorted(set(found) - set(module_paths.kernel_paths(merged)))
    if absent:
        raise ValueError(f"`adapter` has leaves for modules that `merged` lacks: {absent}.")

    def restore(path):
        def update(module):
            restored = {**module, **found[path]}
            kernel = module["kernel"]
            delta = module_delta_w(config, path, restored)
            return {**restored, "kernel": (kernel.astype(jnp.float32) - delta).astype(kernel.dtype)}

        return update

    return module_paths.update_modules(merged, {path: restore(path) for path in found})
