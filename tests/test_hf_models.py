"""The Hugging Face model helpers, and FourierFT on each architecture with PEFT's default targets."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fourier_flax import FourierFTConfig, adapter_module_paths, init_adapter, intercept, merge_adapter
from fourier_flax.models.hf import dummy_inputs, load_minilm, tiny_model
from fourier_flax.targeting import DEFAULT_TARGET_MODULES

transformers = pytest.importorskip("transformers")


@pytest.mark.torch
def test_minilm_loads_the_real_weights(minilm2, minilm2_torch):
    torch = pytest.importorskip("torch")
    model, params = minilm2
    assert isinstance(model, transformers.FlaxBertModel)
    assert sorted(params["encoder"]["layer"]) == ["0", "1"]
    assert params["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"].shape == (384, 384)
    ids = np.random.default_rng(0).integers(1000, 20000, size=(2, 7))
    ours = model(ids, params=params).last_hidden_state
    with torch.no_grad():
        theirs = minilm2_torch(input_ids=torch.from_numpy(ids)).last_hidden_state.numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_minilm_classifier_paths():
    model, params = load_minilm(num_labels=3, num_hidden_layers=1)
    assert isinstance(model, transformers.FlaxBertForSequenceClassification)
    assert params["classifier"]["kernel"].shape == (384, 3)
    config = FourierFTConfig(target_modules=["query", "value"], n_frequency=100, backward="dense")
    adapted = init_adapter(params, config, jax.random.key(0))
    assert adapter_module_paths(adapted) == [
        "bert.encoder.layer.0.attention.self.query",
        "bert.encoder.layer.0.attention.self.value",
    ]
    ids = np.random.default_rng(0).integers(1000, 20000, size=(2, 7))
    run = jax.jit(lambda p: model(ids, params=p, output_hidden_states=True))
    with intercept(config):
        adapted_out = run(adapted)
    assert adapted_out.logits.shape == (2, 3)
    base_out = run(params)
    assert np.abs(adapted_out.hidden_states[-1] - base_out.hidden_states[-1]).max() > 1e-2
    assert np.abs(adapted_out.logits - base_out.logits).max() > 0


EXPECTED_PATHS = {
    "roberta": [f"encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")],
    "vit": [f"encoder.layer.{i}.attention.attention.{m}" for i in range(2) for m in ("query", "value")],
    "llama": [f"layers.{i}.self_attn.{m}" for i in range(2) for m in ("q_proj", "v_proj")],
    "gpt2": ["h.0.attn.c_attn", "h.1.attn.c_attn"],
}


@pytest.mark.parametrize(("arch", "dtype"), [("roberta", jnp.float32), ("vit", jnp.float32), ("llama", jnp.bfloat16)])
def test_default_targets_run_jitted(arch, dtype):
    model, params = tiny_model(arch, dtype=dtype)
    config = FourierFTConfig(target_modules=DEFAULT_TARGET_MODULES[arch], n_frequency=64, scaling=50.0)
    adapted = init_adapter(params, config, jax.random.key(0))
    assert adapter_module_paths(adapted) == EXPECTED_PATHS[arch]
    inputs = dummy_inputs(model)
    run = jax.jit(lambda p: model(**inputs, params=p).last_hidden_state)
    with intercept(config):
        out = run(adapted)
    base, merged = run(params), run(merge_adapter(adapted, config))
    assert out.dtype == base.dtype  # the adapter keeps the model's dtypes
    out, base, merged = (np.asarray(a, np.float32) for a in (out, base, merged))
    assert np.abs(out - base).max() > 1e-2
    # The interceptor and the merged model run the same compute-dtype kernels.
    np.testing.assert_allclose(out, merged, rtol=1e-5, atol=1e-5)


def test_tiny_gpt2_paths_and_unknown_arch():
    _, params = tiny_model("gpt2")
    config = FourierFTConfig(target_modules=DEFAULT_TARGET_MODULES["gpt2"], n_frequency=8, fan_in_fan_out=True)
    assert adapter_module_paths(init_adapter(params, config, jax.random.key(0))) == EXPECTED_PATHS["gpt2"]
    assert params["h"]["0"]["attn"]["c_attn"]["kernel"].shape == (96, 32)  # FlaxConv1D: (out, in)
    with pytest.raises(ValueError, match=r"unknown arch 'bert'; tiny configs exist for \['gpt2', 'llama'"):
        tiny_model("bert")
