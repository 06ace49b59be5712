"""A BERT encoder in flax.nnx that loads Hugging Face safetensors directly (no transformers model classes).

Hugging Face removed its Flax models in transformers v5; this is the model path that outlives them. Attribute
paths follow Hugging Face's parameter names (``encoder.layer.0.attention.self.query``), so PEFT's targeting,
PEFT adapter files and our linen checkpoints address the same modules, and
:func:`fourier_flax.nnx.apply_adapter` gives the same spectra as :func:`fourier_flax.init_adapter` on
``FlaxBertModel`` params for the same key. The computation is Hugging Face's ``FlaxBertModel`` (post-LayerNorm,
exact-erf GELU, additive ``finfo.min`` attention mask, float32 softmax); :func:`load_bert` reads
``config.json`` and ``model.safetensors`` (PyTorch ``(out, in)`` weights are transposed to ``(in, out)``).

Example::

  model = load_bert(minilm_path())                        # all-MiniLM-L6-v2: 6 layers, hidden 384
  hidden, pooled = model(input_ids, attention_mask)       # (B, L, 384), (B, 384)
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx


@dataclasses.dataclass(frozen=True)
class BertConfig:
    """The fields of a Hugging Face BERT ``config.json`` this encoder uses."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    max_position_embeddings: int = 512
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    hidden_dropout_prob: float = 0.1
    attention_probs_dropout_prob: float = 0.1
    hidden_act: str = "gelu"

    @classmethod
    def from_json(cls, path: str | pathlib.Path, **overrides: Any) -> BertConfig:
        data = json.loads(pathlib.Path(path).read_text())
        if data.get("model_type", "bert") != "bert" or data.get("hidden_act", "gelu") != "gelu":
            raise ValueError(
                f"{path}: a {data.get('model_type')!r} model with hidden_act={data.get('hidden_act')!r}; this "
                "encoder implements BERT with exact GELU."
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{**{k: v for k, v in data.items() if k in fields}, **overrides})


def _dropout(x: jax.Array, rate: float, rng: jax.Array | None) -> jax.Array:
    if rng is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(rng, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


def _stream(rng: jax.Array | None, index: int) -> jax.Array | None:
    return None if rng is None else jax.random.fold_in(rng, index)


class Embeddings(nnx.Module):
    def __init__(self, config: BertConfig, rngs: nnx.Rngs):
        self.word_embeddings = nnx.Embed(config.vocab_size, config.hidden_size, rngs=rngs)
        self.position_embeddings = nnx.Embed(config.max_position_embeddings, config.hidden_size, rngs=rngs)
        self.token_type_embeddings = nnx.Embed(config.type_vocab_size, config.hidden_size, rngs=rngs)
        self.LayerNorm = nnx.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps, rngs=rngs)
        self.rate = config.hidden_dropout_prob

    def __call__(self, input_ids, token_type_ids, rng) -> jax.Array:
        positions = jnp.arange(input_ids.shape[-1])[None, :]
        x = self.word_embeddings(input_ids) + self.position_embeddings(positions)
        x = x + self.token_type_embeddings(token_type_ids)
        return _dropout(self.LayerNorm(x), self.rate, rng)


class SelfAttention(nnx.Module):
    def __init__(self, config: BertConfig, rngs: nnx.Rngs):
        hidden = config.hidden_size
        self.query = nnx.Linear(hidden, hidden, rngs=rngs)
        self.key = nnx.Linear(hidden, hidden, rngs=rngs)
        self.value = nnx.Linear(hidden, hidden, rngs=rngs)
        self.heads, self.rate = config.num_attention_heads, config.attention_probs_dropout_prob

    def __call__(self, x, mask_bias, rng) -> jax.Array:
        batch, length, hidden = x.shape
        split = lambda t: t.reshape(batch, length, self.heads, hidden // self.heads)  # noqa: E731
        q, k, v = split(self.query(x)), split(self.key(x)), split(self.value(x))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(hidden // self.heads).astype(q.dtype)
        probs = jax.nn.softmax(scores.astype(jnp.float32) + mask_bias, axis=-1).astype(x.dtype)
        probs = _dropout(probs, self.rate, rng)
        return jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(batch, length, hidden)


class SelfOutput(nnx.Module):
    def __init__(self, config: BertConfig, in_features: int, rngs: nnx.Rngs):
        self.dense = nnx.Linear(in_features, config.hidden_size, rngs=rngs)
        self.LayerNorm = nnx.LayerNorm(config.hidden_size, epsilon=config.layer_norm_eps, rngs=rngs)
        self.rate = config.hidden_dropout_prob

    def __call__(self, hidden, residual, rng) -> jax.Array:
        return self.LayerNorm(_dropout(self.dense(hidden), self.rate, rng) + residual)


class Attention(nnx.Module):
    def __init__(self, config: BertConfig, rngs: nnx.Rngs):
        self.self = SelfAttention(config, rngs)
        self.output = SelfOutput(config, config.hidden_size, rngs)

    def __call__(self, x, mask_bias, rng) -> jax.Array:
        return self.output(self.self(x, mask_bias, _stream(rng, 0)), x, _stream(rng, 1))


class Intermediate(nnx.Module):
    def __init__(self, config: BertConfig, rngs: nnx.Rngs):
        self.dense = nnx.Linear(config.hidden_size, config.intermediate_size, rngs=rngs)

    def __call__(self, x) -> jax.Array:
        return jax.nn.gelu(self.dense(x), approximate=False)


class Layer(nnx.Module):
    def __init__(self, config: BertConfig, rngs: nnx.Rngs):
        self.attention = Attention(config, rngs)
        self.intermediate = Intermediate(config, rngs)
        self.output = SelfOutput(config, config.intermediate_size, rngs)

    def __call__(self, x, mask_bias, rng) -> jax.Array:
        attended = self.attention(x, mask_bias, _stream(rng, 0))
        return self.output(self.intermediate(attended), attended, _stream(rng, 1))


class Encoder(nnx.Module):
    def __init__(self, config: BertConfig, rngs: nnx.Rngs, remat: bool = False):
        self.layer = nnx.List([Layer(config, rngs) for _ in range(config.num_hidden_layers)])
        self.remat = remat

    def __call__(self, x, mask_bias, rng) -> jax.Array:
        # remat: keep only each layer's input for the backward pass and recompute the rest (activation memory
        # of one layer instead of all, for one more forward pass).
        run = nnx.remat(Layer.__call__) if self.remat else Layer.__call__
        for index, layer in enumerate(self.layer):
            x = run(layer, x, mask_bias, _stream(rng, index))
        return x


class Pooler(nnx.Module):
    def __init__(self, config: BertConfig, rngs: nnx.Rngs):
        self.dense = nnx.Linear(config.hidden_size, config.hidden_size, rngs=rngs)

    def __call__(self, hidden) -> jax.Array:
        return jnp.tanh(self.dense(hidden[:, 0]))


class BertModel(nnx.Module):
    """BERT: ``model(input_ids, attention_mask=None, token_type_ids=None, *, dropout_rng=None)`` →
    ``(last_hidden_state (B, L, H), pooler_output (B, H))``; dropout only when ``dropout_rng`` is given.
    ``remat=True`` rematerialises each layer in the backward pass (``nnx.remat``)."""

    def __init__(self, config: BertConfig, rngs: nnx.Rngs, remat: bool = False):
        self.config = config
        self.embeddings = Embeddings(config, rngs)
        self.encoder = Encoder(config, rngs, remat)
        self.pooler = Pooler(config, rngs)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, *, dropout_rng=None):
        input_ids = jnp.asarray(input_ids)
        mask = jnp.ones_like(input_ids) if attention_mask is None else jnp.asarray(attention_mask)
        types = jnp.zeros_like(input_ids) if token_type_ids is None else jnp.asarray(token_type_ids)
        mask_bias = jnp.where(mask[:, None, None, :] > 0, 0.0, jnp.finfo(jnp.float32).min).astype(jnp.float32)
        hidden = self.embeddings(input_ids, types, _stream(dropout_rng, 0))
        hidden = self.encoder(hidden, mask_bias, _stream(dropout_rng, 1))
        return hidden, self.pooler(hidden)


def _target_shapes(model: BertModel) -> dict[str, tuple[int, ...]]:
    return {".".join(map(str, path)): tuple(v.shape) for path, v in nnx.to_flat_state(nnx.state(model))}


def _safetensors_name(path: str) -> str:
    """Our state path → the safetensors key (``...query.kernel`` → ``...query.weight``)."""
    module, leaf = path.rsplit(".", 1)
    if leaf == "embedding":
        return module + ".weight"
    if leaf == "kernel" or (leaf == "scale" and module.endswith("LayerNorm")):
        return module + ".weight"
    return path


def load_bert(
    model_dir: str | pathlib.Path, *, num_layers: int | None = None, dtype=jnp.float32, remat: bool = False
) -> BertModel:
    """A :class:`BertModel` with the weights of a Hugging Face BERT folder (``config.json`` +
    ``model.safetensors``), optionally only its first ``num_layers`` layers (``remat``: see :class:`BertModel`).

    Raises:
      FileNotFoundError: the folder lacks ``config.json`` or ``model.safetensors``.
      ValueError: a weight is missing or has another shape (the message names it).
    """
    from safetensors.numpy import load_file

    folder = pathlib.Path(model_dir)
    for name in ("config.json", "model.safetensors"):
        if not (folder / name).is_file():
            raise FileNotFoundError(f"{folder}: no {name}; load_bert reads a Hugging Face BERT folder.")
    overrides = {} if num_layers is None else {"num_hidden_layers": num_layers}
    config = BertConfig.from_json(folder / "config.json", **overrides)
    tensors = load_file(str(folder / "model.safetensors"))
    tensors = {key.removeprefix("bert."): value for key, value in tensors.items()}
    model = nnx.eval_shape(lambda: BertModel(config, nnx.Rngs(0), remat))
    state = nnx.state(model)
    problems, values = [], {}
    for path, shape in _target_shapes(model).items():
        key = _safetensors_name(path)
        if key not in tensors:
            problems.append(f"{key}: missing")
            continue
        value = tensors[key].T if path.endswith(".kernel") else tensors[key]
        if tuple(value.shape) != shape:
            problems.append(f"{key}: shape {tuple(value.shape)}, the model needs {shape}")
            continue
        values[path] = jnp.asarray(value, dtype)
    if problems:
        raise ValueError(f"{folder}/model.safetensors does not fit BERT {config}:\n  " + "\n  ".join(problems))
    flat = nnx.to_flat_state(state)
    for path, variable in flat:
        variable.value = values[".".join(map(str, path))]
    nnx.update(model, nnx.from_flat_state(flat))
    return model
