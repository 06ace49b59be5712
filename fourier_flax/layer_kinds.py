"""The Flax layer kinds adapters run on: ``nn.Dense``, ``nn.DenseGeneral`` and Hugging Face GPT-2's ``FlaxConv1D``.

Example::

  is_conv1d(module), owns_matmul(module)
  # (False, True)
"""

from __future__ import annotations

import sys

import flax.linen as nn

_GPT2_MODULE = "transformers.models.gpt2.modeling_flax_gpt2"


def conv1d_type() -> type | None:
    """HF's ``FlaxConv1D`` if transformers' GPT-2 is loaded (a model using it must have imported it)."""
    gpt2 = sys.modules.get(_GPT2_MODULE)
    return getattr(gpt2, "FlaxConv1D", None)


def is_conv1d(module: nn.Module) -> bool:
    """Whether ``module`` is GPT-2's ``FlaxConv1D`` (kernel stored ``(out, in)``)."""
    conv1d = conv1d_type()
    return conv1d is not None and isinstance(module, conv1d)


def owns_matmul(module: nn.Module) -> bool:
    """Layers whose computation is exactly ``x @ kernel (+ bias)`` (or ``x @ kernel.T`` for FlaxConv1D)."""
    if type(module) is nn.Dense:
        return module.dot_general is None and module.dot_general_cls is None
    return type(module) is conv1d_type()
