"""A sequence classifier over a BERT-like encoder (NNX BERT or a Hugging Face Flax model): mean or [CLS] pooling,
then a linear head.

all-MiniLM-L6-v2 is a mean-pooling sentence encoder: its [CLS] vector barely varies across sentences, so a head on
it starts blind. :class:`SequenceClassifier` therefore pools by the attention-masked mean of the last hidden states
by default; ``pooling="cls"`` uses the encoder's pooler output (``tanh(dense([CLS]))``, what Hugging Face's
``FlaxBertForSequenceClassification`` feeds its classifier). Dropout (the encoder's ``hidden_dropout_prob``) is
applied to the pooled vector in training, as in Hugging Face's heads.

Params are ``{<base_model_prefix>: encoder params, "classifier": {"kernel": (hidden, K), "bias": (K,)}}`` — for
BERT the same tree (and the same PEFT module paths, ``bert.encoder.layer.0...``) as
``FlaxBertForSequenceClassification``.

Example::

  classifier, params = load_classifier(num_labels=2)  # all-MiniLM-L6-v2 from its wheel, mean pooling
  logits = classifier(params, batch, None, False)      # batch: input_ids/attention_mask/token_type_ids (B, L)
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping
from typing import Any, Literal

import jax
import jax.numpy as jnp

from fourier_flax.finetune.nnx_encoder import NnxEncoder
from fourier_flax.models.bert import load_bert
from fourier_flax.models.hf import minilm_path

Pooling = Literal["mean", "cls"]
Backbone = Literal["nnx", "hf-flax"]
HEAD = "classifier"


@dataclasses.dataclass(frozen=True)
class SequenceClassifier:
    """``classifier(params, batch, rng, train) -> logits (B, num_labels)``.

    Attributes:
      encoder: a Hugging Face Flax encoder model (``FlaxBertModel``, ``FlaxRobertaModel``, ...).
      num_labels: outputs of the head (1 for regression).
      pooling: ``"mean"`` (masked mean of the last hidden states) or ``"cls"`` (the pooler output).
    """

    encoder: Any
    num_labels: int
    pooling: Pooling = "mean"

    def __post_init__(self):
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}.")

    @property
    def prefix(self) -> str:
        """The params key of the encoder (``"bert"``, ``"roberta"``)."""
        return self.encoder.base_model_prefix

    @property
    def config(self) -> Any:
        return self.encoder.config

    def __call__(self, params: Mapping[str, Any], batch: Mapping[str, Any], rng: jax.Array | None, train: bool):
        mask = batch["attention_mask"]
        outputs = self.encoder(
            batch["input_ids"],
            mask,
            batch.get("token_type_ids"),
            params=params[self.prefix],
            dropout_rng=rng,
            train=train,
        )
        if self.pooling == "mean":
            weights = mask.astype(outputs.last_hidden_state.dtype)[..., None]
            pooled = (outputs.last_hidden_state * weights).sum(1) / jnp.maximum(weights.sum(1), 1.0)
        else:
            pooled = outputs.pooler_output
        if train and rng is not None:
            rate = self.config.hidden_dropout_prob
            keep = jax.random.bernoulli(jax.random.fold_in(rng, 7), 1.0 - rate, pooled.shape)
            pooled = jnp.where(keep, pooled / (1.0 - rate), 0.0)
        head = params[HEAD]
        return pooled @ head["kernel"].astype(pooled.dtype) + head["bias"].astype(pooled.dtype)


def init_head(params: Mapping[str, Any], rng: jax.Array, std: float = 0.02) -> dict:
    """``params`` with a fresh ``classifier`` of the same shapes: kernel ~ N(0, std²) (BERT's
    ``initializer_range``), bias 0. Traceable, so a vmapped sweep draws one head per seed."""
    head = params[HEAD]
    kernel = std * jax.random.normal(rng, head["kernel"].shape, head["kernel"].dtype)
    return {**params, HEAD: {"kernel": kernel, "bias": jnp.zeros_like(head["bias"])}}


def with_label_mean_bias(params: Mapping[str, Any], labels) -> dict:
    """``params`` whose one-output (regression) head starts at the mean training label.

    Pearson ignores the offset, but the squared error does not: a head starting at 0 against STS-B's mean score
    of ~2.7 spends its first steps (at head rates of 1e-3-1e-2 per Adam step) moving the output up uniformly,
    learning nothing about the inputs. Classification heads are returned unchanged.
    """
    head = params[HEAD]
    if head["bias"].shape != (1,):
        return dict(params)
    mean = jnp.mean(jnp.asarray(labels, jnp.float32))
    return {**params, HEAD: {**head, "bias": jnp.full((1,), mean, head["bias"].dtype)}}


def load_classifier(
    model_dir: str | pathlib.Path | None = None,
    *,
    num_labels: int,
    pooling: Pooling = "mean",
    num_layers: int | None = None,
    seed: int = 0,
    backbone: Backbone = "nnx",
    remat: bool = False,
) -> tuple[SequenceClassifier, dict[str, Any]]:
    """A :class:`SequenceClassifier` over a local Hugging Face BERT/RoBERTa checkpoint, and its params.

    Args:
      model_dir: a folder with ``config.json`` and Flax (``flax_model.msgpack``) or safetensors weights; None is
        the offline all-MiniLM-L6-v2 (:func:`fourier_flax.models.hf.minilm_path`).
      num_labels: head outputs (1 for STS-B).
      pooling: ``"mean"`` (default; sentence-transformer backbones) or ``"cls"``.
      num_layers: keep only the first encoder layers (fast tests); None keeps them all.
      seed: draws the head.
      backbone: ``"nnx"`` (default: :mod:`fourier_flax.models.bert`, BERT from ``model.safetensors``, no
        transformers model classes; outputs equal ``"hf-flax"``'s to float32 rounding) or ``"hf-flax"``
        (transformers' ``FlaxAutoModel``: BERT or RoBERTa, msgpack or safetensors; needs transformers < 5).
      remat: recompute each encoder layer's activations in the backward pass instead of keeping them
        (``nnx.remat``; Hugging Face's ``enable_gradient_checkpointing``): less memory, one more forward.

    Raises:
      FileNotFoundError: ``model_dir`` has no ``config.json`` (or, for ``"nnx"``, no ``model.safetensors``).
      ValueError: ``backbone="nnx"`` on a model that is not BERT (use ``"hf-flax"``).
    """
    path = pathlib.Path(model_dir) if model_dir is not None else pathlib.Path(minilm_path())
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"{path}: no config.json. --model takes a local Hugging Face BERT/RoBERTa folder (config.json plus "
            "flax_model.msgpack or model.safetensors)."
        )
    if backbone == "nnx":
        encoder = _nnx_encoder(path, num_layers, remat)
    elif backbone == "hf-flax":
        encoder = _hf_flax_encoder(path, num_layers)
        if remat:
            encoder.enable_gradient_checkpointing()
    else:
        raise ValueError(f"backbone must be 'nnx' or 'hf-flax', got {backbone!r}.")
    classifier = SequenceClassifier(encoder, num_labels, pooling)
    hidden = encoder.config.hidden_size
    head = {"kernel": jnp.zeros((hidden, num_labels), jnp.float32), "bias": jnp.zeros((num_labels,), jnp.float32)}
    return classifier, init_head({classifier.prefix: encoder.params, HEAD: head}, jax.random.key(seed))


def _nnx_encoder(path: pathlib.Path, num_layers: int | None, remat: bool) -> Any:
    try:
        return NnxEncoder(load_bert(path, num_layers=num_layers, remat=remat))
    except (FileNotFoundError, ValueError) as error:
        raise type(error)(f"{error}\n(--backbone hf-flax loads it with transformers' Flax classes.)") from error


def _hf_flax_encoder(path: pathlib.Path, num_layers: int | None) -> Any:
    import transformers

    kwargs = {} if num_layers is None else {"num_hidden_layers": num_layers}
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # dropped layers / unused pooler weights are intended
    try:
        encoder = transformers.FlaxAutoModel.from_pretrained(str(path), **kwargs)
    finally:
        transformers.logging.set_verbosity(verbosity)
    encoder.config._name_or_path = str(path)  # Flax keeps the file's own, possibly a stale hub id
    return encoder
