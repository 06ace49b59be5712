"""Which leaves train: labels, a trainable mask, and the split of a params tree into trainable and frozen parts.

A leaf trains when it is an adapter leaf (``fourierft_spectrum``; ``lora_a``/``lora_b`` for :class:`LoraConfig`),
belongs to a ``config.modules_to_save`` module (the task head, e.g. ``classifier``, with all its submodules), or
is a bias selected by ``config.bias`` (PEFT's rules: "all" is every leaf named ``bias``, LayerNorm's included;
"fourier_only"/"lora_only" are the biases of adapted modules). Every other leaf is frozen.

The training step differentiates, and the optimizer keeps state, only for the *trainable* tree that
:func:`split_params` returns, so frozen leaves never get gradients or Adam moments.

Example::

  model, params = fourier_flax.models.hf.load_minilm(num_labels=2)  # 6-layer BERT, hidden 384
  config = FourierFTConfig(target_modules=["query", "value"], modules_to_save=["classifier"])
  params = fourier_flax.init_adapter(params, config, jax.random.key(0))
  mask = trainable_mask(params, config)           # same tree as params, bool leaves
  trainable, frozen = split_params(params, mask)  # two nested dicts holding disjoint leaves
  print_trainable_parameters(params, mask)
  # trainable params: 12,770 || all params: 22,725,986 || trainable%: 0.0562
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp
from flax import traverse_util

from fourier_flax import module_paths, targeting
from fourier_flax.adapted_modules import adapter_leaf_names, trained_leaf_names
from fourier_flax.methods.fourierft import FourierFTConfig
from fourier_flax.methods.lora import LoraConfig

Params = Mapping[str, Any]
Label = Literal["adapter", "head", "frozen"]


def _flat(params: Params) -> dict[tuple[str, ...], Any]:
    """``{key path: leaf}``; plain and frozen dicts alike."""
    if not isinstance(params, Mapping):
        raise TypeError(f"params must be a nested dict of arrays, got {type(params).__name__}.")
    return traverse_util.flatten_dict(params)


def _flat_pair(params: Params, mask: Params) -> tuple[dict, dict]:
    """Flat ``params`` and ``mask``, checked to hold the same leaves."""
    flat, flat_mask = _flat(params), _flat(mask)
    if flat.keys() != flat_mask.keys():
        differing = sorted(".".join(k) for k in flat.keys() ^ flat_mask.keys())[:5]
        raise ValueError(
            f"mask and params have different leaves (e.g. {differing}); build the mask from this params "
            "tree with trainable_mask(params, config)."
        )
    return flat, flat_mask


def _is_saved(module: tuple[str, ...], config: FourierFTConfig | LoraConfig) -> bool:
    """Whether ``module`` is, or sits inside, a ``modules_to_save`` module."""
    return any(config.is_saved_module(".".join(module[:k])) for k in range(1, len(module) + 1))


def param_labels(params: Params, config: FourierFTConfig | LoraConfig) -> dict:
    """Labels every leaf "adapter", "head" (modules_to_save and trained biases) or "frozen".

    Args:
      params: a params tree (``model.params``, or a variables dict with a top-level ``"params"`` key) that
        already holds the adapter leaves beside the targeted kernels.
      config: the adapter config; ``modules_to_save`` and ``bias`` choose the extra trained leaves.

    Returns:
      A nested dict with ``params``' structure and a label string per leaf.

    Raises:
      ValueError: ``params`` holds no adapter leaf of ``config``'s kind, or ``modules_to_save`` matches no
        module.
    """
    if module_paths.is_variables_dict(params):  # other collections (e.g. batch_stats) never train
        others = {name: jax.tree.map(lambda _: "frozen", tree) for name, tree in params.items() if name != "params"}
        return {**others, "params": param_labels(params["params"], config)}
    flat = _flat(params)
    own = adapter_leaf_names(config)
    trained = trained_leaf_names(config)
    modules = {key[:-1] for key in flat}
    adapted = {key[:-1] for key in flat if key[-1] in own}
    if not adapted:
        raise ValueError(
            f"params hold no {' / '.join(repr(name) for name in own)} leaves: add the adapter first "
            "(fourier_flax.init_adapter(params, config, rng)) and pass the tree it returns."
        )
    if config.modules_to_save and not any(_is_saved(module, config) for module in modules):
        raise ValueError(
            f"modules_to_save={list(config.modules_to_save)} matches no module, so the head would stay "
            "frozen; name a module of the tree (e.g. 'classifier'). Modules:\n"
            + targeting.describe_paths(".".join(m) for m in modules)
        )

    def label(key: tuple[str, ...]) -> Label:
        module = key[:-1]
        if key[-1] in trained:
            return "adapter"
        if key[-1] in own:
            return "frozen"  # e.g. VeRA's shared random projections
        if _is_saved(module, config):
            return "head"
        if key[-1] == "bias" and (config.bias == "all" or (config.bias != "none" and module in adapted)):
            return "head"
        return "frozen"

    return traverse_util.unflatten_dict({key: label(key) for key in flat})


def trainable_mask(params: Params, config: FourierFTConfig | LoraConfig) -> dict:
    """``True`` for every leaf that trains (see :func:`param_labels`), ``False`` for frozen leaves.

    Example::

      mask = trainable_mask(params, FourierFTConfig(target_modules=["query"], bias="all"))
    """
    return jax.tree.map(lambda label: label != "frozen", param_labels(params, config))


def split_params(params: Params, mask: Params) -> tuple[dict, dict]:
    """Splits ``params`` into ``(trainable, frozen)`` nested dicts holding the ``True`` / ``False`` leaves.

    Both keep ``params``' nesting but only their own leaves, so an optimizer initialised on ``trainable``
    has no state for frozen leaves. The trainable leaves are copies (a train step may donate them), the
    frozen ones are ``params``' own arrays. :func:`merge_params` puts them back together.

    Args:
      params: a nested dict of arrays.
      mask: the same tree with bool leaves (:func:`trainable_mask`).

    Raises:
      ValueError: ``mask`` does not have ``params``' keys.
    """
    flat, flat_mask = _flat_pair(params, mask)
    # Copies, so a train step that donates them never deletes arrays the caller's tree (model.params) holds.
    trainable = {key: jnp.array(leaf, copy=True) for key, leaf in flat.items() if flat_mask[key]}
    frozen = {key: leaf for key, leaf in flat.items() if not flat_mask[key]}
    return traverse_util.unflatten_dict(trainable), traverse_util.unflatten_dict(frozen)


def merge_params(trainable: Params, frozen: Params) -> dict:
    """The full params tree from the two halves of :func:`split_params` (works on traced values in jit).

    Raises:
      ValueError: the halves share a leaf.
    """
    flat_trainable, flat_frozen = _flat(trainable), _flat(frozen)
    both = flat_trainable.keys() & flat_frozen.keys()
    if both:
        raise ValueError(
            f"trainable and frozen both hold {sorted('.'.join(k) for k in both)[:5]}; pass the two halves "
            "returned by split_params."
        )
    return traverse_util.unflatten_dict({**flat_frozen, **flat_trainable})


def trainable_parameter_summary(params: Params, mask: Params) -> tuple[int, int, float]:
    """``(trainable, total, percent)`` parameter counts, adapter leaves included in the total (as PEFT counts).

    Only the ``'params'`` collection of a variables dict counts. PEFT's ``print_trainable_parameters`` also
    counts the frozen original of each ``modules_to_save`` module beside its trained copy; here each leaf is
    counted once. Leaves may be ``jax.ShapeDtypeStruct`` (count a model from ``jax.eval_shape``).
    """
    flat, flat_mask = _flat_pair(module_paths.params_of(params), module_paths.params_of(mask))
    sizes = {key: math.prod(leaf.shape) for key, leaf in flat.items()}
    total = sum(sizes.values())
    trainable = sum(size for key, size in sizes.items() if flat_mask[key])
    return trainable, total, 100.0 * trainable / total if total else 0.0


def print_trainable_parameters(params: Params, mask: Params) -> None:
    """Prints PEFT's summary line: ``trainable params: 12,345 || all params: 22,713,216 || trainable%: 0.0544``."""
    trainable, total, percent = trainable_parameter_summary(params, mask)
    print(f"trainable params: {trainable:,d} || all params: {total:,d} || trainable%: {percent:.4f}")
