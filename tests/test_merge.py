"""merge_adapter / unmerge_adapter: base tree structure, float64 kernels, dtypes, round trip, safe merge."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from fourier_flax import FourierFTConfig, LoraConfig, init_adapter, merge_adapter, unmerge_adapter
from fourier_flax.methods.fourierft import spectral_entries


class Model(nn.Module):
    param_dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, _=None):
        dense = lambda features, name: nn.Dense(features, name=name, param_dtype=self.param_dtype)  # noqa: E731
        return dense(5, "value")(dense(6, "query")(x)), None


CONFIG = FourierFTConfig(target_modules=["query", "value"], n_frequency=8, scaling=25.0)


def model_vars(param_dtype=jnp.float32):
    return Model(param_dtype).init(jax.random.key(0), jnp.ones((1, 4)))


def test_merged_tree_is_the_base_tree(reference_delta_w):
    variables = model_vars()
    adapted = init_adapter(variables, CONFIG, jax.random.key(1))
    merged = merge_adapter(adapted, CONFIG)
    assert jax.tree.structure(merged) == jax.tree.structure(variables)
    for name in ("query", "value"):
        assert merged["params"][name]["bias"] is variables["params"][name]["bias"]
    p = adapted["params"]["query"]
    delta = reference_delta_w(p["fourierft_spectrum"], spectral_entries(CONFIG, (4, 6), 8), (4, 6), 25.0)
    expected = np.asarray(p["kernel"], np.float64) + delta
    np.testing.assert_allclose(merged["params"]["query"]["kernel"], expected, rtol=1e-6, atol=1e-6)
    bare = merge_adapter(adapted["params"], CONFIG)
    np.testing.assert_array_equal(bare["query"]["kernel"], merged["params"]["query"]["kernel"])


def test_keeps_kernel_dtype():
    adapted = init_adapter(model_vars(jnp.bfloat16), CONFIG, jax.random.key(1))
    merged = merge_adapter(adapted, CONFIG)
    kernel = merged["params"]["query"]["kernel"]
    assert kernel.dtype == jnp.bfloat16
    assert not np.array_equal(
        np.asarray(kernel, np.float32), np.asarray(adapted["params"]["query"]["kernel"], np.float32)
    )


@pytest.mark.parametrize(
    "config", [CONFIG, LoraConfig(target_modules=["query", "value"], r=2)], ids=["fourierft", "lora"]
)
def test_unmerge_round_trip(config):
    adapted = init_adapter(model_vars(), config, jax.random.key(1))
    if isinstance(config, LoraConfig):  # non-zero B, so the LoRA update is not zero
        flat = traverse_util.flatten_dict(adapted)
        for key in [k for k in flat if k[-1] == "lora_b"]:
            flat[key] = jnp.full(flat[key].shape, 0.5, jnp.float32)
        adapted = traverse_util.unflatten_dict(flat)
    merged = merge_adapter(adapted, config)
    assert np.abs(merged["params"]["query"]["kernel"] - adapted["params"]["query"]["kernel"]).max() > 1e-2
    only_adapter = {
        k: v
        for k, v in traverse_util.flatten_dict(adapted).items()
        if k[-1] in ("fourierft_spectrum", "lora_a", "lora_b")
    }
    restored = unmerge_adapter(merged, traverse_util.unflatten_dict(only_adapter), config)
    assert jax.tree.structure(restored) == jax.tree.structure(adapted)
    for key, leaf in traverse_util.flatten_dict(adapted).items():
        got = traverse_util.flatten_dict(restored)[key]
        if key[-1] == "kernel":
            np.testing.assert_allclose(got, leaf, rtol=0, atol=1e-6)
        else:
            assert got is leaf, key


def test_stacked_merge():
    layers = [Model().init(jax.random.key(seed), jnp.ones((1, 4))) for seed in range(2)]
    variables = jax.tree.map(lambda *leaves: jnp.stack(leaves), *layers)  # as nn.scan stacks them
    adapted = init_adapter(variables, CONFIG, jax.random.key(1), stacked_axes={"query": 1, "value": 1})
    merged = merge_adapter(adapted, CONFIG)
    for layer in range(2):
        single = merge_adapter(jax.tree.map(lambda a, layer=layer: a[layer], adapted), CONFIG)
        np.testing.assert_array_equal(merged["params"]["query"]["kernel"][layer], single["params"]["query"]["kernel"])
    assert np.abs(merged["params"]["query"]["kernel"][1] - merged["params"]["query"]["kernel"][0]).max() > 0


def test_safe_merge_refuses_non_finite():
    adapted = init_adapter(model_vars(), CONFIG, jax.random.key(1))
    flat = traverse_util.flatten_dict(adapted)
    flat[("params", "value", "fourierft_spectrum")] = flat[("params", "value", "fourierft_spectrum")].at[3].set(jnp.inf)
    broken = traverse_util.unflatten_dict(flat)
    with pytest.raises(ValueError, match=r"module 'value' gives non-finite kernel values"):
        merge_adapter(broken, CONFIG, safe_merge=True)
    assert not np.isfinite(merge_adapter(broken, CONFIG)["params"]["value"]["kernel"]).all()  # unsafe: merges


def test_errors():
    variables = model_vars()
    with pytest.raises(ValueError, match="nothing to merge"):
        merge_adapter(variables, CONFIG)
    with pytest.raises(ValueError, match="nothing to unmerge"):
        unmerge_adapter(variables, variables, CONFIG)
    adapted = init_adapter(variables, CONFIG, jax.random.key(1))
    with pytest.raises(ValueError, match=r"modules that `merged` lacks: \['other'\]"):
        unmerge_adapter(variables, {"params": {"other": adapted["params"]["query"]}}, CONFIG)
