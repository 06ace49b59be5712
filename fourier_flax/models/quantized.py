"""A 4-bit (or 8-bit) frozen base: GGUF blocks kept as integer arrays plus scales, dequantized inside the jitted call.

llama.cpp's block formats store a weight ``(out, in)`` row by row in blocks of 32 values:

* ``Q4_0``: a float16 scale ``d`` and 32 4-bit codes, ``w = d · (q − 8)``;
* ``Q4_1``: float16 ``d`` and ``m`` and 32 4-bit codes, ``w = d · q + m``;
* ``Q8_0``: float16 ``d`` and 32 int8 codes, ``w = d · q``.

(4-bit codes pack two per byte: the low nibbles are values 0–15 of a block, the high nibbles 16–31.)
:class:`QuantizedArray` holds the codes as ``uint8`` / ``int8`` arrays and the scales as float16 — 0.56 (Q4_0),
0.625 (Q4_1) and 1.06 (Q8_0) bytes per weight against float32's 4 — and :meth:`QuantizedArray.dequantize` rebuilds
the float32 weight with the formulas above, equal to the ``gguf`` package's NumPy dequantization.
:class:`QuantizedLinear` and :class:`QuantizedEmbed` are the frozen layers of a quantized model: the weight is
rebuilt per call inside ``jax.jit`` and never stored in float. Adapters run on a :class:`QuantizedLinear` as on an
``nnx.Linear`` (:mod:`fourier_flax.nnx` reads its :meth:`QuantizedLinear.kernel_value`); the adapter is float32.

Example::

  weight = QuantizedArray.from_gguf_blocks("Q4_1", blocks, shape=(576, 576))  # blocks: (576, 360) uint8
  layer = QuantizedLinear(weight)  # y = x @ weight.dequantize().T
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

BLOCK = 32
# bytes per block of 32 values, by format
BLOCK_BYTES = {"Q4_0": 18, "Q4_1": 20, "Q8_0": 34}
FORMATS = tuple(BLOCK_BYTES)


class QuantizedCodes(nnx.Variable):
    """Frozen integer codes and scales of a quantized weight: never a ``nnx.Param``, so no optimizer sees them."""


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QuantizedArray:
    """A weight ``(rows, cols)`` in one of llama.cpp's 32-value block formats.

    Attributes:
      format: ``"Q4_0"``, ``"Q4_1"`` or ``"Q8_0"`` (static).
      shape: ``(rows, cols)`` of the float weight (static); ``cols`` is a multiple of 32.
      codes: ``uint8 (rows, cols // 32, 16)`` packed 4-bit codes, or ``int8 (rows, cols // 32, 32)`` for Q8_0.
      scales: float16 ``(rows, cols // 32)`` (``d``).
      mins: float16 ``(rows, cols // 32)`` (``m``, Q4_1 only; zeros otherwise).
    """

    codes: jax.Array
    scales: jax.Array
    mins: jax.Array
    format: str = dataclasses.field(metadata={"static": True})
    shape: tuple[int, int] = dataclasses.field(metadata={"static": True})

    @classmethod
    def from_gguf_blocks(cls, format: str, blocks: np.ndarray, shape: tuple[int, int]) -> QuantizedArray:
        """Splits a GGUF tensor's raw blocks (``uint8 (rows, cols // 32 · block bytes)``, as ``gguf.GGUFReader``
        gives them) into codes and scales.

        Raises:
          ValueError: an unsupported format, or blocks that do not fit ``shape``.
        """
        if format not in BLOCK_BYTES:
            raise ValueError(f"quantized blocks of type {format} are not supported in-graph; supported: {FORMATS}.")
        rows, cols = shape
        nb = cols // BLOCK
        if cols % BLOCK or np.shape(blocks) != (rows, nb * BLOCK_BYTES[format]):
            raise ValueError(
                f"{format} blocks of shape {np.shape(blocks)} do not hold a ({rows}, {cols}) weight "
                f"(expected ({rows}, {nb * BLOCK_BYTES[format]}) bytes); the file is corrupt or mislabelled."
            )
        raw = np.ascontiguousarray(blocks, np.uint8).reshape(rows, nb, BLOCK_BYTES[format])
        scales = raw[..., 0:2].copy().view(np.float16)[..., 0]
        if format == "Q4_1":
            mins, codes = raw[..., 2:4].copy().view(np.float16)[..., 0], raw[..., 4:]
        else:
            mins, codes = np.zeros_like(scales), raw[..., 2:]
        if format == "Q8_0":
            codes = codes.view(np.int8)
        return cls(jnp.asarray(codes), jnp.asarray(scales), jnp.asarray(mins), format, (int(rows), int(cols)))

    def dequantize(self, rows: jax.Array | None = None) -> jax.Array:
        """The float32 weight ``(rows, cols)`` (or only the rows at integer indices ``rows``)."""
        codes, scales, mins = self.codes, self.scales, self.mins
        if rows is not None:
            codes, scales, mins = codes[rows], scales[rows], mins[rows]
        if self.format == "Q8_0":
            values = codes.astype(jnp.float32)
        else:
            values = jnp.concatenate([codes & 0x0F, codes >> 4], axis=-1).astype(jnp.float32)
            if self.format == "Q4_0":
                values = values - 8.0
        values = values * scales.astype(jnp.float32)[..., None] + mins.astype(jnp.float32)[..., None]
        return values.reshape(*values.shape[:-2], self.shape[1])

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in (self.codes, self.scales, self.mins))

    def take_rows(self, order: np.ndarray) -> QuantizedArray:
        """The weight with its rows reordered (blocks run along columns, so rows move whole)."""
        return QuantizedArray(self.codes[order], self.scales[order], self.mins[order], self.format, self.shape)


class QuantizedLinear(nnx.Module):
    """``y = x @ Wᵀ (+ b)`` for a quantized weight ``W`` ``(out, in)``: a frozen layer of a 4-bit model.

    Attributes:
      codes / scales / mins: the weight's :class:`QuantizedArray` parts, as :class:`QuantizedCodes` variables
        (``weight`` rebuilds the array).
      bias: float ``(out,)`` ``nnx.Param`` or None.
      in_features / out_features: the layer's sizes.
      dtype: compute dtype (float32 by default).
    """

    def __init__(self, weight: QuantizedArray, bias: jax.Array | None = None, *, dtype=jnp.float32):
        self.codes, self.scales, self.mins = (QuantizedCodes(a) for a in (weight.codes, weight.scales, weight.mins))
        self.format = weight.format
        self.bias = None if bias is None else nnx.Param(jnp.asarray(bias))
        self.out_features, self.in_features = weight.shape
        self.dtype = dtype

    @property
    def weight(self) -> QuantizedArray:
        return _array(self, (self.out_features, self.in_features))

    def kernel_value(self) -> jax.Array:
        """The dequantized kernel in ``nnx.Linear``'s layout ``(in, out)``, float32."""
        return self.weight.dequantize().T

    def __call__(self, x: jax.Array) -> jax.Array:
        weight = self.weight.dequantize().astype(self.dtype)
        y = jnp.einsum("...i,oi->...o", x.astype(self.dtype), weight)
        return y if self.bias is None else y + self.bias[...].astype(y.dtype)


class QuantizedEmbed(nnx.Module):
    """A quantized embedding table ``(vocab, features)``: looks rows up (dequantizing only those) and, for tied
    output layers, :meth:`attend` computes ``x @ tableᵀ``."""

    def __init__(self, table: QuantizedArray, *, dtype=jnp.float32):
        self.codes, self.scales, self.mins = (QuantizedCodes(a) for a in (table.codes, table.scales, table.mins))
        self.format = table.format
        self.num_embeddings, self.features = table.shape
        self.dtype = dtype

    @property
    def table(self) -> QuantizedArray:
        return _array(self, (self.num_embeddings, self.features))

    def __call__(self, ids: jax.Array) -> jax.Array:
        return self.table.dequantize(ids).astype(self.dtype)

    def attend(self, x: jax.Array) -> jax.Array:
        return jnp.einsum("...f,vf->...v", x, self.table.dequantize().astype(x.dtype))


def _array(module: nnx.Module, shape: tuple[int, int]) -> QuantizedArray:
    return QuantizedArray(module.codes[...], module.scales[...], module.mins[...], module.format, shape)


def state_bytes(model: nnx.Module) -> int:
    """Bytes of every array in ``model``'s state (quantized codes and scales at their own width)."""
    leaves = jax.tree.leaves(nnx.state(model))
    return sum(math.prod(np.shape(leaf)) * np.dtype(leaf.dtype).itemsize for leaf in leaves)
