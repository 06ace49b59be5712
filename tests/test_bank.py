"""Adapter banks: every example on its own FourierFT or LoRA adapter, in linen, NNX, generate and training."""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import fourier_flax as ff
from fourier_flax import nnx as ffnnx
from fourier_flax.bank import (
    AdapterBank,
    adapter_ids,
    bank_bytes_per_adapter,
    bank_learning_rates,
    bank_member,
    load_adapter_bank,
    stack_adapters,
)
from fourier_flax.checkpoint import AdapterMismatchError
from fourier_flax.methods.fourierft import spectral_entries
from fourier_flax.models.llama import LlamaConfig, LlamaForCausalLM

FOURIER = ff.FourierFTConfig(target_modules=["q", "v"], n_frequency=50, scaling=40.0)
LORA = ff.LoraConfig(target_modules=["q", "v"], r=4, lora_alpha=8.0)
TINY_LLAMA = LlamaConfig(
    vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, eos_token_id=3,
)  # fmt: skip


class TwoLayers(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(24, name="v")(nn.relu(nn.Dense(32, name="q")(x)))


MODEL = TwoLayers()
X = jax.random.normal(jax.random.key(0), (4, 5, 16))
BASE = MODEL.init(jax.random.key(1), X)["params"]


def members(config, count=3, base=BASE):
    """``count`` adapters of ``config`` with non-zero updates (LoRA's B starts at zero: perturbed here)."""
    trees = [ff.init_adapter(base, config, jax.random.key(10 + k), check_scale=False) for k in range(count)]
    if isinstance(config, ff.LoraConfig):
        trees = [
            jax.tree_util.tree_map_with_path(
                lambda p, leaf, k=k: leaf + 0.2 * jax.random.normal(jax.random.key(k), leaf.shape)
                if p[-1].key == "lora_b" else leaf,
                tree,
            )
            for k, tree in enumerate(trees)
        ]  # fmt: skip
    return trees


def run_member(config, params, x):
    with ff.intercept(config):
        return MODEL.apply({"params": params}, x)


@pytest.mark.parametrize("inner", [FOURIER, LORA], ids=["fourierft", "lora"])
def test_each_example_runs_its_own_adapter(inner):
    trees = members(inner)
    params, bank = stack_adapters(trees, [inner] * 3)
    ids = jnp.array([2, -1, 0, 1])

    @jax.jit
    def forward(params, x, ids):
        with ff.intercept(bank), adapter_ids(ids):
            return MODEL.apply({"params": params}, x)

    out = forward(params, X, ids)
    for b, k in enumerate(ids.tolist()):
        want = MODEL.apply({"params": BASE}, X[b : b + 1]) if k < 0 else run_member(inner, trees[k], X[b : b + 1])
        np.testing.assert_allclose(out[b], want[0], atol=2e-5, rtol=1e-5)


def test_fourierft_bank_matches_a_float64_closed_form():
    """The bank layer against ΔW built in float64 NumPy from the definition: Re(ifft2(F)) · alpha."""

    class OneLayer(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(32, name="q")(x)

    base = {"q": BASE["q"]}
    config = dataclasses.replace(FOURIER, target_modules=["q"])
    trees = [ff.init_adapter(base, config, jax.random.key(k)) for k in range(3)]
    params, bank = stack_adapters(trees, [config] * 3)
    ids = jnp.array([1, 0, 2, -1])
    with ff.intercept(bank), adapter_ids(ids):
        got = np.asarray(OneLayer().apply({"params": params}, X))
    kernel = np.asarray(BASE["q"]["kernel"], np.float64)
    entries = np.asarray(spectral_entries(config, kernel.shape, 50))
    for b, k in enumerate(ids.tolist()):
        update = np.zeros(kernel.shape)
        if k >= 0:
            spectrum = np.zeros(kernel.shape, np.complex128)
            np.add.at(spectrum, (entries[0], entries[1]), np.asarray(trees[k]["q"]["fourierft_spectrum"], np.float64))
            update = np.fft.ifft2(spectrum).real * 40.0
        want = np.asarray(X[b], np.float64) @ (kernel + update) + np.asarray(BASE["q"]["bias"], np.float64)
        np.testing.assert_allclose(got[b], want, atol=1e-5 * np.abs(want).max())
        if k >= 0:
            assert np.abs(np.asarray(X[b], np.float64) @ update).max() > 1e-2  # the update is visible


def test_new_ids_do_not_retrace():
    params, bank = stack_adapters(members(FOURIER), [FOURIER] * 3)
    traces = []

    @jax.jit
    def forward(params, x, ids):
        traces.append(1)
        with ff.intercept(bank), adapter_ids(ids):
            return MODEL.apply({"params": params}, x)

    first = forward(params, X, jnp.array([0, 1, 2, -1]))
    second = forward(params, X, jnp.array([2, 2, -1, 0]))
    assert len(traces) == 1
    assert not np.allclose(first[0], second[0])  # the ids took effect

    @jax.jit
    def fixed_ids(params, x):  # concrete ids in force at trace time: part of the cache key, never reused
        traces.append(2)
        return MODEL.apply({"params": params}, x)

    with ff.intercept(bank):
        with adapter_ids(jnp.array([0, 1, 2, -1])):
            np.testing.assert_allclose(fixed_ids(params, X), first, atol=1e-6)
        with adapter_ids(jnp.array([2, 2, -1, 0])):
            np.testing.assert_allclose(fixed_ids(params, X), second, atol=1e-6)
    assert traces.count(2) == 2


def test_bank_refuses_what_it_cannot_run():
    params, bank = stack_adapters(members(FOURIER), [FOURIER] * 3)
    with pytest.raises(ValueError, match="say which adapter each example uses"), ff.intercept(bank):
        MODEL.apply({"params": params}, X)
    with pytest.raises(ValueError, match="does not lead with that batch size"), ff.intercept(bank):
        with adapter_ids(jnp.array([0, 1])):
            MODEL.apply({"params": params}, X)
    with pytest.raises(ValueError, match="banks hold FourierFT or LoRA"):
        ff.init_adapter(BASE, AdapterBank(ff.VeraConfig(target_modules=["q"]), 2), jax.random.key(0))
    with pytest.raises(ValueError, match="fan_in_fan_out"):
        AdapterBank(dataclasses.replace(FOURIER, fan_in_fan_out=True), 2)
    with pytest.raises(ValueError, match="positive int"):
        AdapterBank(FOURIER, 0)
    with pytest.raises(ValueError, match="no single update or merged kernel"):
        ff.merge_adapter(params, bank)
    with pytest.raises(ValueError, match="save each member"):
        ff.save_adapter("/tmp/never-written", params, bank)


def test_members_with_other_scalings_are_folded_in():
    configs = [dataclasses.replace(FOURIER, scaling=s) for s in (40.0, 10.0, 90.0)]
    trees = members(FOURIER)
    params, bank = stack_adapters(trees, configs)
    assert bank.scaling == 40.0
    ids = jnp.array([1, 2, 0, 1])
    with ff.intercept(bank), adapter_ids(ids):
        out = MODEL.apply({"params": params}, X)
    for b, k in enumerate(ids.tolist()):
        np.testing.assert_allclose(out[b], run_member(configs[k], trees[k], X[b : b + 1])[0], atol=2e-5, rtol=1e-5)
    lora_configs = [dataclasses.replace(LORA, lora_alpha=a) for a in (8.0, 2.0)]
    lora_trees = members(LORA, 2)
    params, bank = stack_adapters(lora_trees, lora_configs)
    with ff.intercept(bank), adapter_ids(jnp.array([1, 1, 0, 0])):
        out = MODEL.apply({"params": params}, X)
    np.testing.assert_allclose(out[0], run_member(lora_configs[1], lora_trees[1], X[:1])[0], atol=2e-5, rtol=1e-5)


def test_a_lora_bank_takes_the_layer_s_scale_override():
    """An NNX layer's ``scaling`` (the trainer's traced scale) reaches a LoRA bank's matmul, as it does a FourierFT
    bank's: scale 2 · (lora_alpha / r) equals B doubled."""
    from fourier_flax.methods import method_of

    params, bank = stack_adapters(members(LORA, 2), [LORA, LORA])
    leaves = {name: params["q"][name] for name in ("kernel", "lora_a", "lora_b")}
    ids = jnp.array([1, 0, 1, 0])
    run = lambda alpha, tree: method_of(LORA).bank_matmul(LORA, alpha, "q", tree, X, ids, precision=None, dtype=None)  # noqa: E731
    doubled = {**leaves, "lora_b": 2 * leaves["lora_b"]}
    np.testing.assert_allclose(run(jnp.float32(2 * LORA.scale), leaves), run(None, doubled), atol=1e-5, rtol=1e-5)
    assert np.abs(np.asarray(run(None, leaves) - run(None, doubled))).max() > 1e-2


def test_stacking_refuses_adapters_that_do_not_fit():
    trees = members(FOURIER, 2)
    other_n = ff.init_adapter(BASE, dataclasses.replace(FOURIER, n_frequency=40), jax.random.key(0))
    with pytest.raises(AdapterMismatchError, match="n_frequency=40") as error:
        stack_adapters([trees[0], other_n], [FOURIER, dataclasses.replace(FOURIER, n_frequency=40)])
    assert "shape (40,)" in str(error.value)
    with pytest.raises(AdapterMismatchError, match="random_loc_seed"):
        stack_adapters(trees, [FOURIER, dataclasses.replace(FOURIER, random_loc_seed=1)])
    q_only = dataclasses.replace(FOURIER, target_modules=["q"])
    with pytest.raises(AdapterMismatchError, match="target_modules"):
        stack_adapters([trees[0], ff.init_adapter(BASE, q_only, jax.random.key(0))], [FOURIER, q_only])
    other_bias = jax.tree_util.tree_map_with_path(lambda p, x: x + 1 if p[-1].key == "bias" else x, trees[1])
    with pytest.raises(AdapterMismatchError, match="differs from adapter 0's"):
        stack_adapters([trees[0], other_bias], [FOURIER, FOURIER])
    with pytest.raises(AdapterMismatchError, match="is a LoraConfig"):
        stack_adapters([trees[0], members(LORA, 1)[0]], [FOURIER, LORA])


def test_member_round_trip_and_memory():
    trees = members(FOURIER)
    params, bank = stack_adapters(trees, [FOURIER] * 3)
    for k in range(3):
        leaf_equal = jax.tree.map(lambda a, b: bool(np.array_equal(a, b)), bank_member(params, bank, k), trees[k])
        assert all(jax.tree.leaves(leaf_equal))
    # two adapted layers of n = 50 float32 coefficients each
    assert bank_bytes_per_adapter(params, bank) == 2 * 50 * 4
    with pytest.raises(IndexError):
        bank_member(params, bank, 3)


def test_load_a_bank_from_checkpoints_and_peft_directories(tmp_path):
    trees = members(FOURIER)
    ff.save_adapter(tmp_path / "ours0", trees[0], FOURIER)
    ff.export_peft(trees[1], FOURIER, tmp_path / "peft1")
    ff.save_adapter(tmp_path / "ours2", trees[2], dataclasses.replace(FOURIER, scaling=80.0))
    params, bank = load_adapter_bank([tmp_path / "ours0", tmp_path / "peft1", tmp_path / "ours2"], BASE)
    assert bank.num_adapters == 3
    with ff.intercept(bank), adapter_ids(jnp.array([0, 1, 2, -1])):
        out = MODEL.apply({"params": params}, X)
    np.testing.assert_allclose(out[1], run_member(FOURIER, trees[1], X[1:2])[0], atol=2e-5, rtol=1e-5)
    scaled = dataclasses.replace(FOURIER, scaling=80.0)
    np.testing.assert_allclose(out[2], run_member(scaled, trees[2], X[2:3])[0], atol=2e-5, rtol=1e-5)
    other = dataclasses.replace(FOURIER, n_frequency=40)
    ff.save_adapter(tmp_path / "other", ff.init_adapter(BASE, other, jax.random.key(0)), other)
    with pytest.raises(AdapterMismatchError, match="n_frequency"):
        load_adapter_bank([tmp_path / "ours0", tmp_path / "other"], BASE)


@pytest.mark.parametrize("inner", [FOURIER, LORA], ids=["fourierft", "lora"])
def test_k_runs_in_one_batch_equal_k_separate_runs(inner):
    """A seed × rate sweep as one bank: each row's coefficients after Adam steps equal its own run's."""
    rates = [3e-3, 1e-2, 3e-2]
    trees = members(inner)
    rng = np.random.default_rng(0)
    batches = [(rng.standard_normal((3, 2, 5, 16)), rng.standard_normal((3, 2, 5, 24))) for _ in range(3)]

    def loss_fn(out, y):
        return jnp.mean((out - y) ** 2, axis=(1, 2))  # per example

    def separate(k):
        mask = ff.trainable_mask(trees[k], inner)
        trainable, frozen = ff.split_params(trees[k], mask)
        tx = optax.adam(rates[k])
        state = tx.init(trainable)

        def loss(t, x, y):
            return jnp.mean(loss_fn(run_member(inner, ff.merge_params(t, frozen), x), y))

        for x, y in batches:
            grads = jax.grad(loss)(trainable, x[k], y[k])
            updates, state = tx.update(grads, state, trainable)
            trainable = optax.apply_updates(trainable, updates)
        return ff.merge_params(trainable, frozen)

    params, bank = stack_adapters(trees, [inner] * 3)
    mask = ff.trainable_mask(params, bank)
    trainable, frozen = ff.split_params(params, mask)
    tx = optax.chain(optax.scale_by_adam(), bank_learning_rates(bank, -jnp.asarray(rates)))
    state = tx.init(trainable)
    ids = jnp.repeat(jnp.arange(3), 2)

    @jax.jit
    def step(trainable, state, x, y):
        def loss(t):
            with ff.intercept(bank), adapter_ids(ids):
                out = MODEL.apply({"params": ff.merge_params(t, frozen)}, x)
            return jnp.sum(loss_fn(out, y)) / 2  # the sum of the three runs' mean losses

        updates, state = tx.update(jax.grad(loss)(trainable), state, trainable)
        return optax.apply_updates(trainable, updates), state

    for x, y in batches:
        trainable, state = step(trainable, state, x.reshape(6, 5, 16), y.reshape(6, 5, 24))
    trained = ff.merge_params(trainable, frozen)
    for k in range(3):
        got, want = bank_member(trained, bank, k), separate(k)
        for name in ("fourierft_spectrum", "lora_a", "lora_b"):
            if name in want["q"]:
                np.testing.assert_allclose(got["q"][name], want["q"][name], atol=2e-6, rtol=1e-5)
                assert not np.allclose(want["q"][name], trees[k]["q"][name])  # it trained


@pytest.mark.parametrize(
    "inner",
    [
        ff.FourierFTConfig(target_modules=["q_proj", "v_proj"], n_frequency=60, scaling=300.0),
        ff.LoraConfig(target_modules=["q_proj", "v_proj"], r=4),
    ],
    ids=["fourierft", "lora"],
)
def test_nnx_bank_generates_as_each_member(inner):
    bank = AdapterBank(inner, 3)
    model = LlamaForCausalLM(TINY_LLAMA, rngs=nnx.Rngs(0))
    ffnnx.apply_adapter(model, bank, jax.random.key(1))
    for layer in ffnnx.adapted_layers(model).values():
        for variable in layer.adapter.values():  # distinct, non-zero updates per member
            variable[...] = variable[...] + 0.3 * jax.random.normal(jax.random.key(7), variable[...].shape)
    prompts = jnp.asarray(np.random.default_rng(0).integers(4, 50, (3, 5)), jnp.int32)
    chosen = [1, -1, 2]
    greedy = ff.generate(model, prompts, max_new_tokens=6, eos_token_id=(), adapter_ids=jnp.array(chosen))
    beams = ff.generate(model, prompts, max_new_tokens=6, eos_token_id=(), adapter_ids=jnp.array(chosen), num_beams=3)
    for b, k in enumerate(chosen):
        single = LlamaForCausalLM(TINY_LLAMA, rngs=nnx.Rngs(0))
        if k >= 0:
            ffnnx.apply_adapter(single, inner, jax.random.key(1))
            for path, layer in ffnnx.adapted_layers(single).items():
                for name, variable in layer.adapter.items():
                    variable[...] = ffnnx.adapted_layers(model)[path].adapter[name][...][k]
        np.testing.assert_array_equal(greedy[b], ff.generate(single, prompts[b : b + 1], max_new_tokens=6,
                                                             eos_token_id=())[0])  # fmt: skip
        np.testing.assert_array_equal(
            beams[b], ff.generate(single, prompts[b : b + 1], max_new_tokens=6, eos_token_id=(), num_beams=3)[0]
        )
    with pytest.raises(ValueError, match="one id per prompt"):
        ff.generate(model, prompts, max_new_tokens=2, adapter_ids=jnp.array([0, 1]))
