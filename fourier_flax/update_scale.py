"""How hard an adapter perturbs the pretrained weights before training: ‖ΔW‖_F / ‖W0‖_F per adapted layer.

FourierFT starts from N(0, 1) coefficients (the paper and PEFT), so ΔW is a full-rank random matrix from step 0
with per-entry std ``alpha·sqrt(n/2)/(d1·d2)``: the same ``alpha`` is four times stronger, relative to the
weights, on a 384×384 kernel than on a 768×768 one. LoRA starts at ΔW = 0. :func:`update_norm_ratios` measures
the ratio on the real params; :func:`check_update_scale` warns when a layer exceeds :data:`WARN_RATIO`, and
:func:`fourier_flax.init_adapter` calls it whenever the params are concrete.

Threshold. ``experiments/update_scale.py`` adds FourierFT at initialisation to the real all-MiniLM-L6-v2 (n = 1000
on query/value) and scores the untouched sentence encoder on STS-B dev (Spearman of the embeddings' cosine): see
``experiments/results/update_scale.md`` for the ratios at which the pretrained encoder is measurably damaged before
any training. :data:`WARN_RATIO` sits where that damage starts.

Example::

  >>> params = init_adapter(params, FourierFTConfig(target_modules=["query", "value"], scaling=300.0), rng)
  UserWarning: FourierFT at initialisation changes 12 layers by up to 0.41 of their weights' norm ...
  >>> update_norm_ratios(params, config)["bert.encoder.layer.0.attention.self.query"]
  0.41
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp

from fourier_flax import module_paths
from fourier_flax.adapter import (
    AdapterConfig,
    adapter_leaf_names,
    adapter_module_paths,
    module_delta_w,
    stacked_layers,
)

# Warn above this ‖ΔW‖/‖W0‖ at initialisation (justified in experiments/results/update_scale.md).
WARN_RATIO = 0.1


def update_norm_ratios(tree: module_paths.Tree, config: AdapterConfig) -> dict[str, float]:
    """``{module path: ‖ΔW‖_F / ‖W0‖_F}`` for every adapted module of ``tree`` (stacked layers: the largest)."""
    ratios = {}
    own = adapter_leaf_names(config)
    for path in adapter_module_paths(tree):
        module = module_paths.get_module(tree, path)
        if not all(leaf in module for leaf in own):
            continue  # another adapter's module (e.g. LoRA beside FourierFT)
        kernel = jnp.asarray(module["kernel"], jnp.float32)
        update = module_delta_w(config, path, module)
        axes = tuple(range(stacked_layers(config, module), update.ndim))
        ratio = jnp.sqrt(jnp.sum(update**2, axis=axes)) / jnp.maximum(jnp.sqrt(jnp.sum(kernel**2, axis=axes)), 1e-30)
        ratios[path] = float(jnp.max(ratio))
    return ratios


def check_update_scale(tree: module_paths.Tree, config: AdapterConfig, threshold: float = WARN_RATIO) -> None:
    """Warns (``UserWarning``) when some adapted layer has ``‖ΔW‖/‖W0‖ > threshold``; silent when leaves are traced."""
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(tree)):
        return
    ratios = update_norm_ratios(tree, config)
    large = {path: r for path, r in ratios.items() if r > threshold}
    if not large:
        return
    worst = max(large, key=large.get)
    warnings.warn(
        f"the adapter at initialisation changes {len(large)} of {len(ratios)} layers by more than "
        f"{threshold:g} of their weights' norm (largest ‖ΔW‖/‖W0‖ = {large[worst]:.3g} at {worst!r}): the "
        "pretrained model is perturbed hard before training. Lower scaling (alpha scales ΔW linearly; the "
        "paper's RoBERTa-base values are for 768x768 kernels: scale them by d1*d2/(768*768) for other sizes), "
        "or start from zero with init_weights=True. See fourier_flax.update_scale.",
        UserWarning,
        stacklevel=3,
    )
