"""An NNX encoder behind the functional face of a Hugging Face Flax model, so the GLUE pipeline runs on it.

:class:`SequenceClassifier` and the training loop call ``encoder(input_ids, mask, token_type_ids, params=...,
dropout_rng=..., train=...)`` on a params tree and adapt it with :func:`fourier_flax.init_adapter` and
:func:`fourier_flax.intercept`. :class:`NnxEncoder` gives an NNX model (:class:`fourier_flax.models.bert.BertModel`)
that face: its ``params`` is the model's state as a plain dict keyed like Hugging Face's (``encoder.layer.0...``,
string layer indices), and each call merges the params into the model, installs the adapter leaves of every
enclosing :func:`fourier_flax.intercept` (:func:`fourier_flax.nnx.install_leaves`, with the context's possibly
traced scaling) and runs it. The result equals the linen path's for the same params (same paths, same spectra).

Example::

  encoder = NnxEncoder(load_bert(minilm_path()))
  with intercept(config):
    hidden = encoder(ids, mask, None, params=init_adapter(encoder.params, config, key)).last_hidden_state
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
from flax import nnx, traverse_util

from fourier_flax.interceptor import active_adapters
from fourier_flax.methods import method_of
from fourier_flax.nnx import install_leaves


@dataclasses.dataclass(frozen=True)
class EncoderOutput:
    last_hidden_state: jax.Array
    pooler_output: jax.Array


def _key_path(path: tuple) -> tuple[str, ...]:
    """An NNX state path with Hugging Face's string layer indices."""
    return tuple(str(part) for part in path)


class NnxEncoder:
    """A Hugging Face-style functional face for an NNX BERT (see the module docstring).

    Attributes:
      params: the pretrained state as a nested dict with string keys.
      config: the model's :class:`fourier_flax.models.bert.BertConfig`.
      base_model_prefix: ``"bert"`` (the classifier's params key, as Hugging Face's).
    """

    base_model_prefix = "bert"

    def __init__(self, model: nnx.Module):
        self.config = model.config
        self.graphdef, state = nnx.split(model)
        flat = nnx.to_flat_state(state)
        self.params = traverse_util.unflatten_dict({_key_path(path): variable[...] for path, variable in flat})
        self._state = state

    def model(self, params: Mapping[str, Any]) -> nnx.Module:
        """The NNX model holding ``params`` (pretrained leaves; adapter leaves are ignored here)."""
        flat = traverse_util.flatten_dict(params)
        state = jax.tree.map(lambda leaf: leaf, self._state)  # fresh Variables
        for path, variable in nnx.to_flat_state(state):
            variable.value = flat[_key_path(path)]
        return nnx.merge(self.graphdef, state)

    def __call__(self, input_ids, attention_mask=None, token_type_ids=None, *, params, dropout_rng=None, train=False):
        model = self.model(params)
        leaves = {path[-1] for path in traverse_util.flatten_dict(params)}
        for config, alpha in active_adapters():
            if leaves & set(method_of(config).leaves_for(config)):
                install_leaves(model, config, params, scaling=alpha)
        hidden, pooled = model(input_ids, attention_mask, token_type_ids, dropout_rng=dropout_rng if train else None)
        return EncoderOutput(hidden, pooled)
