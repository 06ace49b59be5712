"""Loading a Llama-family checkpoint into :class:`~fourier_flax.models.llama.model.LlamaForCausalLM`.

Both loaders first name every tensor by its Hugging Face key (``model.layers.3.self_attn.q_proj.weight``, PyTorch
layout ``(out, in)``), then fill the model by one rule per module kind (:func:`fill_model`): ``nnx.Linear`` takes
``weight.T`` as its kernel (and ``bias``), ``nnx.Embed`` the table, RMSNorm the weight. :func:`from_gguf` reads a
llama.cpp file with the ``gguf`` package (its tensor names mapped by :data:`GGUF_NAMES`, q/k rows restored from
llama.cpp's rotary permutation as transformers' GGUF loader does), either dequantized to float or keeping the 4-bit
blocks (:mod:`fourier_flax.models.quantized`); :func:`from_pretrained` reads a Hugging Face folder
(``config.json`` + ``*.safetensors``).

Example::

  model = from_gguf(smollm2_path(), quantized=True)  # Q4_1 projections stay 4-bit in the model's state
  print(GGUF_NAMES)  # the name table
"""

from __future__ import annotations

import dataclasses
import functools
import json
import pathlib
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np
from flax import nnx

from fourier_flax.models.llama.model import LlamaConfig, LlamaForCausalLM, RMSNorm
from fourier_flax.models.quantized import FORMATS, QuantizedArray, QuantizedEmbed, QuantizedLinear

# Hugging Face key (without ".weight"/".bias"; {i} = layer) → GGUF tensor name (llama.cpp's convert_hf_to_gguf).
GGUF_NAMES: dict[str, str] = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
    "model.layers.{i}.input_layernorm": "blk.{i}.attn_norm",
    "model.layers.{i}.post_attention_layernorm": "blk.{i}.ffn_norm",
    "model.layers.{i}.self_attn.q_proj": "blk.{i}.attn_q",
    "model.layers.{i}.self_attn.k_proj": "blk.{i}.attn_k",
    "model.layers.{i}.self_attn.v_proj": "blk.{i}.attn_v",
    "model.layers.{i}.self_attn.o_proj": "blk.{i}.attn_output",
    "model.layers.{i}.mlp.gate_proj": "blk.{i}.ffn_gate",
    "model.layers.{i}.mlp.up_proj": "blk.{i}.ffn_up",
    "model.layers.{i}.mlp.down_proj": "blk.{i}.ffn_down",
}
# GGUF architectures read here, and whether llama.cpp permuted their q/k rows for its rotary layout.
GGUF_ARCHITECTURES = {"llama": True, "qwen2": False}
HF_MODEL_TYPES = ("llama", "qwen2", "mistral")

Tensor = np.ndarray | QuantizedArray


class CheckpointError(ValueError):
    """A checkpoint that cannot be loaded: corrupt, of an unsupported architecture or tensor type, or incomplete."""


def _module_at(model: nnx.Module, path: str) -> tuple[nnx.Module, str, Any]:
    *parents, last = path.split(".")
    node = model
    for part in parents:
        node = node[int(part)] if isinstance(node, nnx.List) else getattr(node, part)
    child = node[int(last)] if isinstance(node, nnx.List) else getattr(node, last)
    return node, last, child


def _set(variable: nnx.Variable, value: np.ndarray, key: str, dtype) -> None:
    if tuple(np.shape(value)) != tuple(variable.shape):
        raise CheckpointError(f"{key}: shape {np.shape(value)}, the model expects {tuple(variable.shape)}.")
    variable.value = jnp.asarray(value, dtype)


def fill_model(model: LlamaForCausalLM, tensors: Mapping[str, Tensor], *, dtype=jnp.float32) -> LlamaForCausalLM:
    """Puts ``tensors`` (Hugging Face keys, PyTorch layouts; :class:`QuantizedArray` for kept blocks) into
    ``model`` (built abstractly by ``nnx.eval_shape``), in place; returns it.

    Raises:
      CheckpointError: a tensor the model needs is missing, or has the wrong shape.
    """
    paths = sorted({key.rsplit(".", 1)[0] for key in tensors})
    for path in paths:
        parent, name, module = _module_at(model, path)
        weight = tensors.get(f"{path}.weight")
        bias = tensors.get(f"{path}.bias")
        if isinstance(weight, QuantizedArray):
            if isinstance(module, nnx.Embed):
                replacement = QuantizedEmbed(weight, dtype=dtype)
            else:
                replacement = QuantizedLinear(weight, None if bias is None else np.asarray(bias), dtype=dtype)
            setattr(parent, name, replacement)
        elif isinstance(module, nnx.Linear):
            _set(module.kernel, np.asarray(weight).T, f"{path}.weight", dtype)
            if bias is not None:
                _set(module.bias, bias, f"{path}.bias", dtype)
        elif isinstance(module, nnx.Embed):
            _set(module.embedding, weight, f"{path}.weight", dtype)
        elif isinstance(module, RMSNorm):
            _set(module.weight, weight, f"{path}.weight", dtype)
    missing = [
        ".".join(str(part) for part in key)
        for key, variable in nnx.to_flat_state(nnx.state(model))
        if not hasattr(variable.value, "addressable_data") and not isinstance(variable.value, np.ndarray)
    ]
    if missing:
        raise CheckpointError(f"the checkpoint has no tensors for {missing[:6]} ({len(missing)} in all).")
    return model


def _abstract_model(config: LlamaConfig, dtype, remat: bool) -> LlamaForCausalLM:
    return nnx.eval_shape(lambda: LlamaForCausalLM(config, dtype=dtype, remat=remat))


def _gguf_config(reader, arch: str) -> LlamaConfig:
    def field(name: str, default: Any = None) -> Any:
        entry = reader.fields.get(f"{arch}.{name}") or reader.fields.get(name)
        return default if entry is None else entry.contents()

    scaling = field("rope.scaling.type")
    if scaling not in (None, "none"):
        raise CheckpointError(f"rope scaling {scaling!r} is not supported (plain RoPE only).")
    names = {tensor.name for tensor in reader.tensors}
    heads = int(field("attention.head_count"))
    hidden = int(field("embedding_length"))
    vocab = field("vocab_size") or len(reader.fields["tokenizer.ggml.tokens"].data)
    return LlamaConfig(
        vocab_size=int(vocab),
        hidden_size=hidden,
        intermediate_size=int(field("feed_forward_length")),
        num_hidden_layers=int(field("block_count")),
        num_attention_heads=heads,
        num_key_value_heads=int(field("attention.head_count_kv", heads)),
        head_dim=int(field("rope.dimension_count", hidden // heads)),
        rms_norm_eps=float(field("attention.layer_norm_rms_epsilon")),
        rope_theta=float(field("rope.freq_base", 10000.0)),
        tie_word_embeddings="output.weight" not in names,
        attention_bias="blk.0.attn_q.bias" in names,
        max_position_embeddings=int(field("context_length", 2048)),
        bos_token_id=field("tokenizer.ggml.bos_token_id"),
        eos_token_id=field("tokenizer.ggml.eos_token_id"),
    )


def _hf_key(gguf_name: str) -> str | None:
    """The Hugging Face key of a GGUF tensor name (``blk.3.attn_q.weight`` → ``model.layers.3...q_proj.weight``)."""
    stem, _, kind = gguf_name.rpartition(".")
    parts = stem.split(".")
    index = parts[1] if parts[0] == "blk" and len(parts) > 2 else None
    pattern = ".".join(["blk", "{i}", *parts[2:]]) if index is not None else stem
    for hf, gguf in GGUF_NAMES.items():
        if gguf == pattern:
            return f"{hf.replace('{i}', index or '')}.{kind}"
    return None


def _rotary_row_order(rows: int, heads: int) -> np.ndarray:
    """The row order that undoes llama.cpp's q/k permutation (as transformers' ``_reverse_permute_weights``)."""
    half = rows // heads // 2
    return np.arange(rows).reshape(heads, half, 2).swapaxes(1, 2).reshape(rows)


@functools.lru_cache(maxsize=2)
def _parsed_gguf(path: str, identity: tuple[int, int, int]) -> Any:
    """A ``gguf.GGUFReader`` of ``path``, parsed once per file version (``identity``: inode, size, mtime in ns).

    Parsing the metadata (49,152 vocabulary strings for SmolLM2) takes seconds; the reader maps the tensors
    read-only, so sharing one between loads cannot leak a change from one model into another.
    """
    import gguf

    return gguf.GGUFReader(path)


def read_gguf(
    path: str | pathlib.Path, *, quantized: bool = False, num_hidden_layers: int | None = None
) -> tuple[LlamaConfig, dict[str, Tensor]]:
    """The config and the tensors of a llama.cpp GGUF file, by Hugging Face key.

    Args:
      path: the ``.gguf`` file.
      quantized: keep Q4_0/Q4_1/Q8_0/Q4_K/Q6_K tensors as :class:`QuantizedArray` blocks; otherwise (and for every
        other type) dequantize to float32 with the ``gguf`` package.
      num_hidden_layers: keep only the first this many decoder layers (as transformers'
        ``from_pretrained(..., num_hidden_layers=k)``): a real, smaller model for tests.

    The file's metadata is parsed once per process and file version (a rewritten file is parsed again).

    Raises:
      FileNotFoundError: no such file.
      CheckpointError: not a readable GGUF, an architecture other than Llama/Qwen2, an unknown tensor, or (with
        ``quantized=True``) a quantized type that is not kept in-graph.
    """
    import gguf

    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such GGUF file.")
    stat = path.stat()
    try:
        reader = _parsed_gguf(str(path.resolve()), (stat.st_ino, stat.st_size, stat.st_mtime_ns))
    except Exception as error:  # the reader raises ValueError, struct.error, IndexError... on a damaged file
        raise CheckpointError(f"{path} is not a readable GGUF file ({type(error).__name__}: {error}).") from error
    arch_field = reader.fields.get("general.architecture")
    arch = arch_field.contents() if arch_field is not None else None
    if arch not in GGUF_ARCHITECTURES:
        raise CheckpointError(
            f"{path}: architecture {arch!r} is not supported; fourier_flax reads {sorted(GGUF_ARCHITECTURES)}."
        )
    config = _gguf_config(reader, arch)
    if num_hidden_layers is not None:
        if not 1 <= num_hidden_layers <= config.num_hidden_layers:
            raise ValueError(f"num_hidden_layers must be in 1..{config.num_hidden_layers}, got {num_hidden_layers}.")
        config = dataclasses.replace(config, num_hidden_layers=num_hidden_layers)
    tensors: dict[str, Tensor] = {}
    for tensor in reader.tensors:
        key = _hf_key(tensor.name)
        if key is None:
            raise CheckpointError(f"{path}: tensor {tensor.name!r} has no place in a Llama model.")
        if key.startswith("model.layers.") and int(key.split(".")[2]) >= config.num_hidden_layers:
            continue
        kind = tensor.tensor_type.name
        shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))  # GGUF lists ne0 (the row length) first
        if quantized and kind in FORMATS and len(shape) == 2:
            value: Tensor = QuantizedArray.from_gguf_blocks(kind, np.asarray(tensor.data), shape)
        elif quantized and kind not in ("F32", "F16", "BF16"):
            raise CheckpointError(
                f"{path}: tensor {tensor.name!r} is {kind}; quantized=True keeps {list(FORMATS)} blocks in-graph. "
                "Load it with quantized=False (dequantized to float by the gguf package)."
            )
        else:
            value = np.asarray(gguf.quants.dequantize(tensor.data, tensor.tensor_type), np.float32).reshape(shape)
        heads = {"self_attn.q_proj": config.num_attention_heads, "self_attn.k_proj": config.num_key_value_heads}
        for name, count in heads.items():
            if GGUF_ARCHITECTURES[arch] and key.endswith(f"{name}.weight"):
                order = _rotary_row_order(shape[0], count)
                value = value.take_rows(order) if isinstance(value, QuantizedArray) else value[order]
        tensors[key] = value
    return config, tensors


def from_gguf(
    path: str | pathlib.Path,
    *,
    quantized: bool = False,
    dtype=jnp.float32,
    remat: bool = False,
    num_hidden_layers: int | None = None,
) -> LlamaForCausalLM:
    """A :class:`LlamaForCausalLM` from a llama.cpp GGUF file (see :func:`read_gguf`, which also takes
    ``num_hidden_layers``).

    With ``quantized=True`` the Q4_0/Q4_1/Q8_0/Q4_K/Q6_K projections and embedding stay as integer blocks plus scales
    (:class:`~fourier_flax.models.quantized.QuantizedLinear`), dequantized inside each jitted call; adapters
    train on them in float32. ``dtype`` is the float layers' (and norms') dtype.
    """
    config, tensors = read_gguf(path, quantized=quantized, num_hidden_layers=num_hidden_layers)
    return fill_model(_abstract_model(config, dtype, remat), tensors, dtype=dtype)


def from_pretrained(folder: str | pathlib.Path, *, dtype=jnp.float32, remat: bool = False) -> LlamaForCausalLM:
    """A :class:`LlamaForCausalLM` from a Hugging Face folder: ``config.json`` and one or more ``*.safetensors``.

    Raises:
      FileNotFoundError: no ``config.json`` or no ``*.safetensors``.
      CheckpointError: a ``model_type`` other than Llama/Qwen2/Mistral, or missing or misshapen tensors.
    """
    from safetensors.numpy import load_file

    folder = pathlib.Path(folder)
    config_file = folder / "config.json"
    files = sorted(folder.glob("*.safetensors"))
    if not config_file.is_file() or not files:
        raise FileNotFoundError(f"{folder}: a Hugging Face checkpoint folder needs config.json and *.safetensors.")
    fields = json.loads(config_file.read_text())
    if fields.get("model_type") not in HF_MODEL_TYPES:
        raise CheckpointError(
            f"{folder}: model_type {fields.get('model_type')!r} is not supported; fourier_flax reads {HF_MODEL_TYPES}."
        )
    config = LlamaConfig.from_hf(fields)
    tensors = {}
    for file in files:
        tensors.update({key: np.asarray(value, np.float32) for key, value in load_file(file).items()})
    if config.tie_word_embeddings:
        tensors.pop("lm_head.weight", None)
    unknown = [key for key in tensors if key.startswith(("model.", "lm_head.")) is False]
    if unknown:
        raise CheckpointError(f"{folder}: tensors {unknown[:4]} have no place in a Llama model.")
    return fill_model(_abstract_model(config, dtype, remat), tensors, dtype=dtype)
