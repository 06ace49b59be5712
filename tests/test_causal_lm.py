"""Causal-LM fine-tuning on the real SmolLM2 (first two layers): response-only loss, the chunked cross-entropy
against the full one, every adapter method training on the 4-bit base, traced rates without recompiling, and
PEFT loading our FourierFT and LoRA exports onto transformers' LlamaForCausalLM with our logits."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import smollm2
from flax import nnx

import fourier_flax as ff
from fourier_flax import nnx as ffnnx
from fourier_flax.finetune.causal_lm import (
    CausalLMTrainer,
    causal_lm_loss,
    chunked_cross_entropy,
    encode_batches,
    encode_chat,
    logits_bytes,
)
from fourier_flax.models import llama
from fourier_flax.models.quantized import QuantizedLinear

pytest.importorskip("gguf")
PAIRS = [
    ("name=The Eagle | food=Chinese", "The Eagle serves Chinese food."),
    ("name=Alimentum | area=city centre | priceRange=cheap", "Alimentum is a cheap place in the city centre."),
    ("name=Zizzi | eatType=pub", "Zizzi is a pub."),
    ("name=Cotto | customer rating=5 out of 5 | near=The Bakers", "Cotto, near The Bakers, is rated 5 out of 5."),
]


@pytest.fixture(scope="module")
def path():
    return smollm2.gguf_path()


@pytest.fixture(scope="module")
def tokenizer():
    return smollm2.tokenizer()


@pytest.fixture(scope="module")
def examples(tokenizer):
    return encode_chat(tokenizer, PAIRS)


def test_loss_mask_covers_the_response_and_its_end_token_only(tokenizer, examples):
    ids, mask = examples[0]
    response = tokenizer(PAIRS[0][1], add_special_tokens=False)["input_ids"]
    assert ids[mask].tolist() == [*response, 2]  # the response, then <|im_end|>
    prompt = tokenizer.decode(ids[~mask])
    assert prompt.startswith("<|im_start|>system") and prompt.endswith("<|im_start|>assistant\n")
    assert PAIRS[0][0] in prompt


def test_batches_are_bucketed_and_right_padded(examples):
    batches = list(encode_batches(examples, 3, shuffle=False))
    assert [b["input_ids"].shape[0] for b in batches] == [3, 3]
    for batch in batches:
        assert batch["input_ids"].shape[1] in (32, 64, 128)
        lengths = batch["attention_mask"].sum(1)
        for row, length in enumerate(lengths):
            assert batch["attention_mask"][row, :length].all() and not batch["attention_mask"][row, length:].any()
    rows = sorted(int(b["attention_mask"][r].sum()) for b in batches for r in range(3) if b["attention_mask"][r].any())
    assert rows == sorted(len(ids) for ids, _ in examples)


def test_bucket_multiple_pads_each_batch_to_the_next_multiple_of_its_longest_row(examples):
    lengths = sorted(len(ids) for ids, _ in examples)
    batches = list(encode_batches(examples, 1, shuffle=True, seed=3, bucket_multiple=8))
    widths = sorted(b["input_ids"].shape[1] for b in batches)
    assert widths == [-(-n // 8) * 8 for n in lengths]  # one row per batch: its own length rounded up to 8
    rows = sorted(int(b["attention_mask"].sum()) for b in batches)
    assert rows == lengths
    with pytest.raises(ValueError, match="bucket_multiple"):
        next(encode_batches(examples, 1, shuffle=False, bucket_multiple=0))


def test_chunked_cross_entropy_equals_the_full_one_with_gradients():
    rng = np.random.default_rng(0)
    hidden = jnp.asarray(rng.standard_normal((2, 7, 16)), jnp.float32)
    head = jnp.asarray(rng.standard_normal((16, 50)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 50, (2, 7)))
    weights = jnp.asarray(rng.integers(0, 2, (2, 7)), jnp.float32)

    def full(hidden, head):  # optax's cross-entropy on every logit at once
        losses = optax.softmax_cross_entropy_with_integer_labels(hidden @ head, targets)
        return jnp.sum(losses * weights) / jnp.sum(weights)

    def chunked(hidden, head):
        total, count = chunked_cross_entropy(lambda h: h @ head, hidden, targets, weights, chunk=4)
        return total / count

    np.testing.assert_allclose(chunked(hidden, head), full(hidden, head), rtol=1e-6)
    for got, want in zip(jax.grad(chunked, (0, 1))(hidden, head), jax.grad(full, (0, 1))(hidden, head), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert logits_bytes(8, 128, 49152) == 201_326_592  # what the chunks avoid holding at B × T = 8 × 128


def test_chunked_cross_entropy_runs_the_output_layer_only_on_chunks_with_loss_tokens():
    """5 weighted tokens scattered over 40 → 2 chunks of 4 run the output layer (not 10), forward and backward."""
    rng = np.random.default_rng(1)
    hidden = jnp.asarray(rng.standard_normal((40, 8)), jnp.float32)
    head = jnp.asarray(rng.standard_normal((8, 30)), jnp.float32)
    targets = jnp.asarray(rng.integers(0, 30, 40))
    weights = np.zeros(40, np.float32)
    weights[[3, 11, 12, 27, 39]] = [1.0, 1.0, 0.5, 1.0, 2.0]
    calls = []

    def logits_fn(h):
        jax.debug.callback(lambda: calls.append(1))
        return h @ head

    def mean_loss(hidden, head_unused):
        total, count = chunked_cross_entropy(logits_fn, hidden, targets, jnp.asarray(weights), chunk=4)
        return total / count

    loss = jax.jit(mean_loss)(hidden, head)
    jax.effects_barrier()
    assert len(calls) == 2
    logits = np.asarray(hidden, np.float64) @ np.asarray(head, np.float64)  # float64 reference
    nll = np.log(np.exp(logits).sum(-1)) - logits[np.arange(40), np.asarray(targets)]
    np.testing.assert_allclose(float(loss), (nll * weights).sum() / weights.sum(), rtol=1e-5)
    calls.clear()
    grad = jax.jit(jax.grad(mean_loss))(hidden, head)
    jax.effects_barrier()
    assert len(calls) <= 4  # each of the 2 chunks: its forward and its recomputation for the backward
    assert np.all(np.asarray(grad)[weights == 0] == 0) and np.all(np.abs(np.asarray(grad)[weights != 0]).sum(-1) > 0)


def test_response_loss_ignores_the_prompt(path, examples):
    """Changing prompt-only targets changes nothing; the loss equals a float64 recomputation from the logits."""
    model = llama.from_gguf(path, num_hidden_layers=2)
    batch = {k: jnp.asarray(v) for k, v in next(encode_batches(examples[:2], 2, shuffle=False)).items()}
    loss = float(causal_lm_loss(model, batch, chunk=32))
    logits = np.asarray(model(batch["input_ids"][:, :-1], batch["attention_mask"][:, :-1]), np.float64)
    logp = (
        logits
        - np.log(np.exp(logits - logits.max(-1, keepdims=True)).sum(-1, keepdims=True))
        - logits.max(-1, keepdims=True)
    )
    targets = np.asarray(batch["input_ids"][:, 1:])
    weights = np.asarray(batch["loss_mask"][:, 1:] * batch["attention_mask"][:, 1:], np.float64)
    nll = -np.take_along_axis(logp, targets[..., None], -1)[..., 0]
    np.testing.assert_allclose(loss, (nll * weights).sum() / weights.sum(), rtol=1e-5)


@pytest.mark.parametrize(
    "config",
    [
        ff.FourierFTConfig(target_modules=["q_proj", "v_proj"], n_frequency=200, scaling=150.0),
        ff.LoraConfig(target_modules=["q_proj", "v_proj"], r=4, lora_alpha=8.0),
        # The other methods run the same path (the contract tests cover them on small models): slow here.
        pytest.param(ff.DoraConfig(target_modules=["q_proj", "v_proj"], r=4, lora_alpha=8.0), marks=pytest.mark.slow),
        pytest.param(ff.VeraConfig(target_modules=["q_proj", "v_proj"], r=16), marks=pytest.mark.slow),
        pytest.param(ff.FloraConfig(target_modules=["q_proj", "v_proj"], r=4), marks=pytest.mark.slow),
        pytest.param(ff.SvftConfig(target_modules=["q_proj", "v_proj"]), marks=pytest.mark.slow),
    ],
    ids=["fourierft", "lora", "dora", "vera", "flora", "svft"],
)
def test_every_method_trains_on_the_four_bit_base(path, examples, config):
    model = llama.from_gguf(path, num_hidden_layers=1, quantized=True)
    codes_before = np.asarray(model.model.layers[0].self_attn.q_proj.parts["qs"][...])
    ffnnx.apply_adapter(model, config, jax.random.key(0))
    layer = model.model.layers[0].self_attn.q_proj
    assert isinstance(layer.base, QuantizedLinear) and all(v[...].dtype == jnp.float32 for v in layer.adapter.values())
    trainer = CausalLMTrainer(model, learning_rate=5e-3)
    batch = next(encode_batches(examples, 4, shuffle=False))
    losses = [trainer.step(batch) for _ in range(4)]
    assert losses[-1] < losses[0]
    trained = trainer.model
    np.testing.assert_array_equal(trained.model.layers[0].self_attn.q_proj.base.parts["qs"][...], codes_before)
    with pytest.raises(ValueError, match="4-bit base"):
        ffnnx.merge_adapter(trained)


def test_traced_rate_and_scaling_do_not_recompile(path, examples):
    model = llama.from_gguf(path, num_hidden_layers=1)
    config = ff.FourierFTConfig(target_modules=["q_proj", "v_proj"], n_frequency=100, scaling=150.0)
    ffnnx.apply_adapter(model, config, jax.random.key(0))
    trainer = CausalLMTrainer(model, learning_rate=1e-2, scaling=150.0, warmup_steps=2, total_steps=6)
    batch = next(encode_batches(examples, 4, shuffle=False))
    trainer.step(batch)
    compiled = trainer._train._cache_size()
    trainer.scaling = jnp.float32(75.0)
    for _ in range(3):
        trainer.step(batch)
    assert trainer._train._cache_size() == compiled
    assert [trainer.rate_at(s) for s in range(6)] == pytest.approx([5e-3, 1e-2, 1e-2, 7.5e-3, 5e-3, 2.5e-3])
    # the scaling reaches the layers: halving alpha halves ΔW's contribution to the loss change
    with_half = trainer.loss(batch)
    trainer.scaling = jnp.float32(0.0)
    assert trainer.loss(batch) != pytest.approx(with_half)


def _adapted_with_random_b(path, config):
    """A one-layer model adapted with ``config`` whose LoRA factors ``lora_b`` are N(0, 0.1), not PEFT's zeros."""
    model = llama.from_gguf(path, num_hidden_layers=1)
    ffnnx.apply_adapter(model, config, jax.random.key(0))
    state = nnx.state(model, ffnnx.AdapterParam)
    keys = iter(jax.random.split(jax.random.key(1), 64))
    randomise = lambda p, x: 0.1 * jax.random.normal(next(keys), x.shape) if "lora_b" in str(p) else x  # noqa: E731
    nnx.update(model, jax.tree_util.tree_map_with_path(randomise, state))
    return model


@pytest.mark.parametrize("config_type", [ff.LoraConfig, ff.DoraConfig])
def test_traced_scaling_stands_for_lora_alpha_over_r(path, examples, config_type):
    batch = next(encode_batches(examples, 4, shuffle=False))
    targets = ["q_proj", "v_proj"]
    alpha_8 = CausalLMTrainer(_adapted_with_random_b(path, config_type(target_modules=targets, r=4, lora_alpha=8.0)),
                              learning_rate=1e-2)  # fmt: skip
    alpha_4 = _adapted_with_random_b(path, config_type(target_modules=targets, r=4, lora_alpha=4.0))
    assert CausalLMTrainer(alpha_4, learning_rate=1e-2).loss(batch) != pytest.approx(alpha_8.loss(batch), rel=1e-3)
    traced = CausalLMTrainer(alpha_4, learning_rate=1e-2, scaling=2.0)  # lora_alpha / r = 8 / 4
    assert traced.loss(batch) == pytest.approx(alpha_8.loss(batch), rel=1e-6)
    assert traced.step(batch) == pytest.approx(alpha_8.step(batch), rel=1e-6)
    assert traced.loss(batch) == pytest.approx(alpha_8.loss(batch), rel=1e-5)  # the same update was taken


def test_scaling_is_refused_for_a_method_without_a_scale_factor(path):
    model = llama.from_gguf(path, num_hidden_layers=1)
    ffnnx.apply_adapter(model, ff.VeraConfig(target_modules=["q_proj", "v_proj"], r=8), jax.random.key(0))
    with pytest.raises(ValueError, match="VeraConfig has no scale factor"):
        CausalLMTrainer(model, learning_rate=1e-2, scaling=2.0)
    trainer = CausalLMTrainer(model, learning_rate=1e-2)
    with pytest.raises(ValueError, match="pass scaling=None"):
        trainer.restart(trainer.snapshot(), scaling=2.0)


@pytest.mark.torch
@pytest.mark.parametrize("method", ["fourierft", "lora"])
def test_peft_loads_our_llm_adapter_and_computes_our_logits(path, examples, tmp_path, method):
    peft = pytest.importorskip("peft")
    torch, reference = smollm2.reference(2)
    config = (
        ff.FourierFTConfig(target_modules=["q_proj", "v_proj"], n_frequency=300, scaling=150.0)
        if method == "fourierft"
        else ff.LoraConfig(target_modules=["q_proj", "v_proj"], r=4, lora_alpha=8.0)
    )
    model = llama.from_gguf(path, num_hidden_layers=2)
    ffnnx.apply_adapter(model, config, jax.random.key(0))
    trainer = CausalLMTrainer(model, learning_rate=1e-2)
    batch = next(encode_batches(examples, 4, shuffle=False))
    for _ in range(2):  # LoRA's B leaves zero, so train a little for a visible update
        trainer.step(batch)
    model = trainer.model
    ffnnx.export_peft(model, tmp_path / "adapter")
    with torch.no_grad():
        base = reference(torch.tensor(batch["input_ids"])).logits.numpy()
    peft_model = peft.PeftModel.from_pretrained(reference, str(tmp_path / "adapter")).eval()
    with torch.no_grad():
        theirs = peft_model(torch.tensor(batch["input_ids"])).logits.numpy()
    ours = np.asarray(nnx.jit(lambda m, x: m(x))(model, jnp.asarray(batch["input_ids"])))
    assert np.abs(theirs - base).max() > 1e-2  # the adapter changes the output
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=5e-4 * np.abs(theirs).max())


def test_orbax_round_trip_of_an_llm_adapter_on_the_four_bit_base(path, examples, tmp_path):
    config = ff.FourierFTConfig(target_modules=["q_proj", "v_proj"], n_frequency=100, scaling=150.0)
    model = llama.from_gguf(path, num_hidden_layers=1, quantized=True)
    ffnnx.apply_adapter(model, config, jax.random.key(0))
    trainer = CausalLMTrainer(model, learning_rate=1e-2)
    batch = next(encode_batches(examples, 4, shuffle=False))
    trainer.step(batch)
    trained = trainer.model
    ffnnx.save_adapter(tmp_path / "ckpt", trained)
    fresh = llama.from_gguf(path, num_hidden_layers=1, quantized=True)
    assert ffnnx.load_adapter(tmp_path / "ckpt", fresh) == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.v_proj",
    ]
    ids = jnp.asarray(batch["input_ids"])
    np.testing.assert_array_equal(fresh(ids), trained(ids))
    untrained = llama.from_gguf(path, num_hidden_layers=1, quantized=True)
    ffnnx.apply_adapter(untrained, config, jax.random.key(0))
    assert np.abs(np.asarray(untrained(ids)) - np.asarray(fresh(ids))).max() > 1e-4  # the step was saved


def test_per_layer_remat_gives_the_same_loss_and_gradient(path, examples):
    from fourier_flax.models.llama.loading import read_gguf

    config_lm, tensors = read_gguf(path, num_hidden_layers=2)
    batch = {k: jnp.asarray(v) for k, v in next(encode_batches(examples, 2, shuffle=False)).items()}
    results = []
    for remat in (False, True):
        model = llama.fill_model(nnx.eval_shape(lambda r=remat: llama.LlamaForCausalLM(config_lm, remat=r)), tensors)
        ffnnx.apply_adapter(model, ff.LoraConfig(target_modules=["q_proj"], r=2), jax.random.key(0))
        graphdef, params, frozen = nnx.split(model, ffnnx.AdapterParam, ...)
        loss = lambda p, g=graphdef, f=frozen: causal_lm_loss(nnx.merge(g, p, f), batch, chunk=64)  # noqa: E731
        results.append(jax.jit(jax.value_and_grad(loss))(params))
    np.testing.assert_allclose(results[0][0], results[1][0], rtol=1e-6)
    for a, b in zip(jax.tree.leaves(results[0][1]), jax.tree.leaves(results[1][1]), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)
