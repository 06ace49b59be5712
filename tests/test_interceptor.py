"""intercept(): adapted forward passes against float64 NumPy, the merged model and PEFT; transforms; errors."""

import dataclasses

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

from fourier_flax import FourierFTConfig, init_adapter, intercept, merge_adapter
from fourier_flax.methods.fourierft import spectral_entries


class TwoLayer(nn.Module):
    """``query`` (adapted in most tests) feeding ``key`` (never adapted)."""

    param_dtype: jnp.dtype = jnp.float32
    dtype: jnp.dtype | None = None

    @nn.compact
    def __call__(self, x):
        h = nn.Dense(6, name="query", param_dtype=self.param_dtype, dtype=self.dtype)(x)
        return nn.Dense(5, name="key", param_dtype=self.param_dtype, dtype=self.dtype)(jnp.tanh(h))


class Block(nn.Module):
    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x, _):
        dense = lambda name: nn.Dense(8, name=name, param_dtype=self.dtype, dtype=self.dtype)  # noqa: E731
        return jnp.tanh(dense("query")(x) + dense("key")(x)), None


class Stacked(nn.Module):
    """Three ``Block`` layers under ``nn.scan`` of ``nn.remat``."""

    dtype: jnp.dtype = jnp.float32

    @nn.compact
    def __call__(self, x):
        scan = nn.scan(nn.remat(Block), variable_axes={"params": 0}, split_rngs={"params": True}, length=3)
        return scan(self.dtype, name="layers")(x, None)[0]


X = jnp.asarray(np.random.default_rng(0).standard_normal((3, 4)), jnp.float32)
CONFIG = FourierFTConfig(target_modules=["query"], n_frequency=10, scaling=30.0, backward="dense")


@pytest.fixture(scope="module")
def two_layer():
    model = TwoLayer()
    return model, model.init(jax.random.key(0), X)


def np_forward(params, x, delta):
    """Float64 TwoLayer with ``delta`` added to the query kernel."""
    f64 = lambda a: np.asarray(a, np.float64)  # noqa: E731
    q, k = params["query"], params["key"]
    h = f64(x) @ (f64(q["kernel"]) + delta) + f64(q["bias"])
    return np.tanh(h) @ f64(k["kernel"]) + f64(k["bias"])


def test_zero_coefficients_bit_identical(two_layer, strict_jax):
    model, variables = two_layer
    config = FourierFTConfig(target_modules=["query", "key"], n_frequency=10, init_weights=True)
    adapted = init_adapter(variables, config, jax.random.key(1))
    apply = jax.jit(model.apply)
    with intercept(config):
        adapted_out = apply(adapted, X)
    np.testing.assert_array_equal(adapted_out, apply(variables, X))


@pytest.mark.parametrize(
    "sampling",
    [
        {},
        {"entry_sampling": "uniform"},
        {"entry_sampling": "frequency_bias", "center_frequency": 2.0, "bandwidth": 2.0},
    ],
)
def test_matches_float64_closed_form(two_layer, reference_delta_w, sampling, strict_jax):
    model, variables = two_layer
    config = FourierFTConfig(target_modules=["query"], n_frequency=10, scaling=30.0, **sampling)
    adapted = init_adapter(variables, config, jax.random.key(1))
    c = adapted["params"]["query"]["fourierft_spectrum"]
    delta = reference_delta_w(c, spectral_entries(config, (4, 6), 10), (4, 6), 30.0)
    with intercept(config):
        out = jax.jit(model.apply)(adapted, X)
    expected = np_forward(variables["params"], X, delta)
    assert np.abs(np_forward(variables["params"], X, 0.0) - expected).max() > 0.1  # ΔW matters here
    np.testing.assert_allclose(out, expected, rtol=1e-5, atol=1e-5)
    # The merged model computes the same up to float32 rounding.
    np.testing.assert_allclose(model.apply(merge_adapter(adapted, config), X), out, rtol=1e-6, atol=1e-6)


def test_jit_cache_is_keyed_on_the_context(two_layer):
    model, variables = two_layer
    adapted = init_adapter(variables, CONFIG, jax.random.key(1))
    traces = []

    @jax.jit
    def apply(variables, x):
        traces.append(None)
        return model.apply(variables, x)

    base = apply(adapted, X)
    np.testing.assert_array_equal(base, model.apply(variables, X))  # outside: the adapter is ignored
    with intercept(CONFIG):
        inside = apply(adapted, X)
    assert len(traces) == 2 and np.abs(inside - base).max() > 1e-2
    np.testing.assert_array_equal(apply(adapted, X), base)  # outside again: the first trace, not the adapted one
    assert len(traces) == 2
    with intercept(CONFIG):
        np.testing.assert_array_equal(apply(adapted, X), inside)
    assert len(traces) == 2
    other = FourierFTConfig(target_modules=["query"], n_frequency=10, scaling=60.0, backward="dense")
    with intercept(other):
        assert np.abs(apply(adapted, X) - inside).max() > 1e-3  # another config retraces
    assert len(traces) == 3


def split_adapter(tree):
    flat = traverse_util.flatten_dict(tree)
    adapter = {k: v for k, v in flat.items() if k[-1] == "fourierft_spectrum"}
    frozen = {k: v for k, v in flat.items() if k[-1] != "fourierft_spectrum"}
    return adapter, frozen


def test_gradients_reach_only_adapter_leaves(two_layer, reference_delta_w):
    model, variables = two_layer
    adapted = init_adapter(variables, CONFIG, jax.random.key(1))
    adapter, frozen = split_adapter(adapted)
    target = np.random.default_rng(1).standard_normal((3, 5))

    def loss(adapter):
        with intercept(CONFIG):
            out = model.apply(traverse_util.unflatten_dict({**frozen, **adapter}), X)
        return jnp.sum(out * target)

    grads = jax.jit(jax.grad(loss))(adapter)
    assert set(grads) == {("params", "query", "fourierft_spectrum")}
    # Float64 reference: ΔW is linear in c, so dL/dc_l = <dL/dW, ΔW(e_l)>, dL/dW = xᵀ (dL/dh).
    q, k = (jax.tree.map(lambda a: np.asarray(a, np.float64), variables["params"][m]) for m in ("query", "key"))
    c = np.asarray(adapter[("params", "query", "fourierft_spectrum")], np.float64)
    entries = spectral_entries(CONFIG, (4, 6), 10)
    x = np.asarray(X, np.float64)
    h = x @ (q["kernel"] + reference_delta_w(c, entries, (4, 6), 30.0)) + q["bias"]
    dh = (target @ k["kernel"].T) * (1 - np.tanh(h) ** 2)
    dw = x.T @ dh
    expected = [np.sum(dw * reference_delta_w(np.eye(10)[i], entries, (4, 6), 30.0)) for i in range(10)]
    np.testing.assert_allclose(grads[("params", "query", "fourierft_spectrum")], expected, rtol=1e-4, atol=1e-4)


def test_spectral_backward_hook_matches_dense(two_layer):
    pytest.importorskip("fourier_flax.methods.fourierft.backward")
    model, variables = two_layer
    adapted = init_adapter(variables, CONFIG, jax.random.key(1))
    adapter, frozen = split_adapter(adapted)

    def run(config):
        def loss(adapter):
            with intercept(config):
                out = model.apply(traverse_util.unflatten_dict({**frozen, **adapter}), X)
            return jnp.sum(out**2), out

        return jax.jit(jax.grad(loss, has_aux=True))(adapter)

    spectral = FourierFTConfig(target_modules=["query"], n_frequency=10, scaling=30.0, backward="spectral")
    (dense_grad, dense_out), (spectral_grad, spectral_out) = run(CONFIG), run(spectral)
    np.testing.assert_allclose(spectral_out, dense_out, rtol=1e-6, atol=1e-6)
    chex.assert_trees_all_close(spectral_grad, dense_grad, rtol=1e-4, atol=1e-4)


def test_scan_remat_bf16_matches_merged():
    model = Stacked(jnp.bfloat16)
    x = X.astype(jnp.bfloat16).repeat(2, axis=1)
    variables = model.init(jax.random.key(0), x)
    config = FourierFTConfig(target_modules=["query"], n_frequency=12, scaling=20.0, backward="dense")
    adapted = init_adapter(variables, config, jax.random.key(1), stacked_axes={"layers": 1})
    assert adapted["params"]["layers"]["query"]["fourierft_spectrum"].shape == (3, 12)
    apply = jax.jit(model.apply)
    with intercept(config):
        out = apply(adapted, x)
    merged = merge_adapter(adapted, config)
    assert merged["params"]["layers"]["query"]["kernel"].dtype == jnp.bfloat16
    assert out.dtype == jnp.bfloat16
    # Both build bf16(f32(W0) + ΔW): the same kernels, hence the same outputs.
    np.testing.assert_array_equal(np.asarray(out, np.float32), np.asarray(apply(merged, x), np.float32))
    assert np.abs(np.asarray(out, np.float32) - np.asarray(apply(variables, x), np.float32)).max() > 0.05

    adapter, frozen = split_adapter(adapted)

    def loss(adapter):
        with intercept(config):
            out = model.apply(traverse_util.unflatten_dict({**frozen, **adapter}), x)
        return jnp.sum(out.astype(jnp.float32) ** 2)

    grad = jax.jit(jax.grad(loss))(adapter)[("params", "layers", "query", "fourierft_spectrum")]
    assert grad.shape == (3, 12) and grad.dtype == jnp.float32
    assert (np.abs(np.asarray(grad)).max(axis=1) > 0).all()  # every layer's slice gets its gradient


class Ensemble(nn.Module):
    """``nn.vmap`` over members with their own params (stacked) and a shared-params vmapped layer."""

    @nn.compact
    def __call__(self, x):  # x: (members, batch, 4)
        own = nn.vmap(nn.Dense, variable_axes={"params": 0}, split_rngs={"params": True}, in_axes=0)
        shared = nn.vmap(nn.Dense, variable_axes={"params": None}, split_rngs={"params": False}, in_axes=0)
        return shared(5, name="value")(own(6, name="query")(x))


def test_vmap(reference_delta_w):
    model = Ensemble()
    x = jnp.stack([X, 2 * X])
    variables = model.init(jax.random.key(0), x)
    config = FourierFTConfig(target_modules=["query", "value"], n_frequency=9, scaling=30.0, backward="dense")
    adapted = init_adapter(variables, config, jax.random.key(1), stacked_axes={"query": 1})
    with intercept(config):
        out = jax.jit(model.apply)(adapted, x)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), adapted["params"])
    expected = []
    for member in range(2):
        q_delta = reference_delta_w(
            p["query"]["fourierft_spectrum"][member], spectral_entries(config, (4, 6), 9), (4, 6), 30.0
        )
        v_delta = reference_delta_w(p["value"]["fourierft_spectrum"], spectral_entries(config, (6, 5), 9), (6, 5), 30.0)
        h = np.asarray(x[member], np.float64) @ (p["query"]["kernel"][member] + q_delta) + p["query"]["bias"][member]
        expected.append(h @ (p["value"]["kernel"] + v_delta) + p["value"]["bias"])
    np.testing.assert_allclose(out, np.stack(expected), rtol=1e-5, atol=1e-5)


class Projection(nn.Module):
    @nn.compact
    def __call__(self, x):  # (batch, 4, 5) -> (batch, 2, 3)
        return nn.DenseGeneral((2, 3), axis=(-2, -1), name="proj")(x)


def test_dense_general_nd_kernel(reference_delta_w, strict_jax):
    model = Projection()
    x = jnp.asarray(np.random.default_rng(2).standard_normal((3, 4, 5)), jnp.float32)
    variables = model.init(jax.random.key(0), x)
    config = FourierFTConfig(target_modules=["proj"], n_frequency=15, scaling=40.0, kernel_in_axes={"proj": 2})
    adapted = init_adapter(variables, config, jax.random.key(1))
    with intercept(config):
        out = jax.jit(model.apply)(adapted, x)
    p = jax.tree.map(lambda a: np.asarray(a, np.float64), adapted["params"]["proj"])
    delta = reference_delta_w(p["fourierft_spectrum"], spectral_entries(config, (20, 6), 15), (20, 6), 40.0)
    expected = np.asarray(x, np.float64).reshape(3, 20) @ (p["kernel"].reshape(20, 6) + delta)
    np.testing.assert_allclose(out, (expected + p["bias"].reshape(6)).reshape(3, 2, 3), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(model.apply(merge_adapter(adapted, config), x), out, rtol=1e-6, atol=1e-6)

    one_axis = FourierFTConfig(target_modules=["proj"], n_frequency=15)
    with intercept(one_axis), pytest.raises(ValueError, match=r"contracting 2 axes.*kernel_in_axes=\{'proj': 2\}"):
        model.apply(init_adapter(variables, one_axis, jax.random.key(1)), x)


def test_missing_init_is_a_clear_error(two_layer):
    model, variables = two_layer
    with intercept(CONFIG), pytest.raises(ValueError, match=r"module 'query' is targeted.*init_adapter"):
        model.apply(variables, X)


def test_layout_and_layer_kind_errors(two_layer):
    model, variables = two_layer
    conv1d_config = FourierFTConfig(target_modules=["query"], n_frequency=4, fan_in_fan_out=True)
    # A non-square kernel with a bias shows its layout: init_adapter refuses before anything runs ...
    with pytest.raises(ValueError, match=r"stored \(in, out\), like nn.Dense.*Set fan_in_fan_out=False"):
        init_adapter(variables, conv1d_config, jax.random.key(1))
    # ... and the interceptor checks the layer type itself (square kernels show nothing in their shapes).
    adapted = init_adapter(variables, dataclasses.replace(conv1d_config, fan_in_fan_out=False), jax.random.key(1))
    with intercept(conv1d_config), pytest.raises(ValueError, match="fan_in_fan_out=True exactly for GPT-2"):
        model.apply(adapted, X)

    conv = nn.Conv(3, (2,), name="query")
    conv_vars = conv.init(jax.random.key(0), jnp.ones((1, 5, 2)))
    wrapped = {"params": {"query": conv_vars["params"]}}
    config = FourierFTConfig(target_modules=["query"], n_frequency=4)
    adapted = init_adapter(wrapped, config, jax.random.key(1))

    class Wrapper(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Conv(3, (2,), name="query")(x)

    with intercept(config), pytest.raises(ValueError, match=r"is an nn.Conv .*set kernel_in_axes=\{'query': 2\}"):
        Wrapper().apply(adapted, jnp.ones((1, 5, 2)))

    transpose = nn.ConvTranspose(3, (2,), name="query")
    transpose_vars = {"params": {"query": transpose.init(jax.random.key(0), jnp.ones((1, 5, 2)))["params"]}}

    class TransposeWrapper(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.ConvTranspose(3, (2,), name="query")(x)

    adapted = init_adapter(transpose_vars, config, jax.random.key(1))
    with intercept(config), pytest.raises(ValueError, match="is a ConvTranspose; adapters apply to nn.Dense"):
        TransposeWrapper().apply(adapted, jnp.ones((1, 5, 2)))


def test_stacked_leaves_on_unstacked_module(two_layer):
    model, variables = two_layer
    adapted = init_adapter(variables, CONFIG, jax.random.key(1))
    flat = traverse_util.flatten_dict(adapted)
    flat[("params", "query", "fourierft_spectrum")] = jnp.zeros((2, 10), jnp.float32)
    with intercept(CONFIG), pytest.raises(ValueError, match="stacked_axes was given"):
        model.apply(traverse_util.unflatten_dict(flat), X)


def test_non_targeted_layers_untouched(two_layer):
    model, variables = two_layer
    config = FourierFTConfig(target_modules=["key"], n_frequency=10, scaling=30.0)
    adapted = init_adapter(variables, config, jax.random.key(1))
    captured = {}

    def capture(next_fun, args, kwargs, context):
        out = next_fun(*args, **kwargs)
        captured[context.module.name] = out
        return out

    with intercept(config), nn.intercept_methods(capture):  # inner interceptor sees the query layer's output
        model.apply(adapted, X)
    np.testing.assert_array_equal(captured["query"], nn.Dense(6).apply({"params": variables["params"]["query"]}, X))


def copy_spectra_into_peft(peft_model, adapted_params):
    """Writes our coefficients into PEFT's ``fourierft_spectrum['default']``; returns the module paths copied."""
    import torch

    copied = []
    for name, module in peft_model.named_modules():
        if "default" not in getattr(module, "fourierft_spectrum", {}):
            continue
        path = name.removeprefix("base_model.model.")
        node = adapted_params
        for key in path.split("."):
            node = node[key]
        with torch.no_grad():
            module.fourierft_spectrum["default"].copy_(torch.tensor(np.asarray(node["fourierft_spectrum"])))
        copied.append(path)
    return sorted(copied)


def relative_error(got, expected):
    return float(np.abs(np.asarray(got, np.float64) - expected).max() / np.abs(expected).max())


@pytest.mark.torch
def test_minilm_matches_peft(minilm2, minilm2_torch):
    import copy

    peft = pytest.importorskip("peft")
    torch = pytest.importorskip("torch")
    model, params = minilm2
    fields = {"target_modules": ["query", "value"], "n_frequency": 200, "scaling": 150.0, "random_loc_seed": 777}
    config = FourierFTConfig(**fields)  # default backward="auto": the spectral hook where it pays
    adapted = init_adapter(params, config, jax.random.key(3))
    ids = np.random.default_rng(0).integers(1000, 20000, size=(2, 12))
    mask = np.ones_like(ids)
    mask[1, 9:] = 0
    with intercept(config):
        ours = jax.jit(lambda p: model(ids, attention_mask=mask, params=p).last_hidden_state)(adapted)
    peft_model = peft.get_peft_model(copy.deepcopy(minilm2_torch), peft.FourierFTConfig(**fields)).eval()
    copied = copy_spectra_into_peft(peft_model, adapted)
    assert copied == [f"encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")]
    with torch.no_grad():
        theirs = peft_model(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
        base = minilm2_torch(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    theirs, base = theirs.last_hidden_state.numpy(), base.last_hidden_state.numpy()
    assert relative_error(base, theirs) > 1e-2  # the adapter changes the output
    assert relative_error(ours, theirs) <= 1e-4


@pytest.mark.torch
@pytest.mark.parametrize("backward", ["dense", "spectral"])
def test_gpt2_conv1d_matches_peft(backward):
    peft = pytest.importorskip("peft")
    torch = pytest.importorskip("torch")
    from transformers import GPT2Model
    from transformers.modeling_flax_pytorch_utils import load_flax_weights_in_pytorch_model

    from fourier_flax.models.hf import dummy_inputs, tiny_model

    model, params = tiny_model("gpt2")
    torch_model = load_flax_weights_in_pytorch_model(GPT2Model(model.config), params).eval()
    fields = {"target_modules": ["c_attn"], "n_frequency": 50, "scaling": 20.0, "random_loc_seed": 123}
    config = FourierFTConfig(**fields, fan_in_fan_out=True, backward=backward)
    adapted = init_adapter(params, config, jax.random.key(0))
    inputs = dummy_inputs(model)
    with intercept(config):
        ours = jax.jit(lambda p: model(**inputs, params=p).last_hidden_state)(adapted)
    peft_model = peft.get_peft_model(torch_model, peft.FourierFTConfig(**fields, fan_in_fan_out=True)).eval()
    assert copy_spectra_into_peft(peft_model, adapted) == ["h.0.attn.c_attn", "h.1.attn.c_attn"]
    with torch.no_grad():
        theirs = peft_model(**{k: torch.tensor(np.asarray(v)).long() for k, v in inputs.items()})
    base = model(**inputs, params=params).last_hidden_state
    assert relative_error(base, theirs.last_hidden_state.numpy()) > 1e-2
    assert relative_error(ours, theirs.last_hidden_state.numpy()) <= 1e-4


def test_fourierft_and_lora_contexts_nest(two_layer):
    from fourier_flax import LoraConfig

    model, variables = two_layer
    lora = LoraConfig(target_modules=["key"], r=2)
    adapted = init_adapter(init_adapter(variables, CONFIG, jax.random.key(1)), lora, jax.random.key(2))
    flat = traverse_util.flatten_dict(adapted)
    flat[("params", "key", "lora_b")] = jnp.ones((2, 5), jnp.float32)
    adapted = traverse_util.unflatten_dict(flat)
    with intercept(CONFIG), intercept(lora):
        out = jax.jit(model.apply)(adapted, X)
    merged = merge_adapter(merge_adapter(adapted, lora), CONFIG)
    np.testing.assert_allclose(out, model.apply(merged, X), rtol=1e-5, atol=1e-5)
    with intercept(CONFIG):  # LoRA's leaves are ignored outside its context
        only_fourier = jax.jit(model.apply)(adapted, X)
    assert np.abs(out - only_fourier).max() > 1e-2


def test_init_inside_the_context_builds_the_base_tree(two_layer):
    model, variables = two_layer
    with intercept(CONFIG):
        fresh = model.init(jax.random.key(0), X)
    chex.assert_trees_all_equal(fresh, variables)
