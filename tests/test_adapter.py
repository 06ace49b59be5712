"""init_adapter: the exact params tree it builds, that it leaves the pretrained tree alone, and its errors."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from fourier_flax import FourierFTConfig, LoraConfig, adapter_module_paths, init_adapter


class Attention(nn.Module):
    """query/key/value/out, BERT-style names; N-d ``out`` kernel through DenseGeneral."""

    @nn.compact
    def __call__(self, x):
        q = nn.Dense(12, name="query")(x)
        k = nn.Dense(12, name="key")(x)
        v = nn.Dense(6, name="value")(x)
        return nn.DenseGeneral((2, 3), name="out")(q + k) + v.reshape(*v.shape[:-1], 2, 3)


class Block(nn.Module):
    @nn.compact
    def __call__(self, x, _):
        return nn.Dense(8, name="query")(x) + nn.Dense(8, name="key")(x), None


class Stacked(nn.Module):
    @nn.compact
    def __call__(self, x):
        scan = nn.scan(Block, variable_axes={"params": 0}, split_rngs={"params": True}, length=3)
        return scan(name="layers")(x, None)[0]


def flat_shapes(tree):
    return {"/".join(k): (v.shape, v.dtype) for k, v in traverse_util.flatten_dict(tree).items()}


@pytest.fixture(scope="module")
def variables():
    return Attention().init(jax.random.key(0), jnp.ones((1, 4)))


def test_exact_tree_and_untouched_leaves(variables):
    config = FourierFTConfig(target_modules=["query", "value"], n_frequency=7)
    adapted = init_adapter(variables, config, jax.random.key(1))
    f32 = jnp.dtype(jnp.float32)
    expected = flat_shapes(variables) | {
        "params/query/fourierft_spectrum": ((7,), f32),
        "params/value/fourierft_spectrum": ((7,), f32),
    }
    assert flat_shapes(adapted) == expected
    before = traverse_util.flatten_dict(variables)
    after = traverse_util.flatten_dict(adapted)
    for key, leaf in before.items():
        assert after[key] is leaf, key  # the same object, so bit-identical
    assert adapted["params"]["key"] is variables["params"]["key"]  # untouched subtrees are shared
    assert adapter_module_paths(adapted) == ["query", "value"]
    assert adapter_module_paths(variables) == []


def test_bare_tree_stays_bare(variables):
    config = FourierFTConfig(target_modules=["query"], n_frequency=7)
    adapted = init_adapter(variables["params"], config, jax.random.key(1))
    assert set(adapted) == set(variables["params"])
    assert adapted["query"]["fourierft_spectrum"].shape == (7,)


def test_coefficient_init(variables):
    drawn = init_adapter(variables, FourierFTConfig(target_modules=["query"], n_frequency=40), jax.random.key(1))
    c = np.asarray(drawn["params"]["query"]["fourierft_spectrum"])
    assert c.dtype == np.float32 and np.unique(c).size == 40
    assert abs(c.mean()) < 0.6 and 0.6 < c.std() < 1.4  # N(0, 1); 40 draws
    zero = init_adapter(
        variables, FourierFTConfig(target_modules=["query"], n_frequency=40, init_weights=True), jax.random.key(1)
    )
    np.testing.assert_array_equal(zero["params"]["query"]["fourierft_spectrum"], np.zeros(40, np.float32))


def test_keys_depend_on_path_not_on_other_targets(variables):
    one = init_adapter(variables, FourierFTConfig(target_modules=["query"], n_frequency=5), jax.random.key(1))
    two = init_adapter(variables, FourierFTConfig(target_modules=["query", "value"], n_frequency=5), jax.random.key(1))
    q1, q2 = one["params"]["query"]["fourierft_spectrum"], two["params"]["query"]["fourierft_spectrum"]
    np.testing.assert_array_equal(q1, q2)
    assert not np.array_equal(q2, two["params"]["value"]["fourierft_spectrum"])


def test_n_frequency_pattern(variables):
    config = FourierFTConfig(target_modules=["query", "value"], n_frequency=7, n_frequency_pattern={"value": 3})
    adapted = init_adapter(variables, config, jax.random.key(1))
    assert adapted["params"]["query"]["fourierft_spectrum"].shape == (7,)
    assert adapted["params"]["value"]["fourierft_spectrum"].shape == (3,)


def test_stacked_layers():
    variables = Stacked().init(jax.random.key(0), jnp.ones((1, 8)))
    config = FourierFTConfig(target_modules=["query"], n_frequency=64)  # 64 = d1*d2 of one layer
    adapted = init_adapter(variables, config, jax.random.key(1), stacked_axes={"layers": 1})
    assert adapter_module_paths(adapted) == ["layers.query"]
    assert adapted["params"]["layers"]["query"]["fourierft_spectrum"].shape == (3, 64)
    # The size check is per layer: 65 entries exceed one 8x8 layer, although the stacked kernel holds 192.
    too_many = FourierFTConfig(target_modules=["query"], n_frequency=65)
    with pytest.raises(ValueError, match=r"n_frequency=65 exceeds the 8x8 = 64"):
        init_adapter(variables, too_many, jax.random.key(1), stacked_axes={"layers": 1})
    with pytest.raises(ValueError, match="not a prefix of any module path"):
        init_adapter(variables, config, jax.random.key(1), stacked_axes={"nowhere": 1})
    with pytest.raises(ValueError, match="pass stacked_axes"):  # a (3, 8, 8) kernel read as one layer
        init_adapter(
            variables, FourierFTConfig(target_modules=["query"], kernel_in_axes={"query": 3}), jax.random.key(1)
        )


def test_nd_kernel_view(variables):
    # out: kernel (12, 2, 3). Default view (12, 6) holds 72 entries; kernel_in_axes=2 gives (24, 3), also 72.
    config = FourierFTConfig(target_modules=["out"], n_frequency=72)
    assert init_adapter(variables, config, jax.random.key(1))["params"]["out"]["fourierft_spectrum"].shape == (72,)
    with pytest.raises(ValueError, match="no 2-D view with kernel_in_axes=3"):
        init_adapter(variables, FourierFTConfig(target_modules=["out"], kernel_in_axes={"out": 3}), jax.random.key(1))


def test_pattern_matching_nothing_lists_paths(variables):
    with pytest.raises(ValueError, match=r"matches none of the 4 modules(.|\n)*query(.|\n)*value") as error:
        init_adapter(variables, FourierFTConfig(target_modules=["q_proj"]), jax.random.key(0))
    assert "  key\n" in str(error.value)


def test_n_too_large_names_module_and_sizes(variables):
    with pytest.raises(ValueError, match=r"module 'value': n_frequency=25 exceeds the 4x6 = 24 entries"):
        init_adapter(variables, FourierFTConfig(target_modules=["value"], n_frequency=25), jax.random.key(0))


def test_refuses_adapting_twice(variables):
    config = FourierFTConfig(target_modules=["query"], n_frequency=4)
    adapted = init_adapter(variables, config, jax.random.key(0))
    with pytest.raises(ValueError, match="already carries adapter leaves"):
        init_adapter(adapted, config, jax.random.key(0))


def test_rejects_other_configs(variables):
    with pytest.raises(TypeError, match=r"expected an adapter config \(FourierFTConfig, LoraConfig, .*\), got dict"):
        init_adapter(variables, {"target_modules": ["query"]}, jax.random.key(0))


def test_lora_tree(variables):
    config = LoraConfig(target_modules=["query", "value"], r=3)
    adapted = init_adapter(variables, config, jax.random.key(1))
    f32 = jnp.dtype(jnp.float32)
    assert flat_shapes(adapted) == flat_shapes(variables) | {
        "params/query/lora_a": ((4, 3), f32),
        "params/query/lora_b": ((3, 12), f32),
        "params/value/lora_a": ((4, 3), f32),
        "params/value/lora_b": ((3, 6), f32),
    }
    np.testing.assert_array_equal(adapted["params"]["value"]["lora_b"], np.zeros((3, 6), np.float32))
