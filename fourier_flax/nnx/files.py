"""An adapted NNX model's adapter as files: orbax checkpoints and PEFT directories, in the linen path's formats
(module keys are the attribute paths; see :mod:`fourier_flax.nnx`)."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
from flax import nnx, traverse_util

from fourier_flax import checkpoint, peft_interop
from fourier_flax.nnx.surgery import (
    _install,
    _layers,
    _path,
    _stacks,
    _targets,
    _tree,
    adapted_layers,
    kernel_layout,
    model_config,
)


def _saved_modules(model: nnx.Module, config: Any) -> dict[str, nnx.Module]:
    """The ``modules_to_save`` modules of ``model`` (PEFT's rule: matched by name), by path."""
    return {
        _path(parts): node
        for parts, node in nnx.iter_graph(model)
        if isinstance(node, nnx.Module) and parts and config.is_saved_module(_path(parts))
    }


def adapter_params(model: nnx.Module) -> dict:
    """The adapted layers as a linen-style params tree: per path the canonical ``kernel``, ``bias`` and leaves,
    and the ``modules_to_save`` modules' params — the form :func:`fourier_flax.save_adapter`,
    :func:`fourier_flax.export_peft` and friends read."""
    config, flat = model_config(model), {}
    for path, module in _saved_modules(model, config).items():
        for parts, variable in nnx.to_flat_state(nnx.state(module, nnx.Param)):
            flat[(*path.split("."), *map(str, parts))] = variable[...]
    for path, layer in adapted_layers(model).items():
        for name, value in layer._params().items():
            flat[(*path.split("."), name)] = value
        if getattr(layer.base, "bias", None) is not None:
            flat[(*path.split("."), "bias")] = layer.base.bias[...]
    return traverse_util.unflatten_dict(flat)


def _restore_saved(model: nnx.Module, config: Any, params: Mapping) -> None:
    """Puts the ``modules_to_save`` params of a loaded tree back into ``model``'s modules."""
    flat = traverse_util.flatten_dict(params)
    for path, module in _saved_modules(model, config).items():
        for parts, variable in nnx.to_flat_state(nnx.state(module, nnx.Param)):
            key = (*path.split("."), *map(str, parts))
            if key in flat:
                variable.value = jnp.asarray(flat[key], variable[...].dtype)


def _pretrained_tree(model: nnx.Module, stacks: Mapping[str, int]) -> dict:
    """Every plain supported layer's canonical kernel (and bias), keyed by path: what loaders check against."""
    plain, layouts = _layers(model)[0], {}
    for path, layer in plain.items():
        try:
            layouts[path] = kernel_layout(path, layer, stacks.get(path, 0))
        except ValueError:  # e.g. an einsum whose kernel no adapter can use: never a target
            continue
    return _tree({path: plain[path] for path in layouts}, layouts, stacks)


def save_adapter(path: str | pathlib.Path, model: nnx.Module) -> pathlib.Path:
    """:func:`fourier_flax.save_adapter` of ``model``'s adapter (the same orbax format as the linen path)."""
    return checkpoint.save_adapter(path, adapter_params(model), model_config(model))


def load_adapter(
    path: str | pathlib.Path, model: nnx.Module, *, stacked_axes: Mapping[str, int] | None = None
) -> list[str]:
    """Adapts the pretrained ``model`` in place with the checkpoint at ``path`` (checked against its kernels
    by :func:`fourier_flax.load_adapter`); returns the adapted paths. ``stacked_axes`` as for
    :func:`apply_adapter`."""
    stacks = _stacks(_layers(model)[0], stacked_axes)
    config, params = checkpoint.load_adapter(path, _pretrained_tree(model, stacks))
    layers, layouts = _targets(model, config, stacks)
    _restore_saved(model, config, params)
    return _install(model, config, layers, layouts, params, stacks)


def export_peft(model: nnx.Module, out_dir: str | pathlib.Path, **kwargs: Any) -> pathlib.Path:
    """:func:`fourier_flax.export_peft` of ``model``'s adapter; module keys are the attribute paths (so a model
    whose paths follow Hugging Face's names, like :class:`fourier_flax.models.bert.BertModel`, loads in PEFT)."""
    return peft_interop.export_peft(adapter_params(model), model_config(model), out_dir, **kwargs)


def import_peft(adapter_dir: str | pathlib.Path, model: nnx.Module, **kwargs: Any) -> list[str]:
    """Adapts the pretrained ``model`` in place with a PEFT ``save_pretrained`` directory
    (:func:`fourier_flax.import_peft`'s checks and options); returns the adapted paths."""
    config, params = peft_interop.import_peft(adapter_dir, _pretrained_tree(model, {}), **kwargs)
    layers, layouts = _targets(model, config)
    _restore_saved(model, config, params)
    return _install(model, config, layers, layouts, params)
