"""A 4-bit (or 8-bit) frozen base: GGUF blocks kept as integer arrays plus scales, dequantized inside the jitted call.

llama.cpp's block formats store a weight ``(out, in)`` row by row in blocks:

* ``Q4_0``: 32 values, a float16 scale ``d`` and 4-bit codes, ``w = d · (q − 8)``;
* ``Q4_1``: 32 values, float16 ``d`` and ``m`` and 4-bit codes, ``w = d · q + m``;
* ``Q8_0``: 32 values, float16 ``d`` and int8 codes, ``w = d · q``;
* ``Q4_K``: 256 values in 8 groups of 32, float16 ``d`` and ``dmin``, a 6-bit scale ``s`` and min ``m`` per group
  (12 packed bytes) and 4-bit codes, ``w = d·s · q − dmin·m``;
* ``Q6_K``: 256 values in 16 groups of 16, 6-bit codes (4 low bits in ``ql``, 2 high bits in ``qh``), an int8
  scale per group and float16 ``d``, ``w = d·s · (q − 32)``.

:class:`QuantizedArray` holds each block field as its own ``uint8`` / ``int8`` / float16 array — 0.56 (Q4_0),
0.625 (Q4_1), 1.06 (Q8_0), 0.5625 (Q4_K) and 0.82 (Q6_K) bytes per weight against float32's 4 — and
:meth:`QuantizedArray.dequantize` rebuilds the float32 weight with the formulas above (bit unpacking in ``jnp``),
equal to the ``gguf`` package's NumPy dequantization.
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

# Each format: values per block and its byte layout, part name -> (first byte, last byte + 1, numpy dtype).
LAYOUTS: dict[str, tuple[int, dict[str, tuple[int, int, str]]]] = {
    "Q4_0": (32, {"d": (0, 2, "<f2"), "qs": (2, 18, "u1")}),
    "Q4_1": (32, {"d": (0, 2, "<f2"), "m": (2, 4, "<f2"), "qs": (4, 20, "u1")}),
    "Q8_0": (32, {"d": (0, 2, "<f2"), "qs": (2, 34, "i1")}),
    "Q4_K": (256, {"d": (0, 2, "<f2"), "dmin": (2, 4, "<f2"), "scales": (4, 16, "u1"), "qs": (16, 144, "u1")}),
    "Q6_K": (256, {"ql": (0, 128, "u1"), "qh": (128, 192, "u1"), "scales": (192, 208, "i1"), "d": (208, 210, "<f2")}),
}
FORMATS = tuple(LAYOUTS)


def _block_bytes(format: str) -> int:
    return max(stop for _, stop, _ in LAYOUTS[format][1].values())


class QuantizedCodes(nnx.Variable):
    """Frozen integer codes and scales of a quantized weight: never a ``nnx.Param``, so no optimizer sees them."""


def _nibbles(codes: jax.Array) -> tuple[jax.Array, jax.Array]:
    return (codes & 0x0F).astype(jnp.float32), (codes >> 4).astype(jnp.float32)


def _q4_k_scales(packed: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The 8 six-bit scales and mins of a Q4_K super-block from its 12 packed bytes (..., 12) → (..., 8) each."""
    packed = packed.astype(jnp.int32)
    low, mid, high = packed[..., 0:4], packed[..., 4:8], packed[..., 8:12]
    scales = jnp.concatenate([low & 63, (high & 0x0F) | ((low >> 6) << 4)], axis=-1)
    mins = jnp.concatenate([mid & 63, (high >> 4) | ((mid >> 6) << 4)], axis=-1)
    return scales.astype(jnp.float32), mins.astype(jnp.float32)


def _dequantize_blocks(format: str, parts: dict[str, jax.Array]) -> jax.Array:
    """float32 values ``(..., blocks, block size)`` of one format's blocks."""
    d = parts["d"].astype(jnp.float32)[..., None]
    if format == "Q8_0":
        return parts["qs"].astype(jnp.float32) * d
    if format in ("Q4_0", "Q4_1"):
        values = jnp.concatenate(_nibbles(parts["qs"]), axis=-1)  # low nibbles: values 0-15, high: 16-31
        if format == "Q4_0":
            return (values - 8.0) * d
        return values * d + parts["m"].astype(jnp.float32)[..., None]
    if format == "Q4_K":
        scales, mins = _q4_k_scales(parts["scales"])  # (..., 8): one per 32 values
        low, high = _nibbles(parts["qs"].reshape(*parts["qs"].shape[:-1], 4, 32))  # 4 chunks of 64 values
        values = jnp.stack([low, high], axis=-2).reshape(*low.shape[:-2], 8, 32)  # sub-block j: chunk j // 2
        dmin = parts["dmin"].astype(jnp.float32)[..., None, None]
        return (values * (d[..., None] * scales[..., None]) - dmin * mins[..., None]).reshape(*values.shape[:-2], 256)
    # Q6_K: two halves of 128 values; each value's 4 low bits in ql, 2 high bits in qh; a scale per 16 values
    ql = parts["ql"].astype(jnp.int32).reshape(*parts["ql"].shape[:-1], 2, 2, 32)  # (half, ql offset 0/32, l)
    qh = parts["qh"].astype(jnp.int32).reshape(*parts["qh"].shape[:-1], 2, 32)
    low = jnp.stack([ql[..., 0, :] & 0x0F, ql[..., 1, :] & 0x0F, ql[..., 0, :] >> 4, ql[..., 1, :] >> 4], axis=-2)
    high = jnp.stack([(qh >> shift) & 3 for shift in (0, 2, 4, 6)], axis=-2)
    values = ((low | (high << 4)) - 32).astype(jnp.float32).reshape(*ql.shape[:-3], 16, 16)  # 16 groups of 16
    scales = parts["scales"].astype(jnp.float32)
    return (values * (d[..., None] * scales[..., None])).reshape(*values.shape[:-2], 256)


@jax.tree_util.register_dataclass
@dataclasses.dataclass(frozen=True)
class QuantizedArray:
    """A weight ``(rows, cols)`` in one of llama.cpp's block formats (:data:`LAYOUTS`).

    Attributes:
      parts: the blocks' fields by name (``d``, ``m``, ``qs``, ``scales``, ...), each ``(rows, cols // block, …)``
        in its stored integer or float16 type.
      format: ``"Q4_0"``, ``"Q4_1"``, ``"Q8_0"``, ``"Q4_K"`` or ``"Q6_K"`` (static).
      shape: ``(rows, cols)`` of the float weight (static); ``cols`` is a multiple of the block size.
    """

    parts: dict[str, jax.Array]
    format: str = dataclasses.field(metadata={"static": True})
    shape: tuple[int, int] = dataclasses.field(metadata={"static": True})

    @classmethod
    def from_gguf_blocks(cls, format: str, blocks: np.ndarray, shape: tuple[int, int]) -> QuantizedArray:
        """Splits a GGUF tensor's raw blocks (``uint8 (rows, blocks · block bytes)``, as ``gguf.GGUFReader``
        gives them) into its parts.

        Raises:
          ValueError: an unsupported format, or blocks that do not fit ``shape``.
        """
        if format not in LAYOUTS:
            raise ValueError(f"quantized blocks of type {format} are not supported in-graph; supported: {FORMATS}.")
        size, layout = LAYOUTS[format]
        rows, cols = shape
        nb, nbytes = cols // size, _block_bytes(format)
        if cols % size or np.shape(blocks) != (rows, nb * nbytes):
            raise ValueError(
                f"{format} blocks of shape {np.shape(blocks)} do not hold a ({rows}, {cols}) weight "
                f"(expected ({rows}, {nb * nbytes}) bytes); the file is corrupt or mislabelled."
            )
        raw = np.ascontiguousarray(blocks, np.uint8).reshape(rows, nb, nbytes)
        parts = {}
        for name, (first, stop, dtype) in layout.items():
            part = np.ascontiguousarray(raw[..., first:stop]).view(np.dtype(dtype))
            parts[name] = jnp.asarray(part[..., 0] if part.shape[-1] == 1 else part)
        return cls(parts, format, (int(rows), int(cols)))

    def dequantize(self, rows: jax.Array | None = None) -> jax.Array:
        """The float32 weight ``(rows, cols)`` (or only the rows at integer indices ``rows``)."""
        parts = self.parts if rows is None else {name: part[rows] for name, part in self.parts.items()}
        values = _dequantize_blocks(self.format, parts)
        return values.reshape(*values.shape[:-2], self.shape[1])

    @property
    def nbytes(self) -> int:
        return sum(int(np.prod(a.shape)) * a.dtype.itemsize for a in self.parts.values())

    def take_rows(self, order: np.ndarray) -> QuantizedArray:
        """The weight with its rows reordered (blocks run along columns, so rows move whole)."""
        return QuantizedArray({name: part[order] for name, part in self.parts.items()}, self.format, self.shape)


class QuantizedLinear(nnx.Module):
    """``y = x @ Wᵀ (+ b)`` for a quantized weight ``W`` ``(out, in)``: a frozen layer of a 4-bit model.

    Attributes:
      parts: the weight's :class:`QuantizedArray` parts, as :class:`QuantizedCodes` variables (``weight``
        rebuilds the array).
      bias: float ``(out,)`` ``nnx.Param`` or None.
      in_features / out_features: the layer's sizes.
      dtype: compute dtype (float32 by default).
    """

    def __init__(self, weight: QuantizedArray, bias: jax.Array | None = None, *, dtype=jnp.float32):
        self.parts = nnx.Dict({name: QuantizedCodes(part) for name, part in weight.parts.items()})
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
        self.parts = nnx.Dict({name: QuantizedCodes(part) for name, part in table.parts.items()})
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
    return QuantizedArray({name: part[...] for name, part in module.parts.items()}, module.format, shape)


def state_bytes(model: nnx.Module) -> int:
    """Bytes of every array in ``model``'s state (quantized codes and scales at their own width)."""
    leaves = jax.tree.leaves(nnx.state(model))
    return sum(math.prod(np.shape(leaf)) * np.dtype(leaf.dtype).itemsize for leaf in leaves)
