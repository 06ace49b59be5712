"""DoRA (Liu et al., ICML 2024), as Hugging Face PEFT implements it (``LoraConfig(use_dora=True)``).

``W' = m ⊙ (W0 + s·ΔW_LoRA) / ‖W0 + s·ΔW_LoRA‖_c`` with ``s = lora_alpha / r``, the norm taken per output
feature and treated as a constant in the backward pass (``stop_gradient``; PEFT detaches it, the paper's §4.3).
For a Flax ``(in, out)`` kernel the per-output norm is a reduction over axis 0 (over ``in``); under
``fan_in_fan_out`` (view ``(out, in)``) over axis 1. The magnitude ``m`` ``(*stack, out)`` starts at ``‖W0‖_c``
and ``lora_b`` at zero, so the layer starts unchanged.

Leaves: ``lora_a`` ``(*stack, d1, r)``, ``lora_b`` ``(*stack, r, d2)`` (as :mod:`fourier_flax.methods.lora`) and
``lora_magnitude_vector`` ``(*stack, out)``.

Example::

  config = DoraConfig(target_modules=["query", "value"], r=8, lora_alpha=16.0)
  params = init_adapter(params, config, jax.random.key(0))
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from fourier_flax.methods.lora import LORA_A, LORA_B, LoraConfig, LoraMethod, init_lora_leaves, lora_delta_w

MAGNITUDE = "lora_magnitude_vector"


@dataclasses.dataclass(frozen=True, kw_only=True)
class DoraConfig(LoraConfig):
    """DoRA hyperparameters: PEFT's ``LoraConfig(use_dora=True)`` — LoRA's fields (``r``, ``lora_alpha``, ``bias``
    in "none" / "all" / "lora_only"), a different method."""


def _in_axis(config: DoraConfig) -> int:
    """The axis of the 2-D view that holds ``in`` (the norm reduces over it)."""
    return -1 if config.fan_in_fan_out else -2


class DoraMethod(LoraMethod):
    name: ClassVar[str] = "dora"
    config_type: ClassVar[type] = DoraConfig
    leaf_names: ClassVar[tuple[str, ...]] = (LORA_A, LORA_B, MAGNITUDE)
    leaf_ndim: ClassVar[int] = 2
    additive: ClassVar[bool] = False

    def init_leaves(self, config, path, view, stack_shape, rng, *, kernel, modes, shared=None):
        in_features = view[1] if config.fan_in_fan_out else view[0]
        lora_a, lora_b = init_lora_leaves(rng, view, config.r, in_features, stack_shape)
        magnitude = jnp.linalg.norm(jnp.asarray(kernel, jnp.float32), axis=_in_axis(config))
        return {LORA_A: lora_a, LORA_B: lora_b, MAGNITUDE: magnitude}

    def effective_kernel(self, config, path, module, view, *, scaling=None):
        kernel = jnp.asarray(module["kernel"], jnp.float32).reshape(self.delta_shape(module, view))
        scale = config.scale if scaling is None else scaling
        direction = kernel + lora_delta_w(module[LORA_A], module[LORA_B], scale)
        norm = jax.lax.stop_gradient(jnp.linalg.norm(direction, axis=_in_axis(config), keepdims=True))
        magnitude = jnp.expand_dims(jnp.asarray(module[MAGNITUDE], jnp.float32), _in_axis(config))
        return direction * (magnitude / norm)

    def delta_w(self, config, path, module, view, *, scaling=None):
        kernel = jnp.asarray(module["kernel"], jnp.float32).reshape(self.delta_shape(module, view))
        return self.effective_kernel(config, path, module, view, scaling=scaling) - kernel

    peft_suffixes: ClassVar[tuple[str, ...]] = ("lora_A.weight", "lora_B.weight", MAGNITUDE)

    def peft_extra_fields(self, config):
        return {**super().peft_extra_fields(config), "use_dora": True}

    def leaves_from_peft(self, config, path, tensors, view, shared):
        magnitude = np.asarray(tensors[MAGNITUDE], np.float32)
        return {**super().leaves_from_peft(config, path, tensors, view, shared), MAGNITUDE: magnitude}

    def peft_module_tensors(self, config, path, module):
        magnitude = np.asarray(module[MAGNITUDE], np.float32)
        return {**super().peft_module_tensors(config, path, module), MAGNITUDE: magnitude}

    def leaf_axes(self, name):
        return ("out",) if name == MAGNITUDE else super().leaf_axes(name)

    def parameter_count(self, config, path, view):
        out_features = view[0] if config.fan_in_fan_out else view[1]
        return config.r * (view[0] + view[1]) + out_features
