"""LoRA (Hu et al., 2021), the baseline: ``ΔW = (lora_alpha / r) · A B`` on a kernel's 2-D view.

Leaves: ``lora_a`` ``(*stack, d1, r)`` (PEFT's Kaiming-uniform, ``a = sqrt(5)``) and ``lora_b`` ``(*stack, r, d2)``
(zeros), so ΔW starts at zero. For a Flax ``(in, out)`` view they are the transposes of PEFT's ``lora_A.weight``
``(r, in)`` and ``lora_B.weight`` ``(out, r)``.

Example::

  leaves = LoraMethod().init_leaves(LoraConfig(target_modules=["query"], r=8), "query", (768, 768), (), key)
  leaves["lora_a"].shape, leaves["lora_b"].shape
  # ((768, 8), (8, 768))
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from fourier_flax.methods.bank import base_matmul, selected_rows
from fourier_flax.methods.base import PEFT_TARGETING_FIELDS, AdapterMethod
from fourier_flax.targeting import Bias, TargetingConfig

LORA_A = "lora_a"
LORA_B = "lora_b"


@dataclasses.dataclass(frozen=True, kw_only=True)
class LoraConfig(TargetingConfig):
    """LoRA (Hu et al., 2021), the baseline: ``ΔW = (lora_alpha / r) · A B`` with A ``(d1, r)``, B ``(r, d2)``.

    A starts from PEFT's default (Kaiming-uniform, ``a = sqrt(5)``) and B at zero, so ΔW starts at zero.

    Attributes:
      r: rank.
      lora_alpha: scale numerator; the update is scaled by ``lora_alpha / r``.
      bias: "none", "all" or "lora_only".
    """

    r: int = 8
    lora_alpha: float = 8.0
    bias: Bias = "none"

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"r must be a positive int, got {self.r!r}.")
        if self.bias not in ("none", "all", "lora_only"):
            raise ValueError(f"bias must be 'none', 'all' or 'lora_only', got {self.bias!r}.")

    @property
    def scale(self) -> float:
        return self.lora_alpha / self.r


def init_lora_leaves(
    rng: jax.Array,
    shape: tuple[int, int],
    r: int,
    in_features: int,
    stack_shape: tuple[int, ...] = (),
) -> tuple[jax.Array, jax.Array]:
    """PEFT's default LoRA initialisation on a ``(d1, d2)`` kernel view.

    Args:
      rng: a JAX PRNG key.
      shape: the kernel's 2-D view ``(d1, d2)``.
      r: the rank.
      in_features: the layer's fan-in (``d1`` for an ``(in, out)`` view), which sets the Kaiming bound.
      stack_shape: leading axes of layers stacked by ``nn.scan``.

    Returns:
      ``lora_a`` float32 ``(*stack_shape, d1, r)``, uniform on ``±1/sqrt(in_features)`` (Kaiming-uniform with
      ``a = sqrt(5)``), and ``lora_b`` float32 zeros ``(*stack_shape, r, d2)``.
    """
    d1, d2 = shape
    bound = np.float32(1.0 / np.sqrt(in_features))
    lora_a = jax.random.uniform(rng, (*stack_shape, d1, r), jnp.float32, -bound, bound)
    return lora_a, jnp.zeros((*stack_shape, r, d2), jnp.float32)


def lora_delta_w(lora_a: jax.Array, lora_b: jax.Array, scale: float | jax.Array) -> jax.Array:
    """``scale · A B`` in float32: ``(..., d1, r) × (..., r, d2) → (..., d1, d2)``; ``scale`` may be traced."""
    product = jnp.matmul(lora_a.astype(jnp.float32), lora_b.astype(jnp.float32))
    return product * jnp.asarray(scale, jnp.float32)


class LoraMethod(AdapterMethod):
    name: ClassVar[str] = "lora"
    config_type: ClassVar[type] = LoraConfig
    leaf_names: ClassVar[tuple[str, ...]] = (LORA_A, LORA_B)
    leaf_ndim: ClassVar[int] = 2

    def init_leaves(self, config, path, view, stack_shape, rng, *, kernel, modes, shared=None):
        in_features = view[1] if config.fan_in_fan_out else view[0]
        lora_a, lora_b = init_lora_leaves(rng, view, config.r, in_features, stack_shape)
        return {LORA_A: lora_a, LORA_B: lora_b}

    def delta_w(self, config, path, module, view, *, scaling=None):
        return lora_delta_w(module[LORA_A], module[LORA_B], config.scale if scaling is None else scaling)

    def module_record(self, config, path, module, view):
        return {"r": int(np.shape(module[LORA_A])[-1])}

    def record_problems(self, config, path, record, view, *, kernel):
        if record["r"] == config.r:
            return []
        return [f"module {path}: stores rank {record['r']}, the config has r={config.r}"]

    def leaf_axes(self, name):
        return {LORA_A: ("in", None), LORA_B: (None, "out")}.get(name)

    bank_scale: ClassVar[tuple[str, str]] = ("lora_alpha", LORA_B)

    def bank_matmul(self, config, alpha, path, params, x, ids, *, precision, dtype):
        """``x @ W0`` plus each example's ``scale · (x A_b) B_b`` with its gathered factors (Punica-style);
        ``alpha`` (a layer's scale override, possibly traced) replaces ``lora_alpha / r`` unless None."""
        y = base_matmul(x, params["kernel"], precision=precision, dtype=dtype)
        lora_a = selected_rows(params[LORA_A], ids).astype(jnp.float32)  # (B, d1, r)
        lora_b = selected_rows(params[LORA_B], ids).astype(jnp.float32)  # (B, r, d2)
        rows = x.astype(jnp.float32).reshape(x.shape[0], -1, x.shape[-1])  # (B, T, d1)
        low = jnp.einsum("btd,bdr->btr", rows, lora_a, precision=precision)
        scale = jnp.asarray(config.scale if alpha is None else alpha, jnp.float32)
        update = jnp.einsum("btr,bro->bto", low, lora_b, precision=precision) * scale
        return y + update.reshape(y.shape).astype(y.dtype)

    def parameter_count(self, config, path, view):
        return config.r * (view[0] + view[1])

    peft_type: ClassVar[str] = "LORA"
    peft_fields: ClassVar[tuple[str, ...]] = ("r", "lora_alpha", *PEFT_TARGETING_FIELDS)

    # Inference-neutral or bookkeeping fields PEFT 0.21 writes with non-empty defaults.
    peft_harmless: ClassVar[tuple[str, ...]] = (
        "lora_dropout",
        "use_dora",
        "init_lora_weights",
        "megatron_core",
        "qalora_group_size",
        "runtime_config",
    )
    peft_suffixes: ClassVar[tuple[str, ...]] = ("lora_A.weight", "lora_B.weight")

    def peft_extra_fields(self, config):
        return {"lora_dropout": 0.0, "use_dora": False, "init_lora_weights": True}

    def leaves_from_peft(self, config, path, tensors, view, shared):
        a, b = (np.asarray(tensors[k], np.float32) for k in ("lora_A.weight", "lora_B.weight"))  # (r, in), (out, r)
        if config.fan_in_fan_out:
            return {LORA_A: b, LORA_B: a}
        return {LORA_A: a.T, LORA_B: b.T}

    def peft_module_tensors(self, config, path, module):
        a, b = (np.asarray(module[k], np.float32) for k in (LORA_A, LORA_B))
        if a.ndim != 2:
            raise ValueError(f"module {path}: stacked LoRA factors {a.shape} (nn.scan) have no PEFT equivalent.")
        # PEFT: ΔW_torch (out, in) = scale · lora_B (out, r) @ lora_A (r, in). Our view is (in, out) = a b, or
        # (out, in) = a b under fan_in_fan_out (GPT-2's Conv1D).
        if config.fan_in_fan_out:
            return {"lora_A.weight": b, "lora_B.weight": a}
        return {"lora_A.weight": a.T, "lora_B.weight": b.T}
