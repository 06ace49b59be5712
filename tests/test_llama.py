"""The NNX Llama decoder on the real SmolLM2-135M-Instruct: logits and generation against transformers' PyTorch
model built by transformers' own GGUF loader (the reference), the 4-bit base, the tokenizer, loaders and errors.

The default suite runs the first two real layers (``num_hidden_layers=2`` on both sides, as transformers'
``from_pretrained`` allows); ``-m slow`` runs all 30. Tolerance on logits: 5e-4 · max|logit| (float32 on both
sides, different summation orders), and every argmax equal.
"""

from __future__ import annotations

import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import smollm2

import fourier_flax as ff
from fourier_flax.models import llama
from fourier_flax.models.quantized import QuantizedArray, QuantizedLinear, state_bytes

gguf = pytest.importorskip("gguf")

PROMPTS = ["What is the capital of France?", "Write a haiku about the sea.", "List three prime numbers."]


@pytest.fixture(scope="module")
def path() -> pathlib.Path:
    return smollm2.gguf_path()


@pytest.fixture(scope="module")
def tokenizer():
    return smollm2.tokenizer()


@pytest.fixture(scope="module")
def batch(tokenizer):
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in PROMPTS
    ]
    return tokenizer(texts, add_special_tokens=False, padding=True, padding_side="left", return_tensors="np")


def check_logits(path, batch, layers):
    torch, ref = smollm2.reference(layers)
    model = llama.from_gguf(path, num_hidden_layers=layers)
    ours = np.asarray(model(jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"])))
    with torch.no_grad():
        theirs = ref(
            torch.tensor(batch["input_ids"]), attention_mask=torch.tensor(batch["attention_mask"])
        ).logits.numpy()
    real = batch["attention_mask"].astype(bool)  # left pads are not compared (nothing attends from them)
    assert ours.dtype == np.float32 and ours.shape == theirs.shape
    np.testing.assert_allclose(ours[real], theirs[real], rtol=0, atol=5e-4 * np.abs(theirs[real]).max())
    np.testing.assert_array_equal(ours[real].argmax(-1), theirs[real].argmax(-1))


@pytest.mark.torch
def test_logits_equal_transformers_on_two_real_layers(path, batch):
    check_logits(path, batch, 2)


@pytest.mark.slow
@pytest.mark.torch
def test_logits_equal_transformers_on_all_30_layers(path, batch):
    check_logits(path, batch, 30)


def check_generation(path, batch, layers, **settings):
    torch, ref = smollm2.reference(layers)
    model = llama.from_gguf(path, num_hidden_layers=layers)
    ours = np.asarray(
        ff.generate(model, batch["input_ids"], attention_mask=batch["attention_mask"], eos_token_id=2, **settings)
    )
    with torch.no_grad():
        out = ref.generate(
            torch.tensor(batch["input_ids"]),
            attention_mask=torch.tensor(batch["attention_mask"]),
            do_sample=False,
            eos_token_id=2,
            pad_token_id=2,
            **settings,
        )
    theirs = out[:, batch["input_ids"].shape[1] :].numpy()
    np.testing.assert_array_equal(ours[:, : theirs.shape[1]], theirs)
    assert (ours[:, theirs.shape[1] :] == 2).all()  # transformers stops early; we pad to max_new_tokens
    return ours


@pytest.mark.torch
def test_greedy_equals_transformers_token_for_token(path, batch):
    check_generation(path, batch, 2, max_new_tokens=12)


@pytest.mark.torch
def test_beam_search_equals_transformers_with_length_penalty_and_no_repeat(path, batch):
    check_generation(path, batch, 2, max_new_tokens=12, num_beams=4, length_penalty=0.9, no_repeat_ngram_size=4)


@pytest.mark.slow
@pytest.mark.torch
def test_full_model_answers_and_stops_like_transformers(path, batch, tokenizer):
    ours = check_generation(path, batch, 30, max_new_tokens=24)
    assert "Paris" in tokenizer.decode(ours[0])
    assert (ours[0] == 2).any()  # it stopped at <|im_end|>
    check_generation(path, batch, 30, max_new_tokens=16, num_beams=5, length_penalty=0.9, no_repeat_ngram_size=4)


def test_gguf_names_map_to_hugging_face_keys(path):
    config, tensors = llama.read_gguf(path, num_hidden_layers=1)
    assert config.num_hidden_layers == 1 and config.hidden_size == 576 and config.num_key_value_heads == 3
    assert config.tie_word_embeddings and config.rope_theta == 100000.0 and config.eos_token_id == 2
    expected = {f"model.layers.0.self_attn.{n}_proj.weight" for n in "qkvo"} | {
        f"model.layers.0.mlp.{n}_proj.weight" for n in ("gate", "up", "down")
    }
    expected |= {"model.embed_tokens.weight", "model.norm.weight"}
    expected |= {f"model.layers.0.{n}.weight" for n in ("input_layernorm", "post_attention_layernorm")}
    assert set(tensors) == expected
    assert tensors["model.layers.0.self_attn.k_proj.weight"].shape == (192, 576)  # (out, in) as PyTorch


def test_q_and_k_rows_are_restored_from_llama_cpp_rotary_order(path):
    """Against the gguf package's own dequantization: rows of q (9 heads) and k (3 heads) are un-interleaved per
    head — the half-dimension pairs (2i, 2i + 1) go back to (i, i + 32) — and v is untouched."""
    reader = gguf.GGUFReader(str(path))
    raw = {t.name: t for t in reader.tensors if t.name.startswith("blk.0.attn_")}
    _, tensors = llama.read_gguf(path, num_hidden_layers=1)
    for name, heads in (("q", 9), ("k", 3), ("v", None)):
        stored = gguf.quants.dequantize(
            raw[f"blk.0.attn_{name}.weight"].data, raw[f"blk.0.attn_{name}.weight"].tensor_type
        )
        ours = tensors[f"model.layers.0.self_attn.{name}_proj.weight"]
        if heads is None:
            np.testing.assert_array_equal(ours, stored)
            continue
        per_head = ours.reshape(heads, 64, 576)
        gguf_per_head = stored.reshape(heads, 64, 576)
        np.testing.assert_array_equal(per_head[:, :32], gguf_per_head[:, 0::2])
        np.testing.assert_array_equal(per_head[:, 32:], gguf_per_head[:, 1::2])


def test_quantized_blocks_dequantize_exactly_as_the_gguf_package(path):
    reader = gguf.GGUFReader(str(path))
    kinds = set()
    for tensor in reader.tensors[:12]:
        kind = tensor.tensor_type.name
        if kind not in ("Q4_1", "Q8_0"):
            continue
        kinds.add(kind)
        shape = tuple(int(n) for n in reversed(tensor.shape.tolist()))
        array = QuantizedArray.from_gguf_blocks(kind, np.asarray(tensor.data), shape)
        np.testing.assert_array_equal(
            np.asarray(jax.jit(lambda a: a.dequantize())(array)),
            gguf.quants.dequantize(tensor.data, tensor.tensor_type),
        )
    assert kinds == {"Q4_1", "Q8_0"}


@pytest.mark.parametrize("kind", ["Q4_0", "Q4_1", "Q8_0"])
def test_every_kept_format_round_trips_through_the_gguf_quantizer(kind):
    """Blocks made by the gguf package's own quantizer dequantize here as the package dequantizes them."""
    weights = np.random.default_rng(0).standard_normal((6, 96)).astype(np.float32)
    qtype = gguf.GGMLQuantizationType[kind]
    blocks = gguf.quants.quantize(weights, qtype)
    array = QuantizedArray.from_gguf_blocks(kind, blocks, weights.shape)
    np.testing.assert_array_equal(np.asarray(array.dequantize()), gguf.quants.dequantize(blocks, qtype))
    assert np.abs(np.asarray(array.dequantize()) - weights).max() < 0.5  # and it is the weight, roughly


@pytest.mark.parametrize("kind", ["Q4_K", "Q6_K"])
def test_k_quant_blocks_dequantize_exactly_as_the_gguf_package(kind):
    """Random super-blocks (any bytes are valid codes; the float16 scales set to finite values) dequantize here as
    the gguf package's NumPy code does — every bit field (6-bit scales and mins, split 6-bit codes) exercised."""
    from fourier_flax.models.quantized import LAYOUTS

    size, layout = LAYOUTS[kind]
    rows, blocks = 3, 2
    nbytes = max(stop for _, stop, _ in layout.values())
    raw = np.random.default_rng(0).integers(0, 256, (rows, blocks, nbytes), dtype=np.uint8)
    for first, stop, dtype in layout.values():
        if dtype == "<f2":
            scale = np.random.default_rng(1).uniform(0.01, 0.1, (rows, blocks)).astype(np.float16)
            raw[..., first:stop] = scale[..., None].view(np.uint8).reshape(rows, blocks, 2)
    qtype = gguf.GGMLQuantizationType[kind]
    want = gguf.quants.dequantize(raw.reshape(rows, -1), qtype)
    array = QuantizedArray.from_gguf_blocks(kind, raw.reshape(rows, -1), (rows, blocks * size))
    np.testing.assert_array_equal(np.asarray(jax.jit(lambda a: a.dequantize())(array)), want)
    np.testing.assert_array_equal(np.asarray(array.dequantize(jnp.asarray([2, 0]))), want[[2, 0]])


def test_four_bit_base_equals_the_dequantized_model_in_a_quarter_of_the_bytes(path, batch):
    float_model = llama.from_gguf(path, num_hidden_layers=2)
    four_bit = llama.from_gguf(path, num_hidden_layers=2, quantized=True)
    assert isinstance(four_bit.model.layers[0].self_attn.q_proj, QuantizedLinear)
    ids, mask = jnp.asarray(batch["input_ids"]), jnp.asarray(batch["attention_mask"])
    np.testing.assert_allclose(four_bit(ids, mask), float_model(ids, mask), rtol=0, atol=1e-4)
    assert state_bytes(four_bit) <= 0.3 * state_bytes(float_model)


@pytest.mark.parametrize("method", ["lora", "fourierft", "fourierft-spectral"])
def test_adapted_four_bit_layer_with_bias_equals_a_float64_reference(method):
    """An adapted 4-bit layer with a bias (LoRA and FourierFT: the dense path on the dequantized kernel;
    FourierFT with the spectral backward: its own matmul, then the bias) computes ``x @ (W_q.T + ΔW) + b``, with
    ``W_q`` from the gguf package's dequantizer and ``ΔW`` in float64 NumPy from the adapter's leaves (FourierFT's
    entries by PEFT's torch.randperm rule; bound 1e-4)."""
    from flax import nnx

    from fourier_flax import nnx as ffnnx

    rng = np.random.default_rng(1)
    weight = rng.standard_normal((6, 64)).astype(np.float32)  # (out, in)
    blocks = gguf.quants.quantize(weight, gguf.GGMLQuantizationType.Q8_0)
    bias = rng.standard_normal(6).astype(np.float32)

    class Model(nnx.Module):
        def __init__(self):
            self.proj = QuantizedLinear(QuantizedArray.from_gguf_blocks("Q8_0", blocks, weight.shape), bias)

        def __call__(self, x):
            return self.proj(x)

    model = Model()
    if method == "lora":
        config = ff.LoraConfig(target_modules=["proj"], r=2, lora_alpha=4.0)
    else:
        backward = "spectral" if method == "fourierft-spectral" else "dense"
        config = ff.FourierFTConfig(target_modules=["proj"], n_frequency=20, scaling=3.0, backward=backward)
    ffnnx.apply_adapter(model, config, jax.random.key(0))
    leaves = model.proj.adapter
    if method == "lora":
        leaves["lora_b"].value = jnp.asarray(rng.standard_normal((2, 6)), jnp.float32)  # B starts at zero
        a, b = (np.asarray(leaves[name][...], np.float64) for name in ("lora_a", "lora_b"))
        delta = a @ b * 4.0 / 2
    else:
        torch = pytest.importorskip("torch")  # PEFT's entry rule, on the (out, in) weight
        flat = torch.randperm(6 * 64, generator=torch.Generator().manual_seed(config.random_loc_seed))[:20].numpy()
        (coefficients,) = leaves.values()
        spectrum = np.zeros((6, 64), np.complex128)
        spectrum[flat // 64, flat % 64] = np.asarray(coefficients[...], np.float64)
        delta = np.fft.ifft2(spectrum).real.T * 3.0
    x = rng.standard_normal((3, 64)).astype(np.float32)
    dequantized = gguf.quants.dequantize(blocks, gguf.GGMLQuantizationType.Q8_0).astype(np.float64)
    expected = x.astype(np.float64) @ (dequantized.T + delta) + bias
    np.testing.assert_allclose(np.asarray(model(jnp.asarray(x))), expected, rtol=0, atol=1e-4)


def test_hidden_states_give_the_logits(path, batch):
    model = llama.from_gguf(path, num_hidden_layers=1)
    ids = jnp.asarray(batch["input_ids"][:1, -6:])
    hidden = model.hidden(ids)
    assert hidden.shape == (1, 6, 576)
    np.testing.assert_allclose(model.logits(hidden), model(ids), rtol=0, atol=1e-5)


def test_tokenizer_follows_the_file_special_tokens(tokenizer):
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.eos_token_id == 2
    assert tokenizer.bos_token_id == 1 and tokenizer.pad_token_id == 2
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=False
    )
    ids = tokenizer(text, add_special_tokens=True)["input_ids"]
    assert ids[0] == 1 and ids[1] != 1  # the template's own <|im_start|>, no second BOS prepended


def test_cached_tokenizer_encodes_as_the_one_built_from_the_file(path, tmp_path, monkeypatch):
    from fourier_flax.models.llama import tokenizer as module

    built = module.gguf_tokenizer(path)  # the slow build, once
    monkeypatch.setattr(module, "gguf_tokenizer", lambda _: built)
    assert module.load_tokenizer(path, cache_dir=tmp_path / "cache") is built  # built, then saved
    (folder,) = (tmp_path / "cache").iterdir()
    assert (folder / "tokenizer_config.json").is_file() and len(folder.name) == 32  # keyed by the file's sha256
    cached = module.load_tokenizer(path, cache_dir=tmp_path / "cache")
    assert cached is not built
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "name[Zizzi], £30 ünï 😀"}]
    for tok in (built, cached):
        assert (tok.bos_token, tok.eos_token, tok.pad_token, tok.add_bos_token) == ("<|im_start|>", "<|im_end|>",
                                                                                   "<|im_end|>", False)  # fmt: skip
    assert cached.apply_chat_template(chat, add_generation_prompt=True) == built.apply_chat_template(
        chat, add_generation_prompt=True
    )
    for text in ("hello world", "  two  spaces\nnewline", "<|im_start|>user"):
        assert cached(text)["input_ids"] == built(text)["input_ids"]
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    with pytest.warns(UserWarning, match="could not cache the tokenizer"):
        assert module.load_tokenizer(path, cache_dir=blocker / "cache") is built  # unwritable: still loads


def test_hugging_face_folder_loads_the_same_model(path, tmp_path, batch):
    """A config.json + safetensors folder (what users hold on TPU) gives the same logits as the GGUF."""
    from safetensors.numpy import save_file

    config, tensors = llama.read_gguf(path, num_hidden_layers=2)
    fields = {
        "model_type": "llama",
        "vocab_size": config.vocab_size,
        "hidden_size": config.hidden_size,
        "intermediate_size": config.intermediate_size,
        "num_hidden_layers": 2,
        "num_attention_heads": config.num_attention_heads,
        "num_key_value_heads": config.num_key_value_heads,
        "rms_norm_eps": config.rms_norm_eps,
        "rope_theta": config.rope_theta,
        "tie_word_embeddings": True,
        "eos_token_id": 2,
    }
    (tmp_path / "config.json").write_text(json.dumps(fields))
    names = sorted(tensors)
    save_file({k: tensors[k] for k in names[: len(names) // 2]}, tmp_path / "model-00001-of-00002.safetensors")
    save_file({k: tensors[k] for k in names[len(names) // 2 :]}, tmp_path / "model-00002-of-00002.safetensors")
    from_folder = llama.from_pretrained(tmp_path)
    ids = jnp.asarray(batch["input_ids"][:1])
    np.testing.assert_array_equal(from_folder(ids), llama.from_gguf(path, num_hidden_layers=2)(ids))


def test_loader_errors_name_the_problem(path, tmp_path):
    damaged = tmp_path / "damaged.gguf"
    damaged.write_bytes(path.read_bytes()[: 1 << 20])
    with pytest.raises(llama.CheckpointError, match="not a readable GGUF"):
        llama.read_gguf(damaged)
    with pytest.raises(FileNotFoundError):
        llama.from_gguf(tmp_path / "missing.gguf")
    (tmp_path / "bert").mkdir()
    (tmp_path / "bert" / "config.json").write_text(json.dumps({"model_type": "bert"}))
    (tmp_path / "bert" / "model.safetensors").write_bytes(b"")
    with pytest.raises(llama.CheckpointError, match="model_type 'bert' is not supported"):
        llama.from_pretrained(tmp_path / "bert")
    writer_path = tmp_path / "gpt2.gguf"
    writer = gguf.GGUFWriter(str(writer_path), "gpt2")
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    with pytest.raises(llama.CheckpointError, match="architecture 'gpt2' is not supported"):
        llama.read_gguf(writer_path)
    with pytest.raises(ValueError, match="Q5_0 are not supported in-graph"):
        QuantizedArray.from_gguf_blocks("Q5_0", np.zeros((1, 22), np.uint8), (1, 32))
    with pytest.raises(ValueError, match="corrupt or mislabelled"):
        QuantizedArray.from_gguf_blocks("Q4_K", np.zeros((1, 143), np.uint8), (1, 256))


def _tiny_gguf(path, architecture: str) -> None:
    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_tensor("token_embd.weight", np.zeros((4, 32), np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def test_a_gguf_file_is_parsed_once_per_version(path, tmp_path, monkeypatch):
    from fourier_flax.models.llama import loading

    parses = []
    real_reader = gguf.GGUFReader
    monkeypatch.setattr(gguf, "GGUFReader", lambda *args, **kw: parses.append(args[0]) or real_reader(*args, **kw))
    loading._parsed_gguf.cache_clear()
    _, first = llama.read_gguf(path, num_hidden_layers=1)
    _, second = llama.read_gguf(path, num_hidden_layers=1)
    assert len(parses) == 1
    # float tensors are views of the shared read-only map: no load can change another's
    assert not first["model.norm.weight"].flags.writeable
    np.testing.assert_array_equal(first["model.norm.weight"], second["model.norm.weight"])
    edited = tmp_path / "edited.gguf"
    _tiny_gguf(edited, "gpt2")
    for _ in range(2):
        with pytest.raises(llama.CheckpointError, match="architecture 'gpt2'"):
            llama.read_gguf(edited)
    assert len(parses) == 2
    _tiny_gguf(edited, "bloom")  # rewritten in place: the new contents are read
    with pytest.raises(llama.CheckpointError, match="architecture 'bloom'"):
        llama.read_gguf(edited)
    assert len(parses) == 3
