"""How hard an adapter perturbs the pretrained weights before training: ‖ΔW‖_F / ‖W0‖_F per adapted layer.

FourierFT starts from N(0, 1) coefficients (the paper and PEFT), so ΔW is a full-rank random matrix from step 0
with per-entry std ``alpha·sqrt(n/2)/(d1·d2)``: the same ``alpha`` is four times stronger, relative to the
weights, on a 384×384 kernel than on a 768×768 one. LoRA starts at ΔW = 0. :func:`update_norm_ratios` measures
the ratio on the real params; :func:`check_update_scale` warns when a layer exceeds :data:`WARN_RATIO`, and
:func:`fourier_flax.init_adapter` calls it whenever the params are concrete.

Threshold. ``experiments/studies/update_scale.py`` adds FourierFT at initialisation to the real all-MiniLM-L6-v2
(n = 1000 on query/value) and scores the untouched sentence encoder on STS-B dev (Spearman of the embeddings' cosine):
``experiments/results/update_scale.md``. :data:`WARN_RATIO` sits where that damage starts to exceed the spread
over initialisation seeds.

Example::

  params = init_adapter(params, FourierFTConfig(target_modules=["query", "value"], scaling=300.0), rng)
  # UserWarning: the adapter at initialisation changes 12 of 12 layers by more than 0.25 of their weights' norm ...
  max(update_norm_ratios(params, config).values())  # all-MiniLM-L6-v2, n = 1000
  # 1.02
"""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp

from fourier_flax import module_paths
from fourier_flax.adapted_modules import adapter_leaf_names, adapter_module_paths, module_delta_w, stacked_layers
from fourier_flax.methods import AdapterBank, AdapterConfig, method_of

# Warn above this ‖ΔW‖/‖W0‖ (in any layer) at initialisation. experiments/results/update_scale.md: on the real
# all-MiniLM-L6-v2 the untouched encoder's zero-shot STS-B Spearman drops by 0.24 points at a largest layer ratio
# of 0.24 (scaling 70), by 0.8 ± 0.55 at 0.48 (scaling 140, the paper's RoBERTa-base value) and by 5.8 at 1.02
# (scaling 300): the damage becomes measurable (beyond the seeds' spread) between 0.24 and 0.48.
WARN_RATIO = 0.25


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
    if isinstance(config, AdapterBank):  # every member is drawn alike: the first stands for all
        tree, config = method_of(config).member(tree, config, 0), config.adapter
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
