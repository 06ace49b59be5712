"""A Llama-family decoder in flax.nnx (Llama, SmolLM, Qwen2-style): attribute paths are Hugging Face's.

``LlamaForCausalLM`` holds ``model.embed_tokens``, ``model.layers.N.{input_layernorm, self_attn.{q,k,v,o}_proj,
post_attention_layernorm, mlp.{gate,up,down}_proj}``, ``model.norm`` and ``lm_head`` (absent when the output
layer is tied to the embedding), so PEFT configs written for ``LlamaForCausalLM`` (``target_modules=["q_proj",
"v_proj"]``) target the same layers and :func:`fourier_flax.nnx.export_peft` writes keys PEFT loads. Attention is
grouped-query with rotary position embeddings (Hugging Face's ``rotate_half`` convention), RMSNorm and a SwiGLU
feed-forward; projections may be float ``nnx.Linear`` or 4-bit :class:`~fourier_flax.models.quantized.QuantizedLinear`.

Calls: ``model(input_ids, attention_mask=None)`` → float32 logits ``(B, T, vocab)``; :meth:`LlamaForCausalLM.hidden`
→ the final normed hidden states ``(B, T, hidden)`` for a loss that need not form every logit
(:meth:`LlamaForCausalLM.logits` turns any slice of them into logits); :meth:`LlamaForCausalLM.step` runs tokens
against a fixed-size KV cache (:func:`init_cache`) for generation (:func:`fourier_flax.generate`).

Loaders (:mod:`fourier_flax.models.llama`): :func:`~fourier_flax.models.llama.from_gguf` (llama.cpp files,
optionally keeping the 4-bit blocks), :func:`~fourier_flax.models.llama.from_pretrained` (a Hugging Face folder
with ``config.json`` and ``*.safetensors``) and :func:`~fourier_flax.models.llama.load_tokenizer`.

Example::

  model = from_gguf(smollm2_path())  # SmolLM2-135M-Instruct, float32
  logits = model(input_ids)  # (B, T, 49152) float32
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

# A large negative logit for masked attention scores (not -inf, so fully masked padding rows stay finite).
MASKED = -1e30


@dataclasses.dataclass(frozen=True, kw_only=True)
class LlamaConfig:
    """The architecture, with Hugging Face ``LlamaConfig``'s field names.

    Attributes:
      vocab_size, hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads:
        sizes; ``head_dim`` defaults to ``hidden_size // num_attention_heads``.
      rms_norm_eps: RMSNorm's epsilon.
      rope_theta: the rotary base.
      tie_word_embeddings: the output layer is the embedding transposed (no ``lm_head``).
      attention_bias: q/k/v projections carry biases (Qwen2).
      max_position_embeddings: the context length.
      bos_token_id / eos_token_id: special tokens (``eos_token_id`` may be a tuple).
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int | None = None
    rms_norm_eps: float = 1e-5
    rope_theta: float = 10000.0
    tie_word_embeddings: bool = False
    attention_bias: bool = False
    max_position_embeddings: int = 2048
    bos_token_id: int | None = None
    eos_token_id: int | tuple[int, ...] | None = None

    def __post_init__(self):
        if self.head_dim is None:
            object.__setattr__(self, "head_dim", self.hidden_size // self.num_attention_heads)
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}."
            )

    @classmethod
    def from_hf(cls, fields: Mapping[str, Any]) -> LlamaConfig:
        """From a Hugging Face ``config.json`` (its ``LlamaConfig``/``Qwen2Config`` fields; others ignored)."""
        names = {field.name for field in dataclasses.fields(cls)}
        values = {name: fields[name] for name in names if fields.get(name) is not None}
        if isinstance(values.get("eos_token_id"), list):
            values["eos_token_id"] = tuple(values["eos_token_id"])
        if fields.get("model_type") == "qwen2":
            values.setdefault("attention_bias", True)
        return cls(**values)


class RMSNorm(nnx.Module):
    """``x / sqrt(mean(x²) + eps) · weight``, computed in float32 as Hugging Face's ``LlamaRMSNorm``."""

    def __init__(self, size: int, eps: float, *, dtype=jnp.float32):
        self.weight = nnx.Param(jnp.ones((size,), dtype))
        self.eps = eps

    def __call__(self, x: jax.Array) -> jax.Array:
        x32 = x.astype(jnp.float32)
        normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + self.eps)
        return self.weight[...] * normed.astype(x.dtype)


def rotary(x: jax.Array, positions: jax.Array, theta: float) -> jax.Array:
    """Rotary embedding of ``x`` ``(B, T, heads, D)`` at integer ``positions`` ``(B, T)`` (``rotate_half``)."""
    dim = x.shape[-1]
    inv_freq = 1.0 / (theta ** (np.arange(0, dim, 2, dtype=np.float32) / dim))
    angles = positions.astype(jnp.float32)[..., None] * jnp.asarray(inv_freq, jnp.float32)  # (B, T, D/2)
    angles = jnp.concatenate([angles, angles], axis=-1)[:, :, None, :]
    cos, sin = jnp.cos(angles), jnp.sin(angles)
    x32 = x.astype(jnp.float32)
    half = dim // 2
    rotated = jnp.concatenate([-x32[..., half:], x32[..., :half]], axis=-1)
    return (x32 * cos + rotated * sin).astype(x.dtype)


def _linear(in_features: int, out_features: int, bias: bool, dtype, rngs: nnx.Rngs) -> nnx.Linear:
    return nnx.Linear(in_features, out_features, use_bias=bias, dtype=dtype, param_dtype=dtype, rngs=rngs)


class LlamaAttention(nnx.Module):
    """Grouped-query self-attention with rotary positions; ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj``."""

    def __init__(self, config: LlamaConfig, *, dtype, rngs: nnx.Rngs):
        heads, kv_heads, head_dim = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        bias = config.attention_bias
        self.q_proj = _linear(config.hidden_size, heads * head_dim, bias, dtype, rngs)
        self.k_proj = _linear(config.hidden_size, kv_heads * head_dim, bias, dtype, rngs)
        self.v_proj = _linear(config.hidden_size, kv_heads * head_dim, bias, dtype, rngs)
        self.o_proj = _linear(heads * head_dim, config.hidden_size, False, dtype, rngs)
        self.heads, self.kv_heads, self.head_dim, self.theta = heads, kv_heads, head_dim, config.rope_theta

    def __call__(
        self, x: jax.Array, positions: jax.Array, key_mask: jax.Array, cache: dict | None, cache_index: jax.Array | None
    ) -> tuple[jax.Array, dict | None]:
        batch, length, _ = x.shape
        q = self.q_proj(x).reshape(batch, length, self.heads, self.head_dim)
        k = self.k_proj(x).reshape(batch, length, self.kv_heads, self.head_dim)
        v = self.v_proj(x).reshape(batch, length, self.kv_heads, self.head_dim)
        q, k = rotary(q, positions, self.theta), rotary(k, positions, self.theta)
        if cache is not None:
            k = jax.lax.dynamic_update_slice(cache["k"], k.astype(cache["k"].dtype), (0, cache_index, 0, 0))
            v = jax.lax.dynamic_update_slice(cache["v"], v.astype(cache["v"].dtype), (0, cache_index, 0, 0))
            cache = {"k": k, "v": v}
            query_slots = cache_index + jnp.arange(length)
        else:
            query_slots = jnp.arange(length)
        key_slots = jnp.arange(k.shape[1])
        allowed = (key_slots[None, :] <= query_slots[:, None])[None] & key_mask[:, None, :].astype(bool)  # (B, T, S)
        groups = self.heads // self.kv_heads
        q = q.reshape(batch, length, self.kv_heads, groups, self.head_dim)
        scores = jnp.einsum("btkgd,bskd->bkgts", q, k.astype(q.dtype)).astype(jnp.float32)
        scores = scores / np.sqrt(self.head_dim).astype(np.float32)
        scores = jnp.where(allowed[:, None, None], scores, MASKED)
        weights = jax.nn.softmax(scores, axis=-1).astype(v.dtype)
        out = jnp.einsum("bkgts,bskd->btkgd", weights, v).reshape(batch, length, self.heads * self.head_dim)
        return self.o_proj(out.astype(x.dtype)), cache


class LlamaMLP(nnx.Module):
    """SwiGLU: ``down_proj(silu(gate_proj(x)) · up_proj(x))``."""

    def __init__(self, config: LlamaConfig, *, dtype, rngs: nnx.Rngs):
        self.gate_proj = _linear(config.hidden_size, config.intermediate_size, False, dtype, rngs)
        self.up_proj = _linear(config.hidden_size, config.intermediate_size, False, dtype, rngs)
        self.down_proj = _linear(config.intermediate_size, config.hidden_size, False, dtype, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.down_proj(jax.nn.silu(self.gate_proj(x)) * self.up_proj(x))


class LlamaDecoderLayer(nnx.Module):
    def __init__(self, config: LlamaConfig, *, dtype, rngs: nnx.Rngs):
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype=dtype)
        self.self_attn = LlamaAttention(config, dtype=dtype, rngs=rngs)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype=dtype)
        self.mlp = LlamaMLP(config, dtype=dtype, rngs=rngs)

    def __call__(self, x, positions, key_mask, cache=None, cache_index=None):
        attended, cache = self.self_attn(self.input_layernorm(x), positions, key_mask, cache, cache_index)
        x = x + attended
        return x + self.mlp(self.post_attention_layernorm(x)), cache


class LlamaModel(nnx.Module):
    """The decoder stack: ``embed_tokens``, ``layers``, ``norm``."""

    def __init__(self, config: LlamaConfig, *, dtype, rngs: nnx.Rngs, remat: bool = False):
        self.embed_tokens = nnx.Embed(config.vocab_size, config.hidden_size, dtype=dtype, param_dtype=dtype, rngs=rngs)
        self.layers = nnx.List(
            [LlamaDecoderLayer(config, dtype=dtype, rngs=rngs) for _ in range(config.num_hidden_layers)]
        )
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, dtype=dtype)
        self.remat = remat

    def __call__(self, input_ids, positions, key_mask, caches=None, cache_index=None):
        x = self.embed_tokens(input_ids)
        new_caches = []
        for index, layer in enumerate(self.layers):
            cache = None if caches is None else caches[index]
            if self.remat and caches is None:
                x, cache = _rematerialized(layer, x, positions, key_mask), None
            else:
                x, cache = layer(x, positions, key_mask, cache, cache_index)
            new_caches.append(cache)
        return self.norm(x), (None if caches is None else new_caches)


def _rematerialized(layer: LlamaDecoderLayer, x, positions, key_mask) -> jax.Array:
    """The layer's output, its activations recomputed in the backward pass (``jax.checkpoint`` of the layer as a
    pure function of its state, so it also runs inside a plain ``jax.jit`` of a merged model)."""
    graphdef, state = nnx.split(layer)

    def run(state, x):
        return nnx.merge(graphdef, state)(x, positions, key_mask)[0]

    return jax.checkpoint(run)(state, x)


def positions_from_mask(attention_mask: jax.Array) -> jax.Array:
    """Hugging Face's position ids for a left-padded batch: ``cumsum(mask) − 1``, pads at 0 (``(B, T)`` int32)."""
    mask = attention_mask.astype(jnp.int32)
    return jnp.maximum(jnp.cumsum(mask, axis=-1) - 1, 0) * mask


class LlamaForCausalLM(nnx.Module):
    """A Llama-family causal LM (see the module docstring).

    Args:
      config: the :class:`LlamaConfig`.
      dtype: parameter and compute dtype of the float layers (logits are float32 whatever it is).
      rngs: initialisation randomness (a loader overwrites every weight).
      remat: recompute each decoder layer in the backward pass (less memory, one more forward).
    """

    def __init__(self, config: LlamaConfig, *, dtype=jnp.float32, rngs: nnx.Rngs | None = None, remat: bool = False):
        rngs = rngs or nnx.Rngs(0)
        self.config = config
        self.model = LlamaModel(config, dtype=dtype, rngs=rngs, remat=remat)
        if not config.tie_word_embeddings:
            self.lm_head = _linear(config.hidden_size, config.vocab_size, False, dtype, rngs)

    def hidden(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """The final normed hidden states ``(B, T, hidden)`` (a left-padded batch: pads masked out)."""
        mask = jnp.ones_like(input_ids) if attention_mask is None else attention_mask
        hidden, _ = self.model(input_ids, positions_from_mask(mask), mask)
        return hidden

    def logits(self, hidden: jax.Array) -> jax.Array:
        """float32 logits ``(..., vocab)`` of hidden states ``(..., hidden)``."""
        hidden = hidden.astype(jnp.float32)
        if self.config.tie_word_embeddings:
            embed = self.model.embed_tokens
            if hasattr(embed, "table"):  # a quantized table
                return embed.attend(hidden)
            return hidden @ embed.embedding[...].astype(jnp.float32).T
        head = self.lm_head
        return head(hidden.astype(getattr(head, "dtype", None) or jnp.float32)).astype(jnp.float32)

    def __call__(self, input_ids: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """float32 logits ``(B, T, vocab)`` for token ids ``(B, T)`` (``attention_mask`` 1 = token, 0 = left pad)."""
        return self.logits(self.hidden(input_ids, attention_mask))

    def step(
        self,
        input_ids: jax.Array,
        positions: jax.Array,
        key_mask: jax.Array,
        cache: list[dict],
        cache_index: jax.Array,
    ) -> tuple[jax.Array, list[dict]]:
        """Runs ``input_ids`` ``(B, T)`` at cache slots ``cache_index … cache_index + T − 1``.

        Args:
          positions: rotary positions ``(B, T)``.
          key_mask: ``(B, S)`` which cache slots hold real tokens (slots not yet written are excluded by
            causality).
          cache: :func:`init_cache`'s per-layer ``{"k", "v"}`` ``(B, S, kv_heads, head_dim)``.
          cache_index: the first slot to write (a traced int32 scalar).

        Returns:
          float32 logits of the last position ``(B, vocab)`` and the updated cache.
        """
        hidden, cache = self.model(input_ids, positions, key_mask, cache, cache_index)
        return self.logits(hidden[:, -1]), cache


def init_cache(config: LlamaConfig, batch: int, length: int, dtype=jnp.float32) -> list[dict[str, jax.Array]]:
    """An empty KV cache: per layer ``{"k", "v"}`` of zeros ``(batch, length, kv_heads, head_dim)``."""
    shape = (batch, length, config.num_key_value_heads, config.head_dim)
    return [{"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)} for _ in range(config.num_hidden_layers)]
