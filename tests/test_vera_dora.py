"""VeRA and DoRA on the method protocol: float64 references, identity at init, merge, checkpoints, and output and
gradient parity with Hugging Face PEFT 0.21 on the real 2-layer MiniLM."""

import copy

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import fourier_flax as ff
from fourier_flax import DoraConfig, VeraConfig, init_adapter, intercept, merge_adapter
from fourier_flax.methods import method_of
from fourier_flax.module_paths import get_module

RNG = np.random.default_rng(0)


def tree():
    return {
        "attn": {
            "query": {"kernel": jnp.asarray(RNG.standard_normal((12, 20)), jnp.float32), "bias": jnp.zeros(20)},
            "value": {"kernel": jnp.asarray(RNG.standard_normal((12, 8)), jnp.float32), "bias": jnp.zeros(8)},
        }
    }


def perturbed(params, names, scale=0.3, seed=1):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x + scale * rng.standard_normal(x.shape).astype(np.float32) if path[-1].key in names else x,
        params,
    )


def test_vera_delta_w_matches_float64_and_shares_projections():
    config = VeraConfig(target_modules=["query", "value"], r=6, projection_prng_key=3)
    params = perturbed(init_adapter(tree(), config, jax.random.key(0)), ("vera_lambda_b", "vera_lambda_d"))
    query, value = (get_module(params, f"attn.{m}") for m in ("query", "value"))
    # one shared A (r, max_in) and B (max_out, r), sliced per layer
    np.testing.assert_array_equal(query["vera_A"], value["vera_A"])
    np.testing.assert_array_equal(query["vera_B"][:8], value["vera_B"])
    assert query["vera_A"].shape == (6, 12) and query["vera_B"].shape == (20, 6)
    assert np.abs(query["vera_A"]).max() <= np.sqrt(6 / 12) and np.abs(query["vera_B"]).max() <= np.sqrt(6 / 6)
    for module, view in ((query, (12, 20)), (value, (12, 8))):
        a, b = (np.asarray(module[k], np.float64) for k in ("vera_A", "vera_B"))
        d, bb = (np.asarray(module[k], np.float64) for k in ("vera_lambda_d", "vera_lambda_b"))
        want = ((bb[:, None] * b) @ (d[:, None] * a)).T  # PEFT's (out, in) formula, transposed to (in, out)
        got = method_of(config).delta_w(config, "x", module, view)
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())
    assert method_of(config).parameter_count(config, "attn.query", (12, 20)) == 6 + 20


def test_dora_effective_kernel_matches_float64():
    config = DoraConfig(target_modules=["query"], r=3, lora_alpha=6.0)
    params = perturbed(init_adapter(tree(), config, jax.random.key(0)), ("lora_b", "lora_magnitude_vector"))
    module = get_module(params, "attn.query")
    w0, a, b = (np.asarray(module[k], np.float64) for k in ("kernel", "lora_a", "lora_b"))
    m = np.asarray(module["lora_magnitude_vector"], np.float64)
    direction = w0 + 2.0 * a @ b
    want = direction * (m / np.linalg.norm(direction, axis=0))  # per output feature: over axis 0 of (in, out)
    got = method_of(config).effective_kernel(config, "attn.query", module, (12, 20))
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())


@pytest.mark.parametrize(
    "config",
    [VeraConfig(target_modules=["query", "value"], r=4), DoraConfig(target_modules=["query", "value"], r=2)],
    ids=["vera", "dora"],
)
def test_identity_at_init_merge_and_checkpoint(tmp_path, config):
    import flax.linen as nn

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(8, name="value")(jnp.tanh(nn.Dense(20, name="query")(x))[..., :12])

    x = jnp.asarray(RNG.standard_normal((3, 12)), jnp.float32)
    variables = Net().init(jax.random.key(0), x)
    base_out = Net().apply(variables, x)
    adapted = init_adapter(variables, config, jax.random.key(1))
    with intercept(config):
        np.testing.assert_allclose(Net().apply(adapted, x), base_out, atol=1e-5)  # starts at the base model
    trained_names = method_of(config).trained_leaves_for(config)
    trained = perturbed(adapted, trained_names)
    with intercept(config):
        out = Net().apply(trained, x)
    assert np.abs(out - base_out).max() > 1e-3
    np.testing.assert_allclose(Net().apply(merge_adapter(trained, config), x), out, atol=1e-5)
    mask = ff.trainable_mask(trained, config)
    flat_mask = {jax.tree_util.keystr(p): v for p, v in jax.tree_util.tree_leaves_with_path(mask)}
    assert {k.split("'")[-2] for k, v in flat_mask.items() if v} == set(trained_names)
    ff.save_adapter(tmp_path / "a", trained, config)
    loaded_config, loaded = ff.load_adapter(tmp_path / "a", variables)
    assert loaded_config == config
    chex.assert_trees_all_equal(loaded, trained)  # VeRA's frozen projections are rebuilt, not stored


def test_dora_cannot_be_unmerged():
    config = DoraConfig(target_modules=["query"], r=2)
    params = init_adapter(tree(), config, jax.random.key(0))
    with pytest.raises(ValueError, match="cannot be undone"):
        ff.unmerge_adapter(merge_adapter(params, config), params, config)


def test_bad_configs_name_the_fix():
    with pytest.raises(ValueError, match="r must be a positive int"):
        VeraConfig(target_modules=["query"], r=0)
    with pytest.raises(ValueError, match="bias must be"):
        DoraConfig(target_modules=["query"], bias="fourier_only")
    with pytest.raises(ValueError, match="matches none"):
        init_adapter(tree(), VeraConfig(target_modules=["key"]), jax.random.key(0))


# --- parity with PEFT on the real MiniLM -------------------------------------------------------------------------


def _torch_out(model, ids):
    import torch

    with torch.no_grad():
        return model(input_ids=torch.tensor(ids)).last_hidden_state.numpy()


IDS = np.random.default_rng(3).integers(1000, 20000, (2, 11))


@pytest.mark.torch
def test_vera_outputs_equal_peft(minilm2, minilm2_torch):
    import peft
    import torch

    model, base = minilm2
    torch.manual_seed(0)
    reference = peft.get_peft_model(
        copy.deepcopy(minilm2_torch), peft.VeraConfig(target_modules=["query", "value"], r=16, init_weights=False)
    ).eval()
    config = VeraConfig(target_modules=["query", "value"], r=16, init_weights=False)
    params = init_adapter(base, config, jax.random.key(0))
    for path in ff.adapter_module_paths(params):
        layer = reference.base_model.model.get_submodule(path)
        module = get_module(params, path)
        module["vera_lambda_d"] = jnp.asarray(layer.vera_lambda_d["default"].detach().numpy())
        module["vera_lambda_b"] = jnp.asarray(layer.vera_lambda_b["default"].detach().numpy())
        module["vera_A"] = jnp.asarray(layer.vera_A["default"][:, : layer.in_features].numpy())
        module["vera_B"] = jnp.asarray(layer.vera_B["default"][: layer.out_features].numpy())
    with intercept(config):
        ours = np.asarray(model(IDS, params=params).last_hidden_state)
    expected = _torch_out(reference, IDS)
    assert np.abs(_torch_out(minilm2_torch, IDS) - expected).max() > 1e-3  # the adapter matters
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4 * np.abs(expected).max())


@pytest.mark.torch
def test_dora_outputs_and_gradients_equal_peft(minilm2, minilm2_torch):
    """Same weights in both; PEFT's DoRA detaches the column norm, and so must the gradients here."""
    import peft
    import torch

    model, base = minilm2
    reference = peft.get_peft_model(
        copy.deepcopy(minilm2_torch),
        peft.LoraConfig(target_modules=["query", "value"], r=4, lora_alpha=8, use_dora=True, lora_dropout=0.0),
    ).eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in reference.named_parameters():
            if "lora_B" in name or "lora_magnitude" in name:
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
    config = DoraConfig(target_modules=["query", "value"], r=4, lora_alpha=8.0)
    params = init_adapter(base, config, jax.random.key(0))
    for path in ff.adapter_module_paths(params):
        layer = reference.base_model.model.get_submodule(path)
        module = get_module(params, path)
        module["lora_a"] = jnp.asarray(layer.lora_A["default"].weight.detach().numpy().T)
        module["lora_b"] = jnp.asarray(layer.lora_B["default"].weight.detach().numpy().T)
        module["lora_magnitude_vector"] = jnp.asarray(layer.lora_magnitude_vector["default"].weight.detach().numpy())
    weights = np.random.default_rng(4).standard_normal((2, 11, 384)).astype(np.float32)

    def loss(params):
        with intercept(config):
            return jnp.sum(model(IDS, params=params).last_hidden_state * weights)

    value, grads = jax.value_and_grad(loss)(params)
    out = reference(input_ids=torch.tensor(IDS)).last_hidden_state
    torch_loss = (out * torch.tensor(weights)).sum()
    torch_loss.backward()
    assert abs(float(value) - torch_loss.item()) <= 1e-4 * abs(torch_loss.item())
    for path in ff.adapter_module_paths(params):
        layer = reference.base_model.model.get_submodule(path)
        got = get_module(grads, path)
        pairs = {
            "lora_a": layer.lora_A["default"].weight.grad.numpy().T,
            "lora_b": layer.lora_B["default"].weight.grad.numpy().T,
            "lora_magnitude_vector": layer.lora_magnitude_vector["default"].weight.grad.numpy(),
        }
        for name, want in pairs.items():
            np.testing.assert_allclose(got[name], want, rtol=0, atol=2e-4 * np.abs(want).max() + 1e-7, err_msg=name)


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["lora", "dora", "vera"])
def test_our_exports_load_in_peft_with_our_outputs(tmp_path, minilm2, minilm2_torch, kind):
    """export_peft for LoRA, DoRA (PEFT's use_dora) and VeRA (with its shared projections): PEFT loads the files
    and computes our outputs."""
    import peft

    model, base = minilm2
    config = {
        "lora": ff.LoraConfig(target_modules=["query", "value"], r=4, lora_alpha=8.0),
        "dora": DoraConfig(target_modules=["query", "value"], r=4, lora_alpha=8.0),
        "vera": VeraConfig(target_modules=["query", "intermediate.dense"], r=16, projection_prng_key=7),
    }[kind]
    trained = method_of(config).trained_leaves_for(config)
    params = perturbed(init_adapter(base, config, jax.random.key(0)), trained, scale=0.05)
    with intercept(config):
        ours = np.asarray(model(IDS, params=params).last_hidden_state)
    assert np.abs(ours - _torch_out(minilm2_torch, IDS)).max() > 1e-3
    ff.export_peft(params, config, tmp_path)
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(minilm2_torch), str(tmp_path)).eval()
    np.testing.assert_allclose(_torch_out(loaded, IDS), ours, rtol=0, atol=1e-4 * np.abs(ours).max())


@pytest.mark.torch
@pytest.mark.parametrize("kind", ["lora", "dora", "vera"])
def test_peft_saved_adapters_import_with_peft_outputs(tmp_path, minilm2, minilm2_torch, kind):
    """import_peft of real PEFT LoRA / DoRA / VeRA files (VeRA with PEFT's own saved projections)."""
    import peft
    import torch

    model, base = minilm2
    torch.manual_seed(0)
    peft_config = {
        "lora": peft.LoraConfig(target_modules=["query", "value"], r=4, lora_alpha=8),
        "dora": peft.LoraConfig(target_modules=["query", "value"], r=4, lora_alpha=8, use_dora=True),
        "vera": peft.VeraConfig(target_modules=["query", "intermediate.dense"], r=16, init_weights=False),
    }[kind]
    reference = peft.get_peft_model(copy.deepcopy(minilm2_torch), peft_config).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _name, p in reference.named_parameters():
            if p.requires_grad:
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
    reference.save_pretrained(tmp_path)
    config, params = ff.import_peft(tmp_path, base)
    assert type(config) is {"lora": ff.LoraConfig, "dora": DoraConfig, "vera": VeraConfig}[kind]
    with intercept(config):
        ours = np.asarray(model(IDS, params=params).last_hidden_state)
    expected = _torch_out(reference, IDS)
    assert np.abs(expected - _torch_out(minilm2_torch, IDS)).max() > 1e-3
    np.testing.assert_allclose(ours, expected, rtol=0, atol=1e-4 * np.abs(expected).max())
