"""The adapter methods, registered in one place: :data:`REGISTRY` maps a config type to its method.

A new method is one module here (its config on :class:`~fourier_flax.targeting.TargetingConfig` and its
:class:`~fourier_flax.methods.base.AdapterMethod` subclass) and one entry in :data:`METHODS`; nothing else in
fourier_flax names methods. ``tests/test_method_contract.py`` runs every registered method through the same checks.

Example::

  config = LoraConfig(target_modules=["query"])
  method_of(config).parameter_count(config, "query", (768, 768))
  # 12288
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from typing import Any

from fourier_flax.methods.bank import AdapterBank, BankMethod
from fourier_flax.methods.base import AdapterMethod
from fourier_flax.methods.dora import DoraConfig, DoraMethod
from fourier_flax.methods.flora import FloraConfig, FloraMethod
from fourier_flax.methods.fourierft import FourierFTConfig, FourierFTMethod
from fourier_flax.methods.lora import LoraConfig, LoraMethod
from fourier_flax.methods.svft import SvftConfig, SvftMethod
from fourier_flax.methods.vera import VeraConfig, VeraMethod
from fourier_flax.targeting import TargetingConfig

METHODS = (FourierFTMethod(), LoraMethod(), VeraMethod(), DoraMethod(), FloraMethod(), SvftMethod())
REGISTRY: dict[type, AdapterMethod] = {method.config_type: method for method in METHODS}
# Any registered method's config (the public targeting base every config extends).
AdapterConfig = TargetingConfig
# Every leaf name any method adds beside a kernel (LoRA and DoRA share lora_a / lora_b).
ADAPTER_LEAVES: tuple[str, ...] = tuple(dict.fromkeys(n for method in REGISTRY.values() for n in method.leaf_names))


def method_of(config: Any) -> AdapterMethod:
    """The registered method of ``config``'s type.

    Raises:
      TypeError: not a registered adapter config.
    """
    if isinstance(config, AdapterBank):
        return _bank_of(method_of(config.adapter))
    method = REGISTRY.get(type(config))
    if method is None:
        known = ", ".join(t.__name__ for t in REGISTRY)
        raise TypeError(f"expected an adapter config ({known}), got {type(config).__name__}.")
    return method


@functools.cache
def _bank_of(inner: AdapterMethod) -> BankMethod:
    """The one :class:`BankMethod` per member method (ValueError for methods without bank support)."""
    return BankMethod(inner)


def check_scale_override(config: Any, scaling: Any) -> None:
    """Refuses a ``scaling=`` override (of :func:`fourier_flax.intercept`, :func:`fourier_flax.nnx.install_leaves`
    or :class:`~fourier_flax.finetune.causal_lm.CausalLMTrainer`) for a method whose update has no scale factor.

    The override stands for the method's whole scale factor (FourierFT's ``scaling``, LoRA's and DoRA's
    ``lora_alpha / r``, FLoRA's ``scale``), possibly traced so a sweep over it compiles once.

    Raises:
      ValueError: ``scaling`` is given and ``config``'s method (VeRA, SVFT) has no scale factor.
    """
    if scaling is not None and not method_of(config).scaled:
        raise ValueError(
            f"scaling= was given, but {type(config).__name__} has no scale factor to override: pass scaling=None "
            "(tune its own fields, e.g. VeRA's d_initial, through the config)."
        )


def method_for_peft(peft_config: Mapping[str, Any]) -> AdapterMethod:
    """The method of a PEFT ``adapter_config.json`` (``LORA`` with ``use_dora`` is DoRA).

    Raises:
      ValueError: a PEFT type fourier_flax does not read.
    """
    peft_type = peft_config.get("peft_type")
    if peft_type == "LORA" and peft_config.get("use_dora"):
        return method_named("dora")
    for method in METHODS:
        if method.peft_type == peft_type and method.name != "dora":
            return method
    readable = sorted({m.peft_type for m in METHODS if m.peft_type})
    raise ValueError(f"a PEFT {peft_type!r} adapter; fourier_flax reads {readable} (LORA with use_dora: DoRA).")


def method_named(name: str) -> AdapterMethod:
    """The registered method called ``name`` (``"fourierft"``, ``"lora"``)."""
    for method in REGISTRY.values():
        if method.name == name:
            return method
    raise ValueError(f"unknown adapter method {name!r}; registered: {sorted(m.name for m in REGISTRY.values())}.")


__all__ = [
    "ADAPTER_LEAVES",
    "AdapterBank",
    "REGISTRY",
    "AdapterMethod",
    "DoraConfig",
    "FloraConfig",
    "FourierFTConfig",
    "LoraConfig",
    "SvftConfig",
    "VeraConfig",
    "AdapterConfig",
    "method_for_peft",
    "method_named",
    "method_of",
]
