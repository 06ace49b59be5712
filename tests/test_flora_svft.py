"""FLoRA and SVFT on the method protocol, and FourierFT on conv kernels: float64 references, gradients, identity at
init, merged == adapted (Dense, DenseGeneral, Conv incl. grouped and depthwise), checkpoints, and bad input."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import fourier_flax as ff
import fourier_flax.adapted_modules
from fourier_flax import FloraConfig, FourierFTConfig, SvftConfig, init_adapter, intercept, merge_adapter
from fourier_flax.methods import fourierft, method_of
from fourier_flax.methods.svft import banded_count, pattern_positions
from fourier_flax.module_paths import get_module


def randomize(params, names, scale=0.2, seed=1):
    rng = np.random.default_rng(seed)
    return jax.tree_util.tree_map_with_path(
        lambda path, x: (
            x + scale * rng.standard_normal(x.shape).astype(np.float32)
            if str(path[-1].key).startswith(tuple(names))
            else x
        ),
        params,
    )


class Net(nn.Module):
    """Dense, DenseGeneral (3-D kernel), a conv, a grouped conv and a depthwise conv."""

    @nn.compact
    def __call__(self, x):  # x (B, 8, 8, 4)
        h = nn.Conv(8, (3, 3), name="conv")(x)
        h = nn.Conv(8, (3, 3), feature_group_count=2, name="grouped")(jnp.tanh(h))
        h = nn.Conv(8, (3, 3), feature_group_count=8, name="depthwise")(jnp.tanh(h))
        h = nn.DenseGeneral((2, 6), name="general")(jnp.tanh(h).mean((1, 2)))
        return nn.Dense(5, name="dense")(h.reshape(h.shape[0], -1))


X = jnp.asarray(np.random.default_rng(0).standard_normal((2, 8, 8, 4)), jnp.float32)


@pytest.fixture(scope="module")
def variables():
    return Net().init(jax.random.key(0), X)


def test_flora_delta_w_matches_float64_einsum(variables):
    config = FloraConfig(
        target_modules=["conv", "general", "dense"], r=3, spatial_r=2, scale=4.0, mode_ranks={"general": (3, 2, 4)}
    )
    params = randomize(init_adapter(variables, config, jax.random.key(0)), ("flora_core",))
    for path, modes in (("conv", (3, 3, 4, 8)), ("general", (8, 2, 6)), ("dense", (12, 5))):
        module = get_module(params, path)
        core = np.asarray(module["flora_core"], np.float64)
        factors = [np.asarray(module[f"flora_factor_{k}"], np.float64) for k in range(len(modes))]
        letters = "abcd"[: len(modes)]
        spec = (
            letters
            + ","
            + ",".join(f"{m}{c}" for m, c in zip("ABCD", letters, strict=False))
            + "->"
            + "ABCD"[: len(modes)]
        )
        want = 4.0 * np.einsum(spec, core, *factors)
        got = ff.adapted_modules.module_delta_w(config, path, module)
        assert got.shape == modes
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * np.abs(want).max())
    assert get_module(params, "conv")["flora_core"].shape == (3, 3, 3, 3)  # without conv=True every mode gets r


def test_flora_factor_init_and_count(variables):
    config = FloraConfig(target_modules=["dense"], r=4)
    big = {"params": {"dense": {"kernel": jnp.zeros((2000, 600))}}}
    module = get_module(init_adapter(big, config, jax.random.key(0)), "dense")
    assert float(np.std(module["flora_factor_0"])) == pytest.approx(1 / np.sqrt(8), rel=0.02)  # 1/sqrt(2 r)
    assert not np.any(module["flora_core"])
    assert method_of(config).parameter_count(config, "dense", (12, 5)) == 4 * 4 + 12 * 4 + 5 * 4


def test_flora_gradients(variables):
    config = FloraConfig(target_modules=["dense"], r=3, scale=2.0)
    module = dict(get_module(randomize(init_adapter(variables, config, jax.random.key(0)), ("flora",)), "dense"))

    def f(core, a0, a1):
        leaves = {**module, "flora_core": core, "flora_factor_0": a0, "flora_factor_1": a1}
        return method_of(config).delta_w(config, "dense", leaves, (12, 5))

    check_grads(
        f,
        (module["flora_core"], module["flora_factor_0"], module["flora_factor_1"]),
        order=1,
        modes="rev",
        atol=1e-2,
        rtol=1e-2,
    )


@pytest.mark.parametrize(
    "config",
    [
        FloraConfig(
            target_modules=["conv", "grouped", "depthwise", "general", "dense"],
            r=2,
            spatial_r=2,
            conv=False,
            mode_ranks={"depthwise": (2, 2, 1, 2), "grouped": (2, 2, 2, 2)},
        ),
        SvftConfig(target_modules=["dense"], pattern="banded", off_diag=1),
        FourierFTConfig(
            target_modules=["conv", "grouped", "depthwise"],
            n_frequency=20,
            scaling=5.0,
            kernel_in_axes={"conv": 3, "grouped": 3, "depthwise": 3},
        ),
    ],
    ids=["flora", "svft", "fourierft-conv"],
)
def test_identity_merge_and_checkpoint(tmp_path, variables, config):
    base = Net().apply(variables, X)
    adapted = init_adapter(variables, config, jax.random.key(0))
    if not isinstance(config, FourierFTConfig):  # both start at ΔW = 0
        with intercept(config):
            np.testing.assert_allclose(Net().apply(adapted, X), base, atol=1e-5)
    trained = randomize(adapted, ("flora_core", "svft_m", "fourierft_spectrum"), scale=0.5)
    with intercept(config):
        out = Net().apply(trained, X)
    assert np.abs(out - base).max() > 1e-4
    np.testing.assert_allclose(Net().apply(merge_adapter(trained, config), X), out, atol=2e-5)
    ff.save_adapter(tmp_path / "a", trained, config)
    _, loaded = ff.load_adapter(tmp_path / "a", variables)
    with intercept(config):
        np.testing.assert_allclose(Net().apply(loaded, X), out, atol=1e-6)


def test_flora_grouped_and_depthwise_shapes(variables):
    config = FloraConfig(
        target_modules=["grouped", "depthwise"], r=2, conv=True, spatial_r=2, mode_ranks={"depthwise": (2, 2, 1, 2)}
    )
    params = init_adapter(variables, config, jax.random.key(0))
    assert get_module(params, "grouped")["flora_core"].shape == (2, 2, 2, 2)  # kernel (3, 3, 4, 8): in/groups = 4
    assert get_module(params, "depthwise")["flora_factor_2"].shape == (1, 1)  # kernel (3, 3, 1, 8)
    with pytest.raises(ValueError, match=r"mode 2: rank 2 > size 1.*mode_ranks=\{'depthwise': \(2, 2, 1, 2\)\}"):
        init_adapter(variables, FloraConfig(target_modules=["depthwise"], r=2, conv=True), jax.random.key(0))


# --- SVFT ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("pattern", ["plain", "banded", "random", "top_k"])
def test_svft_delta_w_matches_float64(pattern):
    rng = np.random.default_rng(2)
    kernel = rng.standard_normal((10, 10)).astype(np.float32)
    tree = {"params": {"q": {"kernel": jnp.asarray(kernel)}}}
    config = SvftConfig(target_modules=["q"], pattern=pattern, off_diag=2, variant="code")
    module = get_module(randomize(init_adapter(tree, config, jax.random.key(0)), ("svft_m",)), "q")
    u, s, vt = np.linalg.svd(kernel.astype(np.float64))
    u_ours, v_ours = np.asarray(module["svft_u"], np.float64), np.asarray(module["svft_v"], np.float64)
    signs = np.sign((u_ours * u).sum(0))
    np.testing.assert_allclose(u_ours, u * signs, atol=1e-4)  # the same singular vectors, signs normalised
    np.testing.assert_allclose(v_ours, vt.T * signs, atol=1e-4)
    count = 10 if pattern == "plain" else banded_count(10, 2)
    assert module["svft_m"].shape == (count,) and count == (10 if pattern == "plain" else 10 * 5 - 6)
    rows, cols = pattern_positions(config, 10, "q", u_ours.T @ v_ours if pattern == "top_k" else None)
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == count  # distinct positions
    m = np.zeros((10, 10))
    gate = 1 / (1 + np.exp(-float(module["svft_gate"][0])))
    m[rows, cols] = np.asarray(module["svft_m"], np.float64) * gate
    want = u_ours @ m @ v_ours.T
    got = method_of(config).delta_w(config, "q", module, (10, 10))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    if pattern == "banded":
        assert np.all(np.abs(rows - cols) <= 2)


def test_svft_variants_and_errors():
    kernel = jnp.asarray(np.random.default_rng(3).standard_normal((12, 6)), jnp.float32)
    tree = {"params": {"q": {"kernel": kernel}}}
    paper = get_module(init_adapter(tree, SvftConfig(target_modules=["q"]), jax.random.key(0)), "q")
    assert not np.any(paper["svft_m"]) and "svft_gate" not in paper and paper["svft_u"].shape == (12, 6)
    code = get_module(init_adapter(tree, SvftConfig(target_modules=["q"], variant="code"), jax.random.key(0)), "q")
    assert np.std(code["svft_m"]) > 0 and float(code["svft_gate"][0]) == 0.0
    with pytest.raises(ValueError, match="off_diag=6 does not fit its 6 singular vectors"):
        init_adapter(tree, SvftConfig(target_modules=["q"], off_diag=6), jax.random.key(0))
    with pytest.raises(ValueError, match="pattern='top_k' ranks u_i·v_j, which needs a square"):
        init_adapter(tree, SvftConfig(target_modules=["q"], pattern="top_k"), jax.random.key(0))
    with pytest.raises(ValueError, match="pattern must be one of"):
        SvftConfig(target_modules=["q"], pattern="diagonal")


def test_svft_checkpoint_refuses_another_base(tmp_path):
    rng = np.random.default_rng(4)
    tree = {"params": {"q": {"kernel": jnp.asarray(rng.standard_normal((8, 8)), jnp.float32)}}}
    config = SvftConfig(target_modules=["q"], pattern="plain")
    ff.save_adapter(tmp_path / "a", init_adapter(tree, config, jax.random.key(0)), config)
    other = {"params": {"q": {"kernel": tree["params"]["q"]["kernel"] + 1e-3}}}
    with pytest.raises(
        ff.AdapterMismatchError, match="the base kernel differs from the one the adapter was trained on"
    ):
        ff.load_adapter(tmp_path / "a", other)


def test_fourierft_on_conv_matches_float64(variables, reference_delta_w):
    """FourierFT's conv view: the HWIO kernel as (kh·kw·in, out), i.e. the transpose of PEFT's open pull request's
    (out, in·kh·kw) up to the order of the flattened (kh, kw, in) axes."""
    config = FourierFTConfig(target_modules=["conv"], n_frequency=30, scaling=7.0, kernel_in_axes={"conv": 3})
    params = init_adapter(variables, config, jax.random.key(0))
    module = get_module(params, "conv")
    entries = fourierft.spectral_entries(config, (36, 8), 30)
    want = reference_delta_w(module["fourierft_spectrum"], entries, (36, 8), 7.0).reshape(3, 3, 4, 8)
    got = ff.adapted_modules.module_delta_w(config, "conv", module)
    np.testing.assert_allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())
