"""fourier_flax.nnx: surgery on flax.nnx models, AdapterParam filters, identity at zero init, merge == adapted."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from fourier_flax import FourierFTConfig, LoraConfig, VeraConfig
from fourier_flax.nnx import AdaptedLinear, AdapterParam, apply_adapter, merge_adapter


class Block(nnx.Module):
    def __init__(self, rngs):
        self.query = nnx.Linear(16, 16, rngs=rngs)
        self.value = nnx.Linear(16, 16, rngs=rngs)
        self.out = nnx.Linear(16, 4, rngs=rngs)

    def __call__(self, x):
        return self.out(jnp.tanh(self.query(x)) * self.value(x))


class Net(nnx.Module):
    def __init__(self, rngs):
        self.layers = nnx.List([Block(rngs), Block(rngs)])

    def __call__(self, x):
        for layer in self.layers:
            x = jnp.concatenate([layer(x)] * 4, axis=-1)
        return x


X = jnp.asarray(np.random.default_rng(0).standard_normal((3, 16)), jnp.float32)


@pytest.mark.parametrize(
    "config",
    [
        FourierFTConfig(target_modules=["query", "value"], n_frequency=30, scaling=5.0),
        LoraConfig(target_modules=["query", "value"], r=2),
        VeraConfig(target_modules=["query", "value"], r=4),
    ],
    ids=["fourierft", "lora", "vera"],
)
def test_surgery_trains_only_adapter_params_and_merges(config):
    model = Net(nnx.Rngs(0))
    base_out = model(X)
    paths = apply_adapter(model, config, nnx.Rngs(1))
    assert paths == [f"layers.{i}.{m}" for i in (0, 1) for m in ("query", "value")]
    assert isinstance(model.layers[0].query, AdaptedLinear) and not isinstance(model.layers[0].out, AdaptedLinear)
    if not isinstance(config, FourierFTConfig):  # LoRA and VeRA start at ΔW = 0
        np.testing.assert_allclose(model(X), base_out, atol=1e-6)
    frozen_before = jax.tree.map(np.asarray, nnx.state(model, nnx.Not(AdapterParam)))
    optimizer = nnx.Optimizer(model, optax.adam(0.1), wrt=AdapterParam)

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean(m(X) ** 2), argnums=nnx.DiffState(0, AdapterParam))(model)
        optimizer.update(model, grads)
        return loss

    first = step(model, optimizer)
    for _ in range(4):
        last = step(model, optimizer)
    assert last < first
    after = jax.tree.map(np.asarray, nnx.state(model, nnx.Not(AdapterParam)))
    jax.tree.map(np.testing.assert_array_equal, frozen_before, after)  # pretrained weights untouched
    adapted_out = model(X)
    assert np.abs(adapted_out - base_out).max() > 1e-4
    assert merge_adapter(model) == paths
    assert isinstance(model.layers[1].value, nnx.Linear)
    np.testing.assert_allclose(model(X), adapted_out, atol=1e-5)


def test_a_pattern_that_matches_nothing_lists_the_paths():
    with pytest.raises(ValueError, match=r"matches none of the model's nnx.Linear layers:\n.*layers.0.out"):
        apply_adapter(Net(nnx.Rngs(0)), FourierFTConfig(target_modules=["key"]), nnx.Rngs(1))
