"""The tokenizer of a Llama-family checkpoint, with its chat template, from a GGUF file or a Hugging Face folder.

Building it from a GGUF file takes transformers ~15 s (it reads the whole vocabulary and merges from the file's
metadata); the result is saved under ``tokenizers/<sha256 of the file>`` in
:func:`fourier_flax.cache_dir.cache_root` and later loads read that folder (~0.2 s). The folder is written
atomically and keyed by the file's content, so an edited or other file never reads a stale tokenizer.

Example::

  tokenizer = load_tokenizer(smollm2_path())
  tokenizer.apply_chat_template([{"role": "user", "content": "Hi"}], add_generation_prompt=True)
"""

from __future__ import annotations

import hashlib
import pathlib
import warnings

from fourier_flax.atomic_dir import atomic_directory
from fourier_flax.cache_dir import cache_root


def load_tokenizer(path: str | pathlib.Path, *, cache_dir: str | pathlib.Path | None = None):
    """A transformers tokenizer with the chat template, from a GGUF file or a Hugging Face folder.

    From a GGUF file the special tokens follow the file (``tokenizer.ggml.{bos,eos,padding}_token_id``; for SmolLM2
    EOS is ``<|im_end|>``, where the chat template ends a turn) and no BOS is prepended: the chat template starts
    every turn with its own ``<|im_start|>``. (transformers' GGUF tokenizer otherwise reports ``<|im_start|>`` as
    both BOS and EOS and prepends it to every encoding.)

    Args:
      path: a ``.gguf`` file or a Hugging Face folder.
      cache_dir: where GGUF tokenizers are kept (default ``cache_root() / "tokenizers"``).
    """
    import transformers

    path = pathlib.Path(path)
    if path.suffix != ".gguf":
        return transformers.AutoTokenizer.from_pretrained(str(path))
    folder = pathlib.Path(cache_dir or cache_root() / "tokenizers") / _file_digest(path)
    if (folder / "tokenizer_config.json").is_file():
        return transformers.AutoTokenizer.from_pretrained(str(folder))
    tokenizer = gguf_tokenizer(path)
    try:
        with atomic_directory(folder) as staging:
            tokenizer.save_pretrained(str(staging))
    except OSError as error:  # a read-only cache costs time, never correctness
        warnings.warn(
            f"could not cache the tokenizer in {folder} ({error}); it is rebuilt on every load.", stacklevel=2
        )
    return tokenizer


def gguf_tokenizer(path: pathlib.Path):
    """The tokenizer built from the GGUF file itself (no cache): see :func:`load_tokenizer`."""
    import gguf
    import transformers

    tokenizer = transformers.AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    reader = gguf.GGUFReader(str(path))
    tokens = reader.fields["tokenizer.ggml.tokens"]
    for role in ("bos", "eos", "padding"):
        entry = reader.fields.get(f"tokenizer.ggml.{role}_token_id")
        if entry is not None:
            token = tokens.contents(int(entry.contents()))
            setattr(tokenizer, "pad_token" if role == "padding" else f"{role}_token", token)
    tokenizer.add_bos_token = False
    return tokenizer


def _file_digest(path: pathlib.Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()[:32]
