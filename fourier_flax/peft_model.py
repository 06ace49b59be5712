"""Hugging Face PEFT's verbs in JAX: a model object that always runs its adapters, over the functional core.

:func:`get_peft_model` wraps a Hugging Face Flax model (or a linen module with its variables) and one adapter
config into a :class:`PeftModel`. Calling it runs the model inside :func:`fourier_flax.intercept` for every
active adapter, so the adapter can never be forgotten and the params always travel with the config they were
made for. Everything underneath stays public: ``init_adapter``, ``intercept``, ``merge_adapter``,
``save_adapter`` / ``load_adapter``, ``export_peft`` / ``import_peft``.

A :class:`PeftModel` is a pytree (its leaves: the base params and every adapter's trained leaves; the model, the
configs and which adapters are active are static), so it passes through ``jax.jit`` / ``jax.grad`` and a jitted
function of it compiles once. Several named adapters live side by side (``add_adapter``, ``set_adapter``,
``delete_adapter``); those that are active at once must adapt different layers.

Example::

  model = transformers.FlaxBertForSequenceClassification.from_pretrained(path, num_labels=2)
  peft_model = get_peft_model(model, FourierFTConfig(target_modules=["query", "value"],
                                                     modules_to_save=["classifier"]), jax.random.key(0))
  peft_model.print_trainable_parameters()
  params = peft_model.params                               # base + spectra + head
  logits = peft_model(input_ids, attention_mask, params=params).logits
  grads = jax.grad(loss)(params)                            # mask with peft_model.trainable_mask()
  peft_model = peft_model.with_params(params)               # after training
  peft_model.save_pretrained("adapter")                     # PEFT's files when PEFT can express it
  merged_model = peft_model.merge_and_unload()
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import pathlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import numpy as np
from flax import traverse_util

from fourier_flax import module_paths
from fourier_flax.adapted_modules import adapter_leaf_names, targeted_paths
from fourier_flax.adapter import init_adapter
from fourier_flax.checkpoint import adapter_leaves, apply_leaves, load_adapter, save_adapter
from fourier_flax.interceptor import intercept
from fourier_flax.merge import merge_adapter
from fourier_flax.methods import AdapterConfig, method_of
from fourier_flax.partition import print_trainable_parameters
from fourier_flax.peft_interop import CONFIG_FILE, export_peft, import_peft, peft_bookkeeping

Leaves = dict[tuple[str, ...], jax.Array]
DEFAULT = "default"


def _is_hf(model: Any) -> bool:
    """A Hugging Face ``FlaxPreTrainedModel`` (carries ``params`` and takes ``params=`` when called)."""
    return hasattr(model, "module") and hasattr(model, "init_weights") and hasattr(model, "config")


def _layer_types(model: Any) -> dict[str, type]:
    """Module path -> layer class of a Hugging Face Flax model, from an abstract (shape-only) init."""
    seen: dict[str, type] = {}

    def record(next_fun, args, kwargs, context):
        module = context.module
        if context.method_name == "__call__" and module.scope is not None:
            seen[".".join(str(k) for k in module.scope.path)] = type(module)
        return next_fun(*args, **kwargs)

    with nn.intercept_methods(record):
        jax.eval_shape(lambda: model.init_weights(jax.random.key(0), model.input_shape))
    return seen


def _with_layout_of(model: Any, base: Mapping, config: AdapterConfig) -> AdapterConfig:
    """PEFT's rule: ``fan_in_fan_out`` follows the targeted layers' type (GPT-2's Conv1D or not), with a warning."""
    if not _is_hf(model):
        return config
    types = _layer_types(model)
    kinds = {types[p].__name__ == "FlaxConv1D" for p in targeted_paths(base, config) if p in types}
    if len(kinds) != 1 or kinds == {config.fan_in_fan_out}:
        return config
    conv1d = kinds.pop()
    warnings.warn(
        f"fan_in_fan_out is set to {config.fan_in_fan_out} but the target modules are "
        f"{'Conv1D' if conv1d else 'nn.Dense'}. Setting fan_in_fan_out to {conv1d} (as PEFT does).",
        UserWarning,
        stacklevel=3,
    )
    return dataclasses.replace(config, fan_in_fan_out=conv1d)


@dataclasses.dataclass(frozen=True)
class _Adapter:
    config: AdapterConfig
    leaves: Leaves  # key paths inside the params collection -> trained arrays


@jax.tree_util.register_pytree_with_keys_class
class PeftModel:
    """A model with named adapters; call it like the model it wraps. Build it with :func:`get_peft_model`.

    Attributes:
      model: the wrapped Hugging Face Flax model, or a linen module.
      base: its pretrained params (a bare tree for Hugging Face models, a variables dict for linen).
      active: the names of the adapters that run, in order.
    """

    def __init__(
        self,
        model: Any,
        base: Any,
        adapters: Mapping[str, _Adapter],
        active: Sequence[str],
        disabled: bool = False,
    ):
        self.model, self.base = model, base
        self._adapters = dict(adapters)
        self.active = tuple(active)
        self._disabled = disabled
        unknown = [name for name in self.active if name not in self._adapters]
        if unknown:
            raise ValueError(f"no adapters named {unknown}; the model has {sorted(self._adapters)}.")
        self._check_disjoint()

    # --- pytree ---------------------------------------------------------------------------------------------
    def tree_flatten_with_keys(self):
        names = sorted(self._adapters)
        children = [(jax.tree_util.GetAttrKey("base"), self.base)]
        children += [(jax.tree_util.DictKey(n), dict(self._adapters[n].leaves)) for n in names]
        configs = tuple((n, self._adapters[n].config) for n in names)
        return children, (self.model, configs, self.active, self._disabled)

    @classmethod
    def tree_unflatten(cls, aux, children):
        model, configs, active, disabled = aux
        base, *leaves = children
        adapters = {name: _Adapter(config, dict(lv)) for (name, config), lv in zip(configs, leaves, strict=True)}
        return cls(model, base, adapters, active, disabled)

    # --- adapters -------------------------------------------------------------------------------------------
    @property
    def peft_config(self) -> dict[str, AdapterConfig]:
        """Adapter name -> config, as PEFT's ``peft_config``."""
        return {name: adapter.config for name, adapter in self._adapters.items()}

    def _check_disjoint(self) -> None:
        """Active adapters may not share a layer (adapter leaves) or a trained leaf (heads, biases)."""
        owner: dict[tuple, str] = {}
        for name in self.active:
            own = adapter_leaf_names(self._adapters[name].config)
            for key in self._adapters[name].leaves:
                claim = ("layer", key[:-1]) if key[-1] in own else ("leaf", key)
                if claim in owner and owner[claim] != name:
                    raise ValueError(
                        f"adapters {owner[claim]!r} and {name!r} both adapt or train {'.'.join(claim[1])}: adapters "
                        "active together must use different layers and heads (activate one with set_adapter)."
                    )
                owner[claim] = name

    def add_adapter(self, name: str, config: AdapterConfig, rng: jax.Array) -> PeftModel:
        """A new model with adapter ``name`` added (inactive; ``set_adapter`` activates it)."""
        if name in self._adapters:
            raise ValueError(f"an adapter named {name!r} exists; delete_adapter it first or pick another name.")
        config = _with_layout_of(self.model, module_paths.params_of(self.base), config)
        adapted = init_adapter(self.base, config, rng)
        adapters = {**self._adapters, name: _Adapter(config, adapter_leaves(adapted, config))}
        return PeftModel(self.model, self.base, adapters, self.active, self._disabled)

    def set_adapter(self, names: str | Sequence[str]) -> PeftModel:
        """A new model whose active adapters are ``names`` (one name, or several on disjoint layers)."""
        return PeftModel(self.model, self.base, self._adapters, [names] if isinstance(names, str) else names)

    def delete_adapter(self, name: str) -> PeftModel:
        """A new model without adapter ``name`` (also removed from the active ones)."""
        if name not in self._adapters:
            raise ValueError(f"no adapter named {name!r}; the model has {sorted(self._adapters)}.")
        adapters = {k: v for k, v in self._adapters.items() if k != name}
        return PeftModel(self.model, self.base, adapters, [a for a in self.active if a != name], self._disabled)

    # --- params ---------------------------------------------------------------------------------------------
    @property
    def params(self) -> Any:
        """The base params with the active adapters' trained leaves (spectra, heads, biases) in place."""
        leaves: Leaves = {}
        for name in self.active:
            leaves.update(self._adapters[name].leaves)
        return apply_leaves(self.base, leaves)

    def with_params(self, params: Any) -> PeftModel:
        """A new model whose active adapters take their trained leaves from ``params`` (e.g. after training)."""
        flat = traverse_util.flatten_dict(module_paths.params_of(params))
        adapters = dict(self._adapters)
        for name in self.active:
            missing = [".".join(k) for k in adapters[name].leaves if k not in flat]
            if missing:
                raise ValueError(f"params lack adapter {name!r}'s leaves {missing[:5]}; pass a tree from .params.")
            adapters[name] = _Adapter(adapters[name].config, {k: flat[k] for k in adapters[name].leaves})
        return PeftModel(self.model, self.base, adapters, self.active, self._disabled)

    def trainable_mask(self) -> Any:
        """A bool tree over :attr:`params`: True for the active adapters' leaves (for ``optax.masked``)."""
        trained = {k for name in self.active for k in self._adapters[name].leaves}
        flat = traverse_util.flatten_dict(module_paths.params_of(self.params))
        mask = traverse_util.unflatten_dict({k: k in trained for k in flat})
        return module_paths.with_params(self.params, mask) if "params" in self.base else mask

    def print_trainable_parameters(self) -> None:
        """PEFT's line: ``trainable params: ... || all params: ... || trainable%: ...``."""
        print_trainable_parameters(self.params, self.trainable_mask())

    # --- running ----------------------------------------------------------------------------------------------
    def __call__(self, *args: Any, params: Any = None, **kwargs: Any) -> Any:
        """The wrapped model's call with the active adapters (``params=`` overrides :attr:`params`)."""
        if self._disabled:
            return self._apply(self.base, args, kwargs)
        tree = self.params if params is None else params
        with contextlib.ExitStack() as stack:
            for name in self.active:
                stack.enter_context(intercept(self._adapters[name].config))
            return self._apply(tree, args, kwargs)

    def _apply(self, tree: Any, args: tuple, kwargs: dict) -> Any:
        if _is_hf(self.model):
            return self.model(*args, params=tree, **kwargs)
        return self.model.apply(tree, *args, **kwargs)

    @contextlib.contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Within this context the model runs its base params (no adapter, original heads), as in PEFT."""
        self._disabled = True
        try:
            yield
        finally:
            self._disabled = False

    # --- merging and files --------------------------------------------------------------------------------------
    def merge_and_unload(self) -> Any:
        """The base model with every active adapter folded into its kernels and no adapter leaves.

        Returns a copy of the Hugging Face model whose ``params`` are the merged tree (the original is untouched),
        or, for a linen module, the merged variables.
        """
        merged = self.params
        for name in self.active:
            merged = merge_adapter(merged, self._adapters[name].config)
        if not _is_hf(self.model):
            return merged
        model = copy.copy(self.model)
        model.params = merged
        return model

    def save_pretrained(self, directory: str | pathlib.Path, **bookkeeping: str | None) -> pathlib.Path:
        """Writes every adapter: ``default`` in ``directory``, the others in ``directory/<name>`` (as PEFT).

        Each is written in PEFT's format (``adapter_config.json`` + ``adapter_model.safetensors``, atomically) when
        PEFT can express it and :meth:`from_pretrained` can read it back (FourierFT with PEFT's entries, no stacked
        layers), else as an orbax checkpoint
        (:func:`fourier_flax.save_adapter`); :meth:`from_pretrained` reads both. ``bookkeeping``
        (``base_model_name_or_path``, ``task_type``, ``base_model_class``, ``revision``) overrides what is read off
        a Hugging Face model (:func:`fourier_flax.peft_interop.peft_bookkeeping`): Flax's ``from_pretrained`` keeps
        the ``_name_or_path`` written in the checkpoint's config.json, which may not be where it was loaded from.
        """
        directory = pathlib.Path(directory)
        for name, adapter in self._adapters.items():
            target = directory if name == DEFAULT else directory / name
            params = apply_leaves(self.base, adapter.leaves)
            if _peft_expressible(adapter):
                found = peft_bookkeeping(self.model) if _is_hf(self.model) else {}
                export_peft(params, adapter.config, target, **{**found, **bookkeeping})
            else:
                save_adapter(target, params, adapter.config)
        return directory

    @classmethod
    def from_pretrained(
        cls,
        model: Any,
        directory: str | pathlib.Path,
        *,
        params: Any = None,
        adapter_name: str = DEFAULT,
        rng: jax.Array | None = None,
    ) -> PeftModel:
        """Loads an adapter saved by :meth:`save_pretrained`, by Hugging Face PEFT, or by ``save_adapter``."""
        base = _base_params(model, params)
        directory = pathlib.Path(directory)
        if (directory / CONFIG_FILE).is_file():
            config, adapted = import_peft(directory, base, rng=rng, on_missing="error")
        else:
            config, adapted = load_adapter(directory, base)
        return cls(model, base, {adapter_name: _Adapter(config, adapter_leaves(adapted, config))}, [adapter_name])

    def load_adapter(self, directory: str | pathlib.Path, adapter_name: str) -> PeftModel:
        """A new model with the adapter saved in ``directory`` added under ``adapter_name`` (inactive)."""
        loaded = PeftModel.from_pretrained(self.model, directory, params=self.base, adapter_name=adapter_name)
        if adapter_name in self._adapters:
            raise ValueError(f"an adapter named {adapter_name!r} exists; pick another name.")
        return PeftModel(self.model, self.base, {**self._adapters, **loaded._adapters}, self.active, self._disabled)


def _peft_expressible(adapter: _Adapter) -> bool:
    """PEFT has the method and this config, no leaf is stacked by nn.scan, and :func:`import_peft` reads it back
    (FourierFT; LoRA, DoRA and VeRA adapters go to PEFT with :func:`fourier_flax.export_peft`)."""
    config = adapter.config
    method = method_of(config)
    if method.peft_unsupported(config) or method.peft_type != "FOURIERFT":
        return False
    marks = [v for k, v in adapter.leaves.items() if k[-1] == method.leaves_for(config)[0]]
    return all(np.ndim(v) == method.leaf_ndim for v in marks)


def _base_params(model: Any, params: Any) -> Any:
    if params is not None:
        return params
    if _is_hf(model):
        return model.params
    raise ValueError(f"a {type(model).__name__} carries no params: pass params= (its variables dict).")


def get_peft_model(
    model: Any, config: AdapterConfig, rng: jax.Array, *, params: Any = None, adapter_name: str = DEFAULT
) -> PeftModel:
    """Wraps ``model`` with one adapter (``adapter_name``, active), as PEFT's ``get_peft_model``.

    Args:
      model: a Hugging Face Flax model (its ``params`` are the base), or a linen module (pass ``params=``).
      config: a :class:`FourierFTConfig` or :class:`LoraConfig`. For Hugging Face GPT-2's Conv1D layers
        ``fan_in_fan_out`` is set to True with a warning if it is not (and to False for Dense layers), as PEFT.
      rng: draws the adapter's initial values.
      params: the base params when ``model`` does not carry them (linen), or to override ``model.params``.
      adapter_name: the adapter's name.

    Raises:
      ValueError: the targets match no module (the message lists the paths), and the other errors of
        :func:`fourier_flax.init_adapter`.
    """
    base = _base_params(model, params)
    return PeftModel(model, base, {}, []).add_adapter(adapter_name, config, rng).set_adapter(adapter_name)
