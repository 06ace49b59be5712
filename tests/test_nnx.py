"""fourier_flax.nnx: surgery on flax.nnx models (Linear, LinearGeneral, Einsum, Conv, scanned layers), AdapterParam
filters, identity at zero init, merge == adapted, unmerge, sharding metadata, checkpoints and PEFT files."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

import fourier_flax.nnx as ffnnx
from fourier_flax import DoraConfig, FloraConfig, FourierFTConfig, LoraConfig, SvftConfig, VeraConfig
from fourier_flax.methods.fourierft import spectral_entries
from fourier_flax.nnx import AdaptedModule, AdapterParam, apply_adapter, merge_adapter, unmerge_adapter


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
    assert isinstance(model.layers[0].query, AdaptedModule) and not isinstance(model.layers[0].out, AdaptedModule)
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
    with pytest.raises(ValueError, match=r"matches none of the model's nnx.Linear.*layers:\n.*layers.0.out"):
        apply_adapter(Net(nnx.Rngs(0)), FourierFTConfig(target_modules=["key"]), nnx.Rngs(1))


class Kinds(nnx.Module):
    """One layer of each supported kind, chained: (B, T, 8) -> (B, T, 2, 6, 5)."""

    def __init__(self, rngs):
        self.lin = nnx.Linear(8, 12, rngs=rngs)
        self.gen = nnx.LinearGeneral((3, 4), (2, 6), axis=(-2, -1), rngs=rngs)
        self.ein = nnx.Einsum("btd,dnh->btnh", (12, 3, 4), (3, 4), rngs=rngs)
        self.perm = nnx.Einsum("btd,ndh->btnh", (3, 12, 4), (3, 4), rngs=rngs)  # input axis in the middle
        self.conv = nnx.Conv(6, 4, (3, 3), feature_group_count=2, rngs=rngs)  # grouped: kernel (3, 3, 3, 4)

    def __call__(self, x):
        h = self.lin(x)
        g = self.gen(h.reshape(*h.shape[:2], 3, 4)).reshape(*h.shape[:2], 12)
        e = (self.ein(g) + self.perm(g)).reshape(*g.shape[:2], 2, 6)
        return self.conv(e)


KINDS = ["lin", "gen", "ein", "perm", "conv"]
IN_AXES = {"gen": 2, "conv": 3}
XK = jnp.asarray(np.random.default_rng(1).standard_normal((2, 4, 8)), jnp.float32)


def _numpy_delta(config, layer: AdaptedModule) -> np.ndarray:
    """float64 ΔW = alpha/(d1 d2) Σ c cos(2π(p u/d1 + q v/d2)) on the canonical view, put back in the kernel's
    layout by hand (not by the code under test)."""
    kernel = np.asarray(layer.base.kernel[...])
    in_axes = {"lin": [0], "gen": [0, 1], "ein": [0], "perm": [1], "conv": [0, 1, 2]}[layer.path]
    out_axes = [a for a in range(kernel.ndim) if a not in in_axes]
    canonical = np.transpose(kernel, in_axes + out_axes)
    d1 = int(np.prod(canonical.shape[: len(in_axes)]))
    d2 = canonical.size // d1
    c = np.asarray(layer.adapter["fourierft_spectrum"][...], np.float64)
    u, v = spectral_entries(config, (d1, d2), c.size)
    p, q = np.arange(d1)[:, None, None], np.arange(d2)[None, :, None]
    delta = config.scaling / (d1 * d2) * np.sum(c * np.cos(2 * np.pi * (p * u / d1 + q * v / d2)), axis=-1)
    return np.transpose(delta.reshape(canonical.shape), np.argsort(in_axes + out_axes))


def test_every_layer_kind_runs_the_update_of_its_canonical_view():
    config = FourierFTConfig(target_modules=KINDS, n_frequency=10, scaling=30.0, kernel_in_axes=IN_AXES)
    model = Kinds(nnx.Rngs(0))
    assert apply_adapter(model, config, jax.random.key(1)) == sorted(KINDS)
    for name in KINDS:
        layer = getattr(model, name)
        want = np.asarray(layer.base.kernel[...], np.float64) + _numpy_delta(config, layer)
        np.testing.assert_allclose(layer.effective_kernel(), want, rtol=0, atol=1e-5 * np.abs(want).max())
    # The adapted model equals the plain model holding W0 + ΔW (built here by hand).
    adapted_out = model(XK)
    plain = Kinds(nnx.Rngs(0))
    for name in KINDS:
        getattr(plain, name).kernel.value = jnp.asarray(
            np.asarray(getattr(plain, name).kernel[...], np.float64) + _numpy_delta(config, getattr(model, name)),
            jnp.float32,
        )
    np.testing.assert_allclose(adapted_out, plain(XK), rtol=0, atol=1e-4 * np.abs(adapted_out).max())


def _base(model, name):
    layer = getattr(model, name)
    return layer.base if isinstance(layer, AdaptedModule) else layer


@pytest.mark.parametrize(
    "config",
    [
        LoraConfig(target_modules=KINDS, r=2, kernel_in_axes=IN_AXES),
        DoraConfig(target_modules=["lin", "gen", "ein", "perm"], r=2, kernel_in_axes=IN_AXES),
        FourierFTConfig(target_modules=KINDS, n_frequency=10, scaling=30.0, init_weights=True, kernel_in_axes=IN_AXES),
        FloraConfig(target_modules=KINDS, r=2, kernel_in_axes=IN_AXES),
        SvftConfig(target_modules=["lin", "gen", "ein", "perm"], kernel_in_axes=IN_AXES),
    ],
    ids=["lora", "dora", "fourierft-zeros", "flora", "svft"],
)
def test_identity_at_zero_init_gradients_merge_and_unmerge(config):
    model = Kinds(nnx.Rngs(0))
    base_out = model(XK)
    kernels = {name: np.asarray(getattr(model, name).kernel[...]) for name in KINDS}
    apply_adapter(model, config, jax.random.key(1))
    np.testing.assert_allclose(model(XK), base_out, atol=1e-6)
    optimizer = nnx.Optimizer(model, optax.adam(0.05), wrt=AdapterParam)

    @nnx.jit
    def step(model, optimizer):
        loss, grads = nnx.value_and_grad(
            lambda m: jnp.mean((m(XK) - 1.0) ** 2), argnums=nnx.DiffState(0, AdapterParam)
        )(model)
        optimizer.update(model, grads)
        return loss

    losses = [float(step(model, optimizer)) for _ in range(4)]
    assert losses[-1] < losses[0]
    for name in KINDS:
        np.testing.assert_array_equal(_base(model, name).kernel[...], kernels[name])
    adapted = model(XK)
    assert np.abs(adapted - base_out).max() > 1e-4
    merge_adapter(model, unload=False)
    np.testing.assert_allclose(model(XK), adapted, rtol=0, atol=1e-5 * np.abs(adapted).max())
    if isinstance(config, DoraConfig):
        with pytest.raises(ValueError, match="rescales W0, so its merge cannot be undone"):
            unmerge_adapter(model)
        return
    unmerge_adapter(model)
    for name in KINDS:
        np.testing.assert_allclose(_base(model, name).kernel[...], kernels[name], rtol=0, atol=1e-6)
    merge_adapter(model)
    assert all(type(getattr(model, name)) in ffnnx.SUPPORTED for name in KINDS)
    np.testing.assert_allclose(model(XK), adapted, rtol=0, atol=1e-5 * np.abs(adapted).max())


class Scanned(nnx.Module):
    """Three blocks created by nnx.vmap (stacked kernels (3, 16, 16)) and run by nnx.scan."""

    def __init__(self, rngs):
        @nnx.split_rngs(splits=3)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def create(rngs):
            return Block(rngs)

        self.blocks = create(rngs)

    def __call__(self, x):
        @nnx.scan(in_axes=(nnx.Carry, 0), out_axes=nnx.Carry)
        def body(x, block):
            y = block(x)
            return jnp.concatenate([y] * 4, axis=-1)

        return body(x, self.blocks)


def test_scanned_layers_get_stacked_leaves_and_match_the_unrolled_model():
    model = Scanned(nnx.Rngs(0))
    config = FourierFTConfig(target_modules=["query", "value"], n_frequency=12, scaling=20.0)
    apply_adapter(model, config, jax.random.key(2), stacked_axes={"blocks": 1})
    assert model.blocks.query.adapter["fourierft_spectrum"][...].shape == (3, 12)
    got = nnx.jit(lambda m, x: m(x))(model, X)
    weights = {
        name: getattr(model.blocks, name).effective_kernel()
        for name in ("query", "value", "out")
        if isinstance(getattr(model.blocks, name), AdaptedModule)
    }
    assert weights["query"].shape == (3, 16, 16)
    h = X
    for layer in range(3):
        q = h @ weights["query"][layer] + model.blocks.query.base.bias[...][layer]
        v = h @ weights["value"][layer] + model.blocks.value.base.bias[...][layer]
        y = (jnp.tanh(q) * v) @ model.blocks.out.kernel[...][layer] + model.blocks.out.bias[...][layer]
        h = jnp.concatenate([y] * 4, axis=-1)
    np.testing.assert_allclose(got, h, rtol=0, atol=1e-5 * np.abs(h).max())
    grads = nnx.grad(lambda m: jnp.sum(m(X) ** 2), argnums=nnx.DiffState(0, AdapterParam))(model)
    assert set(jax.tree.leaves(jax.tree.map(lambda g: g.shape, grads))) <= {3, 12}


def test_adapter_variables_carry_the_shardings_the_kernel_implies():
    with nnx.use_eager_sharding(False):
        model = Block(nnx.Rngs(0))
        for name, spec in (("query", (None, "model")), ("value", ("model", None))):
            getattr(model, name).kernel.set_metadata(out_sharding=spec)
    apply_adapter(model, DoraConfig(target_modules=["query", "value"], r=2), jax.random.key(0))
    specs = nnx.get_partition_spec(nnx.state(model, AdapterParam))
    query, value = specs["query"]["adapter"], specs["value"]["adapter"]
    assert query["lora_a"].value == jax.sharding.PartitionSpec(None, None)
    assert query["lora_b"].value == jax.sharding.PartitionSpec(None, "model")
    assert query["lora_magnitude_vector"].value == jax.sharding.PartitionSpec("model")
    assert value["lora_a"].value == jax.sharding.PartitionSpec("model", None)
    assert value["lora_b"].value == jax.sharding.PartitionSpec(None, None)
    spectra = Block(nnx.Rngs(0))
    with nnx.use_eager_sharding(False):
        spectra.query.kernel.set_metadata(out_sharding=(None, "model"))
    apply_adapter(spectra, FourierFTConfig(target_modules=["query"], n_frequency=8), jax.random.key(0))
    spectrum = nnx.get_partition_spec(nnx.state(spectra, AdapterParam))["query"]["adapter"]["fourierft_spectrum"]
    assert spectrum.value == jax.sharding.PartitionSpec(None)  # n floats, replicated


def test_errors_name_the_kind_and_the_fix():
    class WithNorm(nnx.Module):
        def __init__(self, rngs):
            self.query = nnx.Linear(4, 4, rngs=rngs)
            self.query_norm = nnx.LayerNorm(4, rngs=rngs)

    with pytest.raises(ValueError, match=r"query_norm \(LayerNorm\).*nnx.Linear, nnx.LinearGeneral"):
        apply_adapter(WithNorm(nnx.Rngs(0)), LoraConfig(target_modules=["query", "query_norm"]), jax.random.key(0))
    with pytest.raises(ValueError, match=r"2 input axes.*kernel_in_axes=\{'gen': 2\}"):
        apply_adapter(Kinds(nnx.Rngs(0)), FourierFTConfig(target_modules=["gen"], n_frequency=4), jax.random.key(0))
    model = Kinds(nnx.Rngs(0))
    apply_adapter(model, LoraConfig(target_modules=["lin"], r=2), jax.random.key(0))
    with pytest.raises(ValueError, match="already has adapted layers"):
        apply_adapter(model, LoraConfig(target_modules=["ein"], r=2), jax.random.key(0))


def test_orbax_checkpoints_round_trip_and_refuse_another_base(tmp_path):
    config = FourierFTConfig(target_modules=["query", "value"], n_frequency=30, scaling=5.0, modules_to_save=["out"])
    model = Net(nnx.Rngs(0))
    apply_adapter(model, config, jax.random.key(4))
    for block in model.layers:  # a trained head (modules_to_save) travels with the adapter
        block.out.kernel.value = block.out.kernel[...] + 0.1
    ffnnx.save_adapter(tmp_path / "ckpt", model)
    fresh = Net(nnx.Rngs(0))
    assert ffnnx.load_adapter(tmp_path / "ckpt", fresh) == [
        f"layers.{i}.{m}" for i in (0, 1) for m in ("query", "value")
    ]
    np.testing.assert_array_equal(fresh(X), model(X))
    from fourier_flax.checkpoint import AdapterMismatchError

    class Wider(nnx.Module):
        def __init__(self, rngs):
            self.layers = nnx.List([Block(rngs)])
            self.layers[0].query = nnx.Linear(16, 32, rngs=rngs)

    with pytest.raises(AdapterMismatchError, match="layers.0.query"):
        ffnnx.load_adapter(tmp_path / "ckpt", Wider(nnx.Rngs(0)))
