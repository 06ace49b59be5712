"""get_peft_model / PeftModel: PEFT's verbs over the functional core, on the real 2-layer MiniLM."""

import dataclasses
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import fourier_flax as ff
from fourier_flax import FourierFTConfig, LoraConfig, get_peft_model, intercept

IDS = np.random.default_rng(0).integers(1000, 5000, (2, 10)).astype(np.int32)
FOURIER = FourierFTConfig(target_modules=["query", "value"], n_frequency=200, scaling=60.0)


def hidden(model_or_peft, params=None):
    kwargs = {} if params is None else {"params": params}
    return np.asarray(model_or_peft(IDS, **kwargs).last_hidden_state)


@pytest.fixture(scope="module")
def peft_model(minilm2):
    model, _ = minilm2
    return get_peft_model(model, FOURIER, jax.random.key(0))


def test_call_runs_the_adapter_like_intercept(minilm2, peft_model):
    model, base = minilm2
    params = peft_model.params
    with intercept(FOURIER):
        want = hidden(model, params)
    np.testing.assert_array_equal(hidden(peft_model), want)
    assert np.abs(want - hidden(model, base)).max() > 1e-3  # the adapter matters
    with peft_model.disable_adapter():
        np.testing.assert_array_equal(hidden(peft_model), hidden(model, base))
    np.testing.assert_array_equal(hidden(peft_model), want)  # enabled again


def test_merge_and_unload_gives_the_adapted_outputs(minilm2, peft_model):
    model, _ = minilm2
    merged = peft_model.merge_and_unload()
    assert merged is not model and type(merged) is type(model)
    assert "fourierft_spectrum" not in str(jax.tree_util.tree_structure(merged.params))
    np.testing.assert_allclose(hidden(merged), hidden(peft_model), atol=2e-5)
    assert model.params is not merged.params


def test_pytree_through_jit_compiles_once(peft_model):
    traces = []

    @jax.jit
    def forward(m, ids):
        traces.append(1)
        return m(ids).last_hidden_state

    first = forward(peft_model, IDS)
    trained = peft_model.with_params(jax.tree.map(lambda x: x * 1.0, peft_model.params))
    forward(trained, IDS)
    forward(peft_model, IDS + 1)
    assert len(traces) == 1
    np.testing.assert_allclose(first, hidden(peft_model), atol=1e-5)


def test_whole_tree_grad_with_optax_masked_trains_only_the_adapter(peft_model):
    """The usual JAX pattern: jax.grad over every param, optax.multi_transform by trainable_mask; the spectral
    backward returns the true kernel gradients too (equal to autodiff's)."""
    spectral = get_peft_model(
        peft_model.model, dataclasses.replace(FOURIER, backward="spectral"), jax.random.key(0)
    ).with_params(peft_model.params)
    dense = get_peft_model(
        peft_model.model, dataclasses.replace(FOURIER, backward="dense"), jax.random.key(0)
    ).with_params(peft_model.params)

    def loss(params, m):
        return jnp.mean(m(IDS, params=params).last_hidden_state ** 2)

    params = spectral.params
    grads = jax.jit(jax.grad(loss), static_argnums=1)(params, spectral)
    grads_dense = jax.jit(jax.grad(loss), static_argnums=1)(params, dense)
    chex.assert_trees_all_close(grads, grads_dense, rtol=2e-4, atol=2e-6)  # kernels too: x^T dy
    mask = spectral.trainable_mask()
    labels = jax.tree.map(lambda trained: "train" if trained else "frozen", mask)
    tx = optax.multi_transform({"train": optax.adam(0.1), "frozen": optax.set_to_zero()}, labels)
    updates, _ = tx.update(grads, tx.init(params), params)
    new = optax.apply_updates(params, updates)
    changed = jax.tree.map(lambda a, b: bool(np.any(a != b)), params, new)
    assert jax.tree.leaves(changed) == jax.tree.leaves(mask)


def test_named_adapters(minilm2, peft_model):
    model, base = minilm2
    lora = LoraConfig(target_modules=["key"], r=4)
    other = dataclasses.replace(FOURIER, random_loc_seed=5)
    m = peft_model.add_adapter("lora", lora, jax.random.key(1)).add_adapter("other", other, jax.random.key(2))
    assert m.active == ("default",) and set(m.peft_config) == {"default", "lora", "other"}
    np.testing.assert_array_equal(hidden(m), hidden(peft_model))
    # FourierFT on query/value and LoRA on key together == nested intercepts (LoRA's B starts at 0: "train" it)
    both = m.set_adapter(["default", "lora"])
    both = both.with_params(
        jax.tree_util.tree_map_with_path(
            lambda path, x: x + 0.01 if path[-1].key == "lora_b" else x,
            both.params,
        )
    )
    m = both.set_adapter("default")
    with intercept(FOURIER), intercept(lora):
        want = hidden(model, both.params)
    np.testing.assert_array_equal(hidden(both), want)
    # a second FourierFT adapter on the same layers: one active at a time
    switched = m.set_adapter("other")
    with intercept(other):
        np.testing.assert_array_equal(hidden(switched), hidden(model, switched.params))
    assert np.abs(hidden(switched) - hidden(peft_model)).max() > 1e-4
    with pytest.raises(ValueError, match="both adapt or train"):
        m.set_adapter(["default", "other"])
    gone = m.delete_adapter("other")
    assert set(gone.peft_config) == {"default", "lora"}
    with pytest.raises(ValueError, match="no adapters? named"):
        gone.set_adapter("other")
    with pytest.raises(ValueError, match="exists"):
        m.add_adapter("lora", lora, jax.random.key(0))


def test_save_and_from_pretrained_both_formats(tmp_path, minilm2, peft_model):
    model, _ = minilm2
    trained = peft_model.with_params(jax.tree.map(lambda x: x + 0.0, peft_model.params))
    uniform = dataclasses.replace(FOURIER, entry_sampling="uniform")
    two = trained.add_adapter("uniform", uniform, jax.random.key(3))
    two.save_pretrained(tmp_path)
    assert (tmp_path / "adapter_config.json").is_file()  # PEFT's format for the default adapter
    assert not (tmp_path / "uniform" / "adapter_config.json").exists()  # orbax: PEFT has no uniform entries
    loaded = ff.PeftModel.from_pretrained(model, tmp_path)
    np.testing.assert_array_equal(hidden(loaded), hidden(trained))
    again = loaded.load_adapter(tmp_path / "uniform", "uniform").set_adapter("uniform")
    np.testing.assert_array_equal(hidden(again), hidden(two.set_adapter("uniform")))


def test_print_trainable_parameters(capsys, peft_model):
    peft_model.print_trainable_parameters()
    out = capsys.readouterr().out
    assert out.startswith("trainable params: 800 || all params: ")  # 4 layers x n=200


def test_linen_module_needs_params():
    import flax.linen as nn

    dense = nn.Dense(8, name="query")
    variables = dense.init(jax.random.key(0), jnp.ones((1, 8)))
    with pytest.raises(ValueError, match="pass params="):
        get_peft_model(dense, FOURIER, jax.random.key(0))

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(8, name="query")(x)

    variables = Net().init(jax.random.key(0), jnp.ones((1, 8)))
    config = FourierFTConfig(target_modules=["query"], n_frequency=10, scaling=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = get_peft_model(Net(), config, jax.random.key(0), params=variables)
    x = jnp.ones((2, 8))
    with intercept(config):
        np.testing.assert_array_equal(m(x), Net().apply(m.params, x))
    np.testing.assert_allclose(Net().apply(m.merge_and_unload(), x), m(x), atol=1e-6)


def test_intercept_refuses_params_adapted_elsewhere(minilm2, peft_model):
    model, _ = minilm2
    with (
        intercept(FourierFTConfig(target_modules=["key"], n_frequency=200)),
        pytest.raises(ValueError, match="carries \\['fourierft_spectrum'\\] but the FourierFTConfig"),
    ):
        hidden(model, peft_model.params)


def test_with_params_runs_the_new_leaves(peft_model, minilm2):
    """The README's training loop relies on it: after with_params, calls use the new spectra. Expected value from
    the plain model under intercept with those params (not from the PeftModel under test)."""
    import fourier_flax as ff

    model, _ = minilm2
    moved = jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.5 if path[-1].key == "fourierft_spectrum" else x, peft_model.params
    )
    with ff.intercept(FOURIER):
        want = np.asarray(model(IDS, params=moved).last_hidden_state)
    got = hidden(peft_model.with_params(moved))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.abs(got - hidden(peft_model)).max() > 1e-3  # and the old model still runs the old spectra
