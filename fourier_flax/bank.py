"""Building, splitting, loading and training adapter banks (:class:`AdapterBank`: many adapters, one batch).

* :func:`stack_adapters` — a bank from adapted params trees of one method, targets and shapes;
* :func:`load_adapter_bank` — the same from saved adapters (our checkpoints or PEFT directories), each checked
  against the base as :func:`fourier_flax.load_adapter` / :func:`fourier_flax.import_peft` check it;
* :func:`bank_member` — one adapter out of a bank (to save, export or merge it);
* :func:`bank_learning_rates` — an optax transformation giving each bank row its own learning rate, so a
  seed × rate sweep trains as one batch (rows share the frozen model; Adam's update of a row depends on that
  row's gradients only, so each row follows its own run).

Example (a sweep of ``K`` runs in one batch: example ``k·b + i`` is row ``i`` of run ``k``'s batch)::

  bank, config = stack_adapters([init_adapter(base, inner, jax.random.key(s)) for s in seeds], [inner] * K)
  optimizer = optax.chain(optax.scale_by_adam(), bank_learning_rates(config, -jnp.asarray(rates)))
  def loss(trainable, batch):            # the sum of the K runs' mean losses
      with intercept(config), adapter_ids(batch["ids"]):
          per_example = loss_fn(model.apply(merge_params(trainable, frozen), batch["x"]), batch["y"])
      return jnp.sum(per_example) / rows_per_run
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import traverse_util

from fourier_flax import module_paths
from fourier_flax.adapted_modules import adapter_module_paths
from fourier_flax.checkpoint import AdapterMismatchError, load_adapter
from fourier_flax.methods import ADAPTER_LEAVES, method_of
from fourier_flax.methods.bank import AdapterBank, adapter_ids, current_adapter_ids
from fourier_flax.peft_interop import import_peft


def _flat(tree: module_paths.Tree) -> dict[tuple[str, ...], Any]:
    return traverse_util.flatten_dict(tree["params"] if "params" in tree else tree)


def _member_problems(index: int, config: Any, reference: Any) -> list[str]:
    if type(config) is not type(reference):
        return [f"adapter {index} is a {type(config).__name__}, adapter 0 a {type(reference).__name__}"]
    ours, theirs = dataclasses.asdict(config), dataclasses.asdict(reference)
    free_field, _ = method_of(reference).bank_scale or (None, None)  # the one field members may differ in
    return [
        f"adapter {index}: {name}={ours[name]!r}, adapter 0 has {theirs[name]!r}"
        for name in ours
        if name != free_field and ours[name] != theirs[name]
    ]


def stack_adapters(trees: Sequence[module_paths.Tree], configs: Sequence[Any]) -> tuple[module_paths.Tree, AdapterBank]:
    """One bank from adapters of one method, targets and shapes (``trees[k]`` adapted with ``configs[k]``).

    The bank's adapter leaves are the members' stacked along a bank axis (after any stacked-layer axes);
    every other leaf is ``trees[0]``'s, and must be equal in every member (a bank shares its heads and biases).
    Members may differ in FourierFT's ``scaling`` or LoRA's ``lora_alpha``: the bank keeps ``configs[0]``'s and
    rescales the other members' coefficients (``c``, or LoRA's ``B``) so every ``ΔW`` is unchanged.

    Returns:
      ``(params, AdapterBank(configs[0], len(trees)))``, the params in ``trees[0]``'s form.

    Raises:
      AdapterMismatchError: members of other methods, entries (seed, sampling, ``n``), ranks, targets or
        leaf shapes, or other differing leaves — every problem listed.
    """
    if not trees or len(trees) != len(configs):
        raise ValueError(f"give one config per tree (got {len(trees)} trees and {len(configs)} configs).")
    reference = configs[0]
    bank = AdapterBank(reference, len(trees))
    method_of(bank)  # refuses methods without banks
    leaf_names = set(method_of(reference).leaves_for(reference))
    flats = [_flat(tree) for tree in trees]
    problems = [p for k, config in enumerate(configs[1:], 1) for p in _member_problems(k, config, reference)]
    for k, flat in enumerate(flats[1:], 1):
        if set(flat) != set(flats[0]):
            extra, missing = sorted(set(flat) - set(flats[0])), sorted(set(flats[0]) - set(flat))
            problems.append(f"adapter {k}: leaves {extra} not in adapter 0, {missing} missing")
            continue
        for key, value in flat.items():
            first = flats[0][key]
            if value is first:
                continue
            if np.shape(value) != np.shape(first):
                problems.append(
                    f"adapter {k}: {'.'.join(key)} has shape {np.shape(value)}, adapter 0 {np.shape(first)}"
                )
            elif key[-1] not in leaf_names and not np.array_equal(np.asarray(value), np.asarray(first)):
                problems.append(
                    f"adapter {k}: {'.'.join(key)} differs from adapter 0's (a bank shares every leaf but the "
                    "adapter's: serve differing heads per request yourself)"
                )
    if problems:
        raise AdapterMismatchError(f"{len(trees)} adapters do not form one bank", problems)
    field, scaled_leaf = method_of(reference).bank_scale or (None, None)
    factors = [1.0 if field is None else getattr(c, field) / getattr(reference, field) for c in configs]
    stacked = {}
    for key, first in flats[0].items():
        if key[-1] not in leaf_names:
            stacked[key] = first
            continue
        members = [
            jnp.asarray(flat[key]) * (factor if key[-1] == scaled_leaf else 1.0)
            for flat, factor in zip(flats, factors, strict=True)
        ]
        stacked[key] = jnp.stack(members, axis=jnp.ndim(first) - method_of(reference).leaf_ndim)
    params = traverse_util.unflatten_dict(stacked)
    return ({**trees[0], "params": params} if "params" in trees[0] else params), bank


def bank_member(tree: module_paths.Tree, bank: AdapterBank, index: int) -> module_paths.Tree:
    """The params of adapter ``index`` alone (adapted with ``bank.adapter``): save, export or merge them."""
    return method_of(bank).member(tree, bank, index)


def load_adapter_bank(
    directories: Sequence[str | pathlib.Path], base_params: module_paths.Tree
) -> tuple[module_paths.Tree, AdapterBank]:
    """A bank from saved adapters: fourier_flax checkpoints (:func:`fourier_flax.save_adapter`) or Hugging Face
    PEFT directories (``adapter_config.json``), each loaded and checked against ``base_params`` first.

    Returns:
      ``(params, bank)`` as :func:`stack_adapters`; :func:`bank_bytes_per_adapter` tells what each member costs.

    Raises:
      AdapterMismatchError: an adapter does not fit the base, or the adapters do not form one bank.
    """
    trees, configs = [], []
    for directory in directories:
        directory = pathlib.Path(directory)
        if (directory / "adapter_config.json").is_file():
            config, params = import_peft(directory, base_params)
        else:
            config, params = load_adapter(directory, base_params)
        trees.append(params)
        configs.append(config)
    return stack_adapters(trees, configs)


def bank_bytes_per_adapter(tree: module_paths.Tree, bank: AdapterBank) -> int:
    """Bytes one member adds to a bank (its adapter leaves in every adapted module)."""
    total = 0
    for path in adapter_module_paths(tree):
        module = module_paths.get_module(tree, path)
        total += sum(np.asarray(module[n]).nbytes for n in ADAPTER_LEAVES if n in module)
    return total // bank.num_adapters


def bank_learning_rates(bank: AdapterBank, rates: Any) -> optax.GradientTransformation:
    """Multiplies the updates of bank row ``a`` by ``rates[a]`` (other leaves unchanged).

    Chain it after a per-element optimizer (``optax.scale_by_adam()``) with negative rates (descent), so each
    row of the bank trains with its own learning rate. ``rates`` may be traced (a jitted sweep over rates).
    """
    method = method_of(bank)
    names = set(method.leaves_for(bank))
    rates = jnp.asarray(rates, jnp.float32)
    if rates.shape != (bank.num_adapters,):
        raise ValueError(f"one rate per adapter: expected shape ({bank.num_adapters},), got {rates.shape}.")

    def update_fn(updates, state, params=None):
        def scale(path, update):
            if str(getattr(path[-1], "key", "")) not in names:
                return update
            axis = method.bank_axis(update)
            shape = [1] * jnp.ndim(update)
            shape[axis] = bank.num_adapters
            return update * rates.reshape(shape).astype(update.dtype)

        return jax.tree_util.tree_map_with_path(scale, updates), state

    return optax.GradientTransformation(lambda params: optax.EmptyState(), update_fn)


__all__ = [
    "AdapterBank",
    "adapter_ids",
    "bank_bytes_per_adapter",
    "bank_learning_rates",
    "bank_member",
    "current_adapter_ids",
    "load_adapter_bank",
    "stack_adapters",
]
