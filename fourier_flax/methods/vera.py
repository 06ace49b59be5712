"""VeRA (Kopiczko et al., ICLR 2024), as Hugging Face PEFT implements it: shared frozen random projections.

PEFT's layer (PyTorch ``(out, in)`` weights): ``ΔW = (λ_b ⊙ B) (λ_d ⊙ A)`` with ``A`` ``(r, in)`` and ``B``
``(out, r)`` shared by every adapted layer (drawn once at the largest in/out sizes, sliced per layer), trainable
``λ_d`` ``(r,)`` (init ``d_initial``) and ``λ_b`` ``(out,)`` (init 0, so ΔW starts at 0); no scaling factor. On a
Flax ``(in, out)`` view ``ΔW`` is the transpose.

Leaves per adapted module: ``vera_lambda_d`` ``(*stack, r)`` and ``vera_lambda_b`` ``(*stack, out)`` (trained), and
that layer's slices of the shared projections, ``vera_A`` ``(r, in)`` and ``vera_B`` ``(out, r)`` (frozen, never
saved: rebuilt from ``projection_prng_key``). The projections are PEFT's distribution (Kaiming-uniform: bound
``sqrt(6 / fan_in)``, fan_in = largest ``in`` for A and ``r`` for B) drawn with JAX's PRNG from
``projection_prng_key``, so they are not PEFT's values; with PEFT's own projections in these leaves (PEFT saves them,
``save_projection=True``) the outputs agree (tests/test_vera_dora.py).

Example::

  config = VeraConfig(target_modules=["query", "value"], r=256)
  params = init_adapter(params, config, jax.random.key(0))
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from fourier_flax.methods.base import PEFT_TARGETING_FIELDS, AdapterMethod
from fourier_flax.targeting import TargetingConfig

VERA_A, VERA_B = "vera_A", "vera_B"
LAMBDA_D, LAMBDA_B = "vera_lambda_d", "vera_lambda_b"


@dataclasses.dataclass(frozen=True, kw_only=True)
class VeraConfig(TargetingConfig):
    """VeRA hyperparameters with PEFT's ``VeraConfig`` names and defaults.

    Attributes:
      r: rank of the shared projections (PEFT's default 256).
      projection_prng_key: seed of the shared random ``A`` and ``B``.
      d_initial: initial value of every ``λ_d`` entry.
      init_weights: True (PEFT's default): ``λ_b = 0``, ``λ_d = d_initial``; False: PEFT's raw init
        (``λ_b = 1``, ``λ_d ~ N(0, 1)``), ΔW not zero.
      bias: "none", "all" or "vera_only".
    """

    r: int = 256
    projection_prng_key: int = 0
    d_initial: float = 0.1
    init_weights: bool = True
    bias: str = "none"

    def __post_init__(self):
        super().__post_init__()
        if not isinstance(self.r, int) or self.r < 1:
            raise ValueError(f"r must be a positive int, got {self.r!r}.")
        if self.bias not in ("none", "all", "vera_only"):
            raise ValueError(f"bias must be 'none', 'all' or 'vera_only', got {self.bias!r}.")


def _in_out(config: VeraConfig, view: tuple[int, int]) -> tuple[int, int]:
    """``(in, out)`` of a layer from its 2-D view (``(out, in)`` under ``fan_in_fan_out``)."""
    return (view[1], view[0]) if config.fan_in_fan_out else view


def shared_projections(config: VeraConfig, max_in: int, max_out: int) -> tuple[jax.Array, jax.Array]:
    """The shared ``A`` ``(r, max_in)`` and ``B`` ``(max_out, r)``: Kaiming-uniform (PEFT's ``_kaiming_init``)."""
    key_a, key_b = jax.random.split(jax.random.key(config.projection_prng_key))
    bound_a, bound_b = np.float32(np.sqrt(6.0 / max_in)), np.float32(np.sqrt(6.0 / config.r))
    a = jax.random.uniform(key_a, (config.r, max_in), jnp.float32, -bound_a, bound_a)
    b = jax.random.uniform(key_b, (max_out, config.r), jnp.float32, -bound_b, bound_b)
    return a, b


class VeraMethod(AdapterMethod):
    name: ClassVar[str] = "vera"
    config_type: ClassVar[type] = VeraConfig
    leaf_names: ClassVar[tuple[str, ...]] = (LAMBDA_D, LAMBDA_B, VERA_A, VERA_B)
    leaf_ndim: ClassVar[int] = 1
    scaled: ClassVar[bool] = False
    frozen_leaf_names: ClassVar[tuple[str, ...]] = (VERA_A, VERA_B)

    def prepare(self, config, views):
        sizes = [_in_out(config, view) for view in views.values()]
        return shared_projections(config, max(s[0] for s in sizes), max(s[1] for s in sizes))

    def init_leaves(self, config, path, view, stack_shape, rng, *, kernel, modes, shared=None):
        a, b = shared
        in_features, out_features = _in_out(config, view)
        if config.init_weights:
            lambda_b = jnp.zeros((*stack_shape, out_features), jnp.float32)
            lambda_d = jnp.full((*stack_shape, config.r), config.d_initial, jnp.float32)
        else:
            lambda_b = jnp.ones((*stack_shape, out_features), jnp.float32)
            lambda_d = jax.random.normal(rng, (*stack_shape, config.r), jnp.float32)
        return {LAMBDA_D: lambda_d, LAMBDA_B: lambda_b, VERA_A: a[:, :in_features], VERA_B: b[:out_features]}

    def delta_w(self, config, path, module, view, *, scaling=None):
        lambda_d = jnp.asarray(module[LAMBDA_D], jnp.float32)
        lambda_b = jnp.asarray(module[LAMBDA_B], jnp.float32)
        a, b = jnp.asarray(module[VERA_A], jnp.float32), jnp.asarray(module[VERA_B], jnp.float32)
        torch_layout = jnp.matmul(lambda_b[..., :, None] * b, lambda_d[..., :, None] * a)  # (*stack, out, in)
        return torch_layout if config.fan_in_fan_out else jnp.swapaxes(torch_layout, -1, -2)

    def module_record(self, config, path, module, view):
        return {"r": int(np.shape(module[LAMBDA_D])[-1]), "projection_prng_key": config.projection_prng_key}

    def record_problems(self, config, path, record, view, *, kernel):
        problems = []
        if record["r"] != config.r:
            problems.append(f"module {path}: stores rank {record['r']}, the config has r={config.r}")
        if record["projection_prng_key"] != config.projection_prng_key:
            problems.append(f"module {path}: trained with projection_prng_key={record['projection_prng_key']}")
        return problems

    def leaf_axes(self, name):
        return {LAMBDA_B: ("out",), VERA_A: (None, "in"), VERA_B: ("out", None)}.get(name)

    def parameter_count(self, config, path, view):
        return config.r + _in_out(config, view)[1]

    peft_type: ClassVar[str] = "VERA"
    # PEFT's VeraConfig has every targeting field but exclude_modules.
    peft_fields: ClassVar[tuple[str, ...]] = (
        "r",
        "projection_prng_key",
        "d_initial",
        "init_weights",
        *(name for name in PEFT_TARGETING_FIELDS if name != "exclude_modules"),
    )

    def peft_unsupported(self, config):
        return "PEFT's VeraConfig has no exclude_modules" if config.exclude_modules else None

    def peft_extra_fields(self, config):
        return {"save_projection": True, "vera_dropout": 0.0}

    peft_harmless: ClassVar[tuple[str, ...]] = ("save_projection", "vera_dropout")
    peft_suffixes: ClassVar[tuple[str, ...]] = (LAMBDA_B, LAMBDA_D)

    def peft_module_tensors(self, config, path, module):
        return {name: np.asarray(module[name], np.float32) for name in (LAMBDA_B, LAMBDA_D)}

    def leaves_from_peft(self, config, path, tensors, view, shared):
        if "vera_A" not in shared or "vera_B" not in shared:
            raise ValueError(
                "the PEFT VeRA adapter holds no base_model.vera_A / vera_B: it was saved with save_projection=False; "
                "re-save it with save_projection=True (PEFT's default) so its projections travel with it."
            )
        in_features, out_features = _in_out(config, view)
        leaves = {name: np.asarray(tensors[name], np.float32) for name in (LAMBDA_B, LAMBDA_D)}
        leaves[VERA_A] = np.asarray(shared["vera_A"], np.float32)[:, :in_features]
        leaves[VERA_B] = np.asarray(shared["vera_B"], np.float32)[:out_features]
        return leaves

    def peft_shared_tensors(self, config, modules):
        """PEFT's ``vera_A`` ``(r, max_in)`` and ``vera_B`` ``(max_out, r)``: every module holds a slice of them, so the
        modules with the largest in and out sizes hold them whole."""
        widest = max(modules.values(), key=lambda m: np.shape(m[VERA_A])[-1])
        tallest = max(modules.values(), key=lambda m: np.shape(m[VERA_B])[-2])
        return {"vera_A": np.asarray(widest[VERA_A], np.float32), "vera_B": np.asarray(tallest[VERA_B], np.float32)}
