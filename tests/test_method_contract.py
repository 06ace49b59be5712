"""Every registered adapter method through the same contract: a new method is one row of :data:`ROWS`.

Each row gives a small config for a two-layer model (``query`` 12 → 20, ``value`` 12 → 8) and the trainable
parameter count per layer, worked out by hand from the method's paper formula (not read from the library). The
checks: the registry and the table name the same methods; the trained leaves hold exactly that many floats and
``parameter_count`` agrees; the adapter is the identity at initialisation where the method starts at ΔW = 0;
a merged model computes what the adapted one does and an unmerge restores the pretrained kernels (or is refused
for a method that rescales W0); orbax checkpoints and PEFT files round-trip (or PEFT export is refused with the
reason); and flax.nnx surgery gives the same leaves and outputs as the linen interceptor.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx, traverse_util

import fourier_flax as ff
import fourier_flax.nnx as ffnnx
from fourier_flax.bank import AdapterBank, adapter_ids
from fourier_flax.methods import METHODS, method_of
from fourier_flax.methods.fourierft import spectral_entries

IN, OUTS = 12, {"query": 20, "value": 8}
TARGETS = ("query", "value")
X = jnp.asarray(np.random.default_rng(0).standard_normal((5, IN)), jnp.float32)


@dataclasses.dataclass(frozen=True)
class Row:
    config: Any
    params_per_layer: dict[str, int]  # by hand, from the method's formula, for (12, 20) and (12, 8)
    identity_at_init: bool
    # The config field a ``scaling=`` override stands for and its divisor (LoRA's lora_alpha / r); None: refused.
    scale: tuple[str, int] | None


def _svft_banded(k: int, d: int) -> int:
    """SVFT's banded pattern on k singular values: the diagonal and d bands on each side."""
    return k + 2 * sum(k - j for j in range(1, d + 1))


ROWS = {
    "fourierft": Row(
        ff.FourierFTConfig(target_modules=TARGETS, n_frequency=30, scaling=20.0),
        {"query": 30, "value": 30},
        False,
        ("scaling", 1),
    ),
    "fourierft-zeros": Row(
        ff.FourierFTConfig(target_modules=TARGETS, n_frequency=30, scaling=20.0, init_weights=True),
        {"query": 30, "value": 30},
        True,
        ("scaling", 1),
    ),
    # LoRA: r·(d1 + d2)
    "lora": Row(
        ff.LoraConfig(target_modules=TARGETS, r=2, lora_alpha=4.0), {"query": 64, "value": 40}, True, ("lora_alpha", 2)
    ),
    # DoRA: LoRA's plus one magnitude per output feature
    "dora": Row(
        ff.DoraConfig(target_modules=TARGETS, r=2, lora_alpha=4.0), {"query": 84, "value": 48}, True, ("lora_alpha", 2)
    ),
    # VeRA: r (λ_d) + d_out (λ_b); the shared projections are frozen
    "vera": Row(ff.VeraConfig(target_modules=TARGETS, r=4), {"query": 24, "value": 12}, True, None),
    # FLoRA on a 2-mode kernel: the r × r core plus d_k · r per mode
    "flora": Row(
        ff.FloraConfig(target_modules=TARGETS, r=2), {"query": 4 + 24 + 40, "value": 4 + 24 + 16}, True, ("scale", 1)
    ),
    # SVFT banded, d = 2, on min(d1, d2) singular values
    "svft": Row(
        ff.SvftConfig(target_modules=TARGETS, pattern="banded", off_diag=2),
        {"query": _svft_banded(12, 2), "value": _svft_banded(8, 2)},
        True,
        None,
    ),
}


class LinenNet(nn.Module):
    @nn.compact
    def __call__(self, x):
        return jnp.concatenate([nn.Dense(OUTS[name], name=name)(x) for name in TARGETS], axis=-1)


class NnxNet(nnx.Module):
    def __init__(self, params):
        for name in TARGETS:
            layer = nnx.Linear(IN, OUTS[name], rngs=nnx.Rngs(0))
            layer.kernel.value = jnp.asarray(params[name]["kernel"])
            layer.bias.value = jnp.asarray(params[name]["bias"])
            setattr(self, name, layer)

    def __call__(self, x):
        return jnp.concatenate([getattr(self, name)(x) for name in TARGETS], axis=-1)


def base_params():
    params = LinenNet().init(jax.random.key(0), X)["params"]
    rng = np.random.default_rng(1)  # non-zero biases, so a dropped bias would show
    return jax.tree.map(lambda x: jnp.asarray(x + 0.1 * rng.standard_normal(x.shape), jnp.float32), params)


def adapted_output(params, config):
    with ff.intercept(config):
        return LinenNet().apply({"params": params}, X)


def trained(params, config):
    """The adapted tree with every trained adapter leaf moved away from its initial value."""
    names = set(method_of(config).trained_leaves_for(config))
    rng = np.random.default_rng(2)
    return jax.tree_util.tree_map_with_path(
        lambda path, x: x + 0.2 * rng.standard_normal(np.shape(x)).astype(np.float32) if path[-1].key in names else x,
        params,
    )


def adapter_leaves(params):
    return {
        key: np.asarray(value)
        for key, value in traverse_util.flatten_dict(params).items()
        if key[-1] not in ("kernel", "bias")
    }


@pytest.fixture(params=sorted(ROWS), ids=sorted(ROWS))
def row(request) -> Row:
    return ROWS[request.param]


def test_the_table_has_a_row_for_every_registered_method():
    assert {method.name for method in METHODS} == {method_of(r.config).name for r in ROWS.values()}


def test_trainable_parameters_match_the_method_formula(row):
    config = row.config
    params = ff.init_adapter(base_params(), config, jax.random.key(3), check_scale=False)
    method = method_of(config)
    for name in TARGETS:
        module = params[name]
        stored = sum(np.size(module[leaf]) for leaf in method.trained_leaves_for(config) if leaf in module)
        assert stored == row.params_per_layer[name], name
        assert method.parameter_count(config, name, (IN, OUTS[name])) == row.params_per_layer[name], name


def test_identity_at_initialisation_where_the_method_starts_at_zero(row):
    base = base_params()
    params = ff.init_adapter(base, row.config, jax.random.key(3), check_scale=False)
    plain = LinenNet().apply({"params": base}, X)
    moved = np.abs(np.asarray(adapted_output(params, row.config) - plain)).max()
    if row.identity_at_init:
        assert moved < 1e-5
    else:
        assert moved > 1e-3


def test_merge_computes_the_adapted_model_and_unmerge_restores_the_kernels(row):
    config = row.config
    base = base_params()
    params = trained(ff.init_adapter(base, config, jax.random.key(3), check_scale=False), config)
    adapted = adapted_output(params, config)
    assert np.abs(np.asarray(adapted - LinenNet().apply({"params": base}, X))).max() > 1e-3
    merged = ff.merge_adapter(params, config)
    assert adapter_leaves(merged) == {}  # the base model's exact tree
    np.testing.assert_allclose(LinenNet().apply({"params": merged}, X), adapted, rtol=0, atol=1e-4)
    if not method_of(config).additive:
        with pytest.raises(ValueError, match="cannot be undone"):
            ff.unmerge_adapter(merged, params, config)
        return
    restored = ff.unmerge_adapter(merged, params, config)
    for name in TARGETS:
        np.testing.assert_allclose(restored[name]["kernel"], base[name]["kernel"], rtol=0, atol=1e-5)


def test_orbax_checkpoints_round_trip(row, tmp_path):
    config = row.config
    base = base_params()
    params = trained(ff.init_adapter(base, config, jax.random.key(3), check_scale=False), config)
    ff.save_adapter(tmp_path / "ckpt", params, config)
    loaded_config, loaded = ff.load_adapter(tmp_path / "ckpt", base)
    assert loaded_config == config
    want, got = adapter_leaves(params), adapter_leaves(loaded)
    assert want.keys() == got.keys()
    for key in want:
        np.testing.assert_array_equal(got[key], want[key])
    np.testing.assert_allclose(adapted_output(loaded, config), adapted_output(params, config), rtol=0, atol=1e-6)


def test_peft_files_round_trip_or_are_refused_with_the_reason(row, tmp_path):
    config = row.config
    base = base_params()
    params = trained(ff.init_adapter(base, config, jax.random.key(3), check_scale=False), config)
    method = method_of(config)
    if method.peft_unsupported(config) is not None:
        with pytest.raises(ValueError, match="PEFT"):
            ff.export_peft(params, config, tmp_path / "peft")
        return
    ff.export_peft(params, config, tmp_path / "peft")
    loaded_config, loaded = ff.import_peft(tmp_path / "peft", base)
    assert type(loaded_config) is type(config)
    np.testing.assert_allclose(adapted_output(loaded, loaded_config), adapted_output(params, config), rtol=0, atol=1e-5)


def test_nnx_surgery_equals_the_linen_interceptor(row):
    config = row.config
    base = base_params()
    linen_params = ff.init_adapter(base, config, jax.random.key(3), check_scale=False)
    model = NnxNet(base)
    assert ffnnx.apply_adapter(model, config, jax.random.key(3)) == list(TARGETS)
    nnx_leaves = adapter_leaves(ffnnx.adapter_params(model))
    want = adapter_leaves(linen_params)
    assert nnx_leaves.keys() == want.keys()
    for key in want:  # same key, same paths: the same initial leaves
        np.testing.assert_array_equal(nnx_leaves[key], want[key])
    moved = trained(linen_params, config)
    functional = NnxNet(base)  # the functional path: given leaves installed on a pretrained model
    ffnnx.install_leaves(functional, config, moved)
    np.testing.assert_allclose(functional(X), adapted_output(moved, config), rtol=0, atol=1e-5)


def test_a_scaling_override_stands_for_the_scale_factor_or_is_refused(row):
    """``scaling=`` (traced under jit) on the linen interceptor and on NNX leaves computes what the config with
    that scale factor computes; a method without one (VeRA, SVFT) refuses it on both paths."""
    config = row.config
    base = base_params()
    params = trained(ff.init_adapter(base, config, jax.random.key(3), check_scale=False), config)

    @jax.jit
    def linen_with(scaling):
        with ff.intercept(config, scaling=scaling):
            return LinenNet().apply({"params": params}, X)

    if row.scale is None:
        with pytest.raises(ValueError, match=f"{type(config).__name__} has no scale factor"):
            linen_with(2.0)
        with pytest.raises(ValueError, match="pass scaling=None"):
            ffnnx.install_leaves(NnxNet(base), config, params, scaling=2.0)
        return
    field, divisor = row.scale
    tripled = dataclasses.replace(config, **{field: 3 * getattr(config, field)})
    want = adapted_output(params, tripled)
    assert np.abs(np.asarray(want - adapted_output(params, config))).max() > 1e-3
    override = 3 * getattr(config, field) / divisor
    np.testing.assert_allclose(linen_with(override), want, rtol=0, atol=1e-5)
    model = NnxNet(base)
    ffnnx.install_leaves(model, config, params, scaling=jnp.float32(override))
    np.testing.assert_allclose(model(X), want, rtol=0, atol=1e-5)

    @jax.jit
    def nnx_with(scaling):  # the functional loop: a fresh model, the leaves and a traced scale installed
        model = NnxNet(base)
        ffnnx.install_leaves(model, config, params, scaling=scaling)
        return model(X)

    np.testing.assert_allclose(nnx_with(override), want, rtol=0, atol=1e-5)


def test_linen_and_nnx_layers_reach_the_method_matmul_through_the_same_call(monkeypatch):
    """One adapted-call path: a linen nn.Dense and an nnx.Linear hand the method the same stored kernel, leaves,
    compute dtype and layout, and add the bias the same way (FourierFT's spectral backward is such a matmul)."""
    config = ff.FourierFTConfig(target_modules=TARGETS, n_frequency=30, scaling=20.0, backward="spectral")
    method = method_of(config)
    calls = []
    real_matmul = type(method).matmul

    def spy(self, config, alpha, path, params, x, **kwargs):
        calls.append((path, {k: np.asarray(v) for k, v in params.items()}, kwargs["dtype"], kwargs["transposed"]))
        return real_matmul(self, config, alpha, path, params, x, **kwargs)

    monkeypatch.setattr(type(method), "matmul", spy)
    base = base_params()
    params = trained(ff.init_adapter(base, config, jax.random.key(3)), config)
    linen_out = adapted_output(params, config)
    linen_calls, calls[:] = list(calls), []
    model = NnxNet(base)
    ffnnx.install_leaves(model, config, params)
    nnx_out = model(X)
    assert [c[0] for c in linen_calls] == [c[0] for c in calls] == list(TARGETS)
    for (_, linen_params, *linen_rest), (_, nnx_params, *nnx_rest) in zip(linen_calls, calls, strict=True):
        assert linen_rest == nnx_rest == [None, False]
        assert linen_params.keys() == nnx_params.keys() == {"kernel", "fourierft_spectrum"}
        for key in linen_params:
            np.testing.assert_array_equal(linen_params[key], nnx_params[key])
    # independently: x @ (W0 + ΔW) + b with ΔW from a float64 NumPy inverse DFT of the spectrum at its entries
    for name, out in zip(TARGETS, np.split(np.asarray(linen_out), [OUTS["query"]], axis=-1), strict=True):
        module = params[name]
        shape = np.shape(module["kernel"])
        entries = np.asarray(spectral_entries(config, shape, 30))
        spectrum = np.zeros(shape, np.complex128)
        spectrum[entries[0], entries[1]] = np.asarray(module["fourierft_spectrum"], np.float64)
        kernel = np.asarray(module["kernel"], np.float64) + np.fft.ifft2(spectrum).real * 20.0
        want = np.asarray(X, np.float64) @ kernel + np.asarray(module["bias"], np.float64)
        np.testing.assert_allclose(out, want, rtol=0, atol=1e-5 * np.abs(want).max())
    np.testing.assert_allclose(nnx_out, linen_out, rtol=0, atol=1e-6)


def test_a_matmul_only_method_refuses_layers_that_are_not_plain_matmuls_on_linen_and_nnx():
    config = AdapterBank(ff.LoraConfig(target_modules=["query"], r=2), num_adapters=2)

    class LinenGeneral(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.DenseGeneral(4, name="query")(x)

    params = LinenGeneral().init(jax.random.key(0), X)["params"]
    params = ff.init_adapter(params, config, jax.random.key(1))
    with ff.intercept(config), adapter_ids(jnp.zeros(5, jnp.int32)):
        with pytest.raises(ValueError, match="'query' is not a plain x @ kernel layer; bank runs on plain"):
            LinenGeneral().apply({"params": params}, X)

    class NnxGeneral(nnx.Module):
        def __init__(self):
            self.query = nnx.LinearGeneral(IN, 4, rngs=nnx.Rngs(0))

        def __call__(self, x):
            return self.query(x)

    model = NnxGeneral()
    ffnnx.apply_adapter(model, config, jax.random.key(1))
    with adapter_ids(jnp.zeros(5, jnp.int32)):
        with pytest.raises(ValueError, match="'query' is not a plain x @ kernel layer; bank runs on plain"):
            model(X)


def test_the_protocol_names_what_a_new_method_must_implement():
    from fourier_flax.methods.base import AdapterFiles, AdapterMethod, Execution, UpdateRule

    assert UpdateRule.__abstractmethods__ == {"init_leaves", "delta_w", "parameter_count"}
    assert AdapterFiles.__abstractmethods__ == {"module_record", "record_problems"}
    assert not getattr(Execution, "__abstractmethods__", ())  # every execution member has a working default

    class Incomplete(AdapterMethod):
        name, config_type, leaf_names, leaf_ndim = "half", object, ("half_leaf",), 1

        def init_leaves(self, config, path, view, stack_shape, rng, *, kernel, modes, shared=None):
            return {}

    with pytest.raises(TypeError, match="delta_w"):
        Incomplete()
    for method in METHODS:  # a method PEFT has also writes and reads PEFT's per-module tensors
        if method.peft_type is not None:
            assert type(method).peft_module_tensors is not AdapterMethod.peft_module_tensors, method.name
            assert type(method).leaves_from_peft is not AdapterMethod.leaves_from_peft, method.name
