"""LoRA, the baseline FourierFT is compared with: ``ΔW = (lora_alpha / r) · A B`` on a kernel's 2-D view.

On a ``(d1, d2)`` kernel view LoRA keeps ``lora_a`` ``(d1, r)`` and ``lora_b`` ``(r, d2)`` beside the ``kernel``.
For a Flax ``(in, out)`` kernel these are the transposes of PEFT's ``lora_A.weight`` ``(r, in)`` and
``lora_B.weight`` ``(out, r)``. Initialisation follows PEFT's default: ``lora_a`` Kaiming-uniform with
``a = sqrt(5)`` (uniform on ``±1/sqrt(in_features)``), ``lora_b`` zeros, so ``ΔW`` starts at zero.

The rest of the machinery (:func:`fourier_flax.init_adapter`, :func:`fourier_flax.intercept`,
:func:`fourier_flax.merge_adapter`) is shared with FourierFT: pass a :class:`fourier_flax.config.LoraConfig`.

Example::

  >>> a, b = init_lora_leaves(jax.random.key(0), (768, 768), r=8, in_features=768)
  >>> lora_delta_w(a, b, scale=2.0).shape
  (768, 768)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np


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


def lora_delta_w(lora_a: jax.Array, lora_b: jax.Array, scale: float) -> jax.Array:
    """``scale · A B`` in float32: ``(..., d1, r) × (..., r, d2) → (..., d1, d2)``."""
    product = jnp.matmul(lora_a.astype(jnp.float32), lora_b.astype(jnp.float32))
    return product * np.float32(scale)
