"""LoRA through the shared machinery: PEFT's init, zero-B identity, merged == intercepted, parity with PEFT LoRA."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from fourier_flax import LoraConfig, init_adapter, intercept, merge_adapter
from fourier_flax.methods.lora import init_lora_leaves, lora_delta_w

X = jnp.asarray(np.random.default_rng(0).standard_normal((3, 16)), jnp.float32)


class TwoLayer(nn.Module):
    @nn.compact
    def __call__(self, x):
        return nn.Dense(5, name="value")(jnp.tanh(nn.Dense(12, name="query")(x)))


def with_random_b(tree, seed=0):
    """A copy of ``tree`` whose ``lora_b`` leaves are N(0, 1), so ΔW is not zero."""
    rng = np.random.default_rng(seed)
    flat = traverse_util.flatten_dict(tree)
    for key in [k for k in flat if k[-1] == "lora_b"]:
        flat[key] = jnp.asarray(rng.standard_normal(flat[key].shape), jnp.float32)
    return traverse_util.unflatten_dict(flat)


def test_init_follows_peft_default():
    lora_a, lora_b = init_lora_leaves(jax.random.key(0), (400, 30), r=8, in_features=400, stack_shape=(2,))
    assert lora_a.shape == (2, 400, 8) and lora_b.shape == (2, 8, 30)
    assert lora_a.dtype == lora_b.dtype == jnp.float32
    np.testing.assert_array_equal(lora_b, np.zeros((2, 8, 30), np.float32))
    a = np.asarray(lora_a)
    bound = 1 / np.sqrt(400)  # kaiming_uniform_(a=sqrt(5)): gain sqrt(1/3) · sqrt(3 / fan_in)
    assert np.abs(a).max() <= bound and np.abs(a).max() > 0.99 * bound
    assert abs(a.std() - bound / np.sqrt(3)) < 0.05 * bound  # the std of U(-b, b)


def test_lora_delta_w_float64():
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((2, 6, 3)), rng.standard_normal((2, 3, 4))
    got = lora_delta_w(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.bfloat16), scale=0.5)
    assert got.dtype == jnp.float32
    np.testing.assert_allclose(got, 0.5 * a @ np.asarray(jnp.asarray(b, jnp.bfloat16), np.float64), rtol=1e-5)


def test_zero_b_leaves_output_unchanged(strict_jax):
    model = TwoLayer()
    variables = model.init(jax.random.key(0), X)
    config = LoraConfig(target_modules=["query", "value"], r=4)
    adapted = init_adapter(variables, config, jax.random.key(1))
    apply = jax.jit(model.apply)
    with intercept(config):
        out = apply(adapted, X)
    np.testing.assert_array_equal(out, apply(variables, X))


def test_merged_equals_intercepted_and_float64(strict_jax):
    model = TwoLayer()
    variables = model.init(jax.random.key(0), X)
    config = LoraConfig(target_modules=["query"], r=4, lora_alpha=8.0)
    adapted = with_random_b(init_adapter(variables, config, jax.random.key(1)))
    with intercept(config):
        out = jax.jit(model.apply)(adapted, X)
    np.testing.assert_allclose(model.apply(merge_adapter(adapted, config), X), out, rtol=1e-6, atol=1e-6)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), adapted["params"])
    q, v = p["query"], p["value"]
    h = np.asarray(X, np.float64) @ (q["kernel"] + 2.0 * q["lora_a"] @ q["lora_b"]) + q["bias"]
    np.testing.assert_allclose(out, np.tanh(h) @ v["kernel"] + v["bias"], rtol=1e-5, atol=1e-5)


@pytest.mark.torch
def test_minilm_matches_peft_lora(minilm2, minilm2_torch):
    import copy

    peft = pytest.importorskip("peft")
    torch = pytest.importorskip("torch")
    model, params = minilm2
    fields = {"target_modules": ["query", "value"], "r": 4, "lora_alpha": 16.0}
    config = LoraConfig(**fields)
    adapted = with_random_b(init_adapter(params, config, jax.random.key(2)), seed=3)
    ids = np.random.default_rng(1).integers(1000, 20000, size=(2, 10))
    with intercept(config):
        ours = jax.jit(lambda p: model(ids, params=p).last_hidden_state)(adapted)
    peft_model = peft.get_peft_model(copy.deepcopy(minilm2_torch), peft.LoraConfig(**fields, lora_dropout=0.0)).eval()
    copied = 0
    for name, module in peft_model.named_modules():
        if "default" not in getattr(module, "lora_A", {}):
            continue
        node = adapted
        for key in name.removeprefix("base_model.model.").split("."):
            node = node[key]
        with torch.no_grad():  # PEFT stores A (r, in) and B (out, r): the transposes of lora_a, lora_b
            module.lora_A["default"].weight.copy_(torch.tensor(np.asarray(node["lora_a"]).T))
            module.lora_B["default"].weight.copy_(torch.tensor(np.asarray(node["lora_b"]).T))
        copied += 1
    assert copied == 4
    with torch.no_grad():
        theirs = peft_model(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy()
        base = minilm2_torch(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy()
    assert np.abs(base - theirs).max() / np.abs(theirs).max() > 1e-2
    assert np.abs(np.asarray(ours) - theirs).max() / np.abs(theirs).max() <= 1e-4
