"""Model definitions and their loaders.

* :mod:`fourier_flax.models.bert` — an NNX BERT whose attribute paths are Hugging Face's, loaded from a
  ``config.json`` + ``model.safetensors`` folder;
* :mod:`fourier_flax.models.hf` — the real all-MiniLM-L6-v2 (:func:`minilm_path`, :func:`load_minilm`) and tiny
  random Hugging Face Flax models for tests.
"""

from fourier_flax.models.hf import minilm_path

__all__ = ["minilm_path"]
