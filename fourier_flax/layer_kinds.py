"""The layer kinds adapters run on, and which of them are plain matmuls (linen and NNX alike).

A *plain matmul* layer computes exactly ``y = x @ kernel (+ bias)``: linen ``nn.Dense`` and ``nnx.Linear``
without a custom ``dot_general``, Hugging Face GPT-2's ``FlaxConv1D`` (kernel stored ``(out, in)``: ``x @
kernel.T``) and the 4-bit :class:`~fourier_flax.models.quantized.QuantizedLinear`. For those, a method may run
its own matmul (:meth:`fourier_flax.methods.base.AdapterMethod.matmul`) through one framework-neutral call,
:func:`fourier_flax.adapted_modules.adapted_matmul_call`; every other layer runs its own computation on the
adapted kernel.

Example::

  layer = matmul_layer(module)  # a linen or NNX layer
  layer.transposed, layer.bias is None
  # (False, True) for nn.Dense(use_bias=False)
"""

from __future__ import annotations

import dataclasses
import sys
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
from flax import nnx

from fourier_flax.models.quantized import QuantizedLinear

_GPT2_MODULE = "transformers.models.gpt2.modeling_flax_gpt2"


def conv1d_type() -> type | None:
    """HF's ``FlaxConv1D`` if transformers' GPT-2 is loaded (a model using it must have imported it)."""
    gpt2 = sys.modules.get(_GPT2_MODULE)
    return getattr(gpt2, "FlaxConv1D", None)


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is GPT-2's ``FlaxConv1D`` (kernel stored ``(out, in)``)."""
    conv1d = conv1d_type()
    return conv1d is not None and isinstance(module, conv1d)


@dataclasses.dataclass(frozen=True)
class MatmulLayer:
    """What a plain matmul layer adds to ``x @ kernel``: its bias (None: no bias), compute ``dtype`` (None:
    promote as the layer does), ``precision``, and whether the kernel is stored ``(out, in)`` (``transposed``)."""

    bias: jax.Array | None
    dtype: Any
    precision: Any
    transposed: bool = False

    def add_bias(self, y: jax.Array) -> jax.Array:
        """``y (+ bias)``, the bias cast to ``y``'s dtype as the layers do."""
        return y if self.bias is None else y + jnp.asarray(self.bias, y.dtype)


def matmul_layer(module: nn.Module | nnx.Module) -> MatmulLayer | None:
    """The :class:`MatmulLayer` of a plain matmul layer (see the module docstring), or None for any other."""
    if type(module) is nn.Dense and module.dot_general is None and module.dot_general_cls is None:
        return MatmulLayer(_linen_bias(module), module.dtype, module.precision)
    if type(module) is conv1d_type():
        return MatmulLayer(_linen_bias(module), module.dtype, module.precision, transposed=True)
    plain_linear = (
        type(module) is nnx.Linear
        and module.dot_general is jax.lax.dot_general
        and getattr(module, "preferred_element_type", None) is None
    )
    if plain_linear or isinstance(module, QuantizedLinear):
        bias = None if module.bias is None else module.bias[...]
        return MatmulLayer(bias, module.dtype, getattr(module, "precision", None))
    return None


def _linen_bias(module: nn.Module) -> jax.Array | None:
    return module.variables["params"]["bias"] if module.use_bias else None
