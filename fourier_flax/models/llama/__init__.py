"""Llama-family decoders (Llama, SmolLM, Qwen2-style) in flax.nnx, with Hugging Face's attribute paths.

* :mod:`~fourier_flax.models.llama.model` — :class:`LlamaConfig`, :class:`LlamaForCausalLM`, :func:`init_cache`;
* :mod:`~fourier_flax.models.llama.loading` — :func:`from_gguf` (llama.cpp files, float or 4-bit),
  :func:`from_pretrained` (a Hugging Face folder);
* :mod:`~fourier_flax.models.llama.tokenizer` — :func:`load_tokenizer` (cached when built from a GGUF file).

Example::

  from fourier_flax.models import llama, smollm2_path
  model = llama.from_gguf(smollm2_path())
  tokenizer = llama.load_tokenizer(smollm2_path())
"""

from fourier_flax.models.llama.loading import (
    GGUF_NAMES,
    CheckpointError,
    fill_model,
    from_gguf,
    from_pretrained,
    read_gguf,
)
from fourier_flax.models.llama.model import LlamaConfig, LlamaForCausalLM, init_cache, positions_from_mask
from fourier_flax.models.llama.tokenizer import load_tokenizer

__all__ = [
    "GGUF_NAMES",
    "CheckpointError",
    "LlamaConfig",
    "LlamaForCausalLM",
    "fill_model",
    "from_gguf",
    "from_pretrained",
    "init_cache",
    "load_tokenizer",
    "positions_from_mask",
    "read_gguf",
]
