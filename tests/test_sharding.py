"""Shard-local ΔW on 8 fake CPU devices (a subprocess: the device count is fixed when jax starts)."""

import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent(
    """
    import re
    import jax, jax.numpy as jnp, numpy as np
    from jax.sharding import PartitionSpec as P
    from fourier_flax.methods.fourierft import delta_w, uniform_entries
    from fourier_flax.methods.fourierft.sharding import sharded_delta_w

    assert jax.device_count() == 8
    mesh = jax.make_mesh((2, 4), ("data", "model"))
    shape, n = (64, 96), 40
    entries = uniform_entries(shape, n, seed=1)
    c = jnp.asarray(np.random.default_rng(0).standard_normal(n), jnp.float32)
    want = np.asarray(delta_w(c, entries, shape, 3.0))
    for spec in (P(None, "model"), P("model", None), P("data", "model"), P(("data", "model"), None)):
        got = jax.jit(lambda c: sharded_delta_w(c, entries, shape, 3.0, mesh, spec))(c)
        np.testing.assert_allclose(np.asarray(got), want, rtol=0, atol=2e-6 * np.abs(want).max())
        assert got.sharding.spec == spec, (got.sharding, spec)
        blocks = {tuple(s.data.shape) for s in got.addressable_shards}
        rows = 64 // (1 if spec[0] is None else (4 if spec[0] == "model" else 8 if isinstance(spec[0], tuple) else 2))
        cols = 96 // (1 if len(spec) < 2 or spec[1] is None else 4)
        assert blocks == {(rows, cols)}, (spec, blocks)
        hlo = jax.jit(lambda c: sharded_delta_w(c, entries, shape, 3.0, mesh, spec)).lower(c).compile().as_text()
        assert not re.search("all-gather|all-reduce|all-to-all|collective-permute", hlo), spec
        # The gradient: partial sums per device, one all-reduce of n floats and nothing weight-sized.
        g = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
        loss = lambda c: jnp.sum(sharded_delta_w(c, entries, shape, 3.0, mesh, spec) * g)
        dense = lambda c: jnp.sum(delta_w(c, entries, shape, 3.0) * g)
        np.testing.assert_allclose(jax.jit(jax.grad(loss))(c), jax.grad(dense)(c), rtol=1e-4, atol=1e-4)
        grad_hlo = jax.jit(jax.grad(loss)).lower(c).compile().as_text()
        for line in grad_hlo.splitlines():
            if re.search("all-gather|all-to-all", line):
                raise AssertionError(line)
            if "all-reduce(" in line:
                assert re.search(r"f32\\[%d\\]" % n, line), line
    # merge_adapter on sharded params: kernels keep the base's sharding, built shard-locally, values as unsharded.
    from jax.sharding import NamedSharding
    from fourier_flax import FourierFTConfig, init_adapter, merge_adapter
    base = {"q": {"kernel": jnp.asarray(np.random.default_rng(3).standard_normal(shape), jnp.float32)}}
    config = FourierFTConfig(target_modules=["q"], n_frequency=n, scaling=5.0)
    params = init_adapter(base, config, jax.random.key(0))
    want = np.asarray(merge_adapter(params, config)["q"]["kernel"])
    sharded = dict(params["q"])
    sharded["kernel"] = jax.device_put(sharded["kernel"], NamedSharding(mesh, P(None, "model")))
    merged = jax.jit(lambda p: merge_adapter(p, config))({"q": sharded})["q"]["kernel"]
    assert merged.sharding.spec == P(None, "model"), merged.sharding
    np.testing.assert_allclose(np.asarray(merged), want, rtol=0, atol=2e-6 * np.abs(want).max())
    hlo = jax.jit(lambda p: merge_adapter(p, config)).lower({"q": sharded}).compile().as_text()
    assert not re.search("all-gather|all-reduce|all-to-all", hlo)
    print("OK")
    """
)


STRATEGIES = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, optax
    from jax.sharding import NamedSharding, PartitionSpec as P
    import fourier_flax as ff
    from fourier_flax import finetune
    from fourier_flax.models.hf import tiny_model
    from fourier_flax.mesh import batch_spec
    from fourier_flax.sharding import param_specs, shard_params

    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    model, base = tiny_model("roberta")
    config = ff.FourierFTConfig(target_modules=["query", "value"], n_frequency=20, scaling=30.0, backward="dense")
    params = ff.init_adapter(base, config, jax.random.key(0))
    trainable, frozen = ff.split_params(params, ff.trainable_mask(params, config))
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(3, 128, (8, 12)).astype(np.int32),
        "target": rng.standard_normal((8, 12, 32)).astype(np.float32),
    }

    def apply_fn(params, batch, rng, train):
        with ff.intercept(config):
            return model(batch["input_ids"], params=params).last_hidden_state

    tx = optax.adam(1e-2)
    step = finetune.make_train_step(apply_fn, lambda out, target: jnp.mean((out - target) ** 2), tx, donate=False)

    def run(trainable, frozen, batch):
        state = tx.init(trainable)
        out = []
        for i in range(2):
            inputs = {"input_ids": batch["input_ids"], "labels": batch["target"]}
            trainable, state, metrics = step(trainable, state, frozen, inputs, jax.random.key(i))
            out.append(float(metrics["loss"]))
        return out, trainable

    single_losses, single = run(trainable, frozen, batch)
    specs = param_specs(frozen, mesh, "tp")
    assert specs["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"] == P(None, "model")
    assert specs["encoder"]["layer"]["0"]["attention"]["output"]["dense"]["kernel"] == P("model", None)
    query = param_specs(trainable, mesh, "tp")["encoder"]["layer"]["0"]["attention"]["self"]["query"]
    assert query["fourierft_spectrum"] == P()
    for strategy in ("dp", "fsdp", "tp"):
        sharded_batch = jax.device_put(batch, NamedSharding(mesh, batch_spec(strategy)))
        placed = shard_params(trainable, mesh, strategy), shard_params(frozen, mesh, strategy)
        losses, trained = run(*placed, sharded_batch)
        np.testing.assert_allclose(losses, single_losses, rtol=1e-5)
        for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(single)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
        kernel = shard_params(frozen, mesh, strategy)["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"]
        expected = {"dp": (32, 32), "fsdp": (32, 8), "tp": (32, 8)}[strategy]  # query kernel (32, 32), 4-way model
        assert {tuple(s.data.shape) for s in kernel.addressable_shards} == {expected}, strategy
    print("OK")
    """
)


MESH_STEP = textwrap.dedent(
    """
    import re
    import jax, jax.numpy as jnp, numpy as np, optax
    from flax import traverse_util
    from jax.sharding import NamedSharding, PartitionSpec as P
    import fourier_flax as ff
    from fourier_flax import finetune
    from fourier_flax.models.hf import tiny_model
    from fourier_flax.mesh import batch_spec, use_mesh
    from fourier_flax.sharding import shard_params

    OP = re.compile(
        r"^\\s*(?:ROOT\\s+)?\\S+\\s*=\\s*(.*?)\\s"
        r"(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(?:-start)?\\("
    )
    ARRAY = re.compile(r"(f32|s32|bf16)\\[([0-9,]*)\\]")

    def collective_bytes(hlo):
        total = 0
        for line in hlo.splitlines():
            match = OP.search(line)
            if match:
                for kind, dims in ARRAY.findall(match.group(1)):
                    total += (2 if kind == "bf16" else 4) * int(np.prod([int(d) for d in dims.split(",") if d]))
        return total

    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    model, base = tiny_model("roberta")  # hidden 32: query/value kernels (32, 32), 2 layers
    n = 20
    # query/value are column-parallel under "tp" (outputs split), attention.output.dense row-parallel (inputs split)
    targets = ["query", "value", "attention.output.dense"]
    config = ff.FourierFTConfig(target_modules=targets, n_frequency=n, scaling=30.0)
    from fourier_flax.mesh import kernel_spec
    assert kernel_spec("tp", "encoder.layer.0.attention.output.dense", (32, 32), 4) == P("model", None)
    assert kernel_spec("tp", "encoder.layer.0.attention.self.query", (32, 32), 4) == P(None, "model")
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(3, 128, (8, 12)).astype(np.int32),
        "labels": rng.standard_normal((8, 12, 32)).astype(np.float32),
    }
    BIAS = ("embeddings", "LayerNorm", "bias")  # a bottom parameter: the reference step backprops every layer

    def split(params, adapted):
        flat = traverse_util.flatten_dict(params)
        train = {k: v for k, v in flat.items() if k == BIAS or (adapted and k[-1] == "fourierft_spectrum")}
        frozen = {k: v for k, v in flat.items() if k not in train}
        return traverse_util.unflatten_dict(train), traverse_util.unflatten_dict(frozen)

    def apply_fn(params, batch, rng, train):
        with ff.intercept(config):
            return model(batch["input_ids"], params=params).last_hidden_state

    def reference_fn(params, batch, rng, train):
        return model(batch["input_ids"], params=params).last_hidden_state

    tx = optax.adam(1e-2)
    loss = lambda out, target: jnp.mean((out - target) ** 2)
    adapted = ff.init_adapter(base, config, jax.random.key(0))

    def run(fn, params, adapted_, strategy=None, steps=2):
        trainable, frozen = split(params, adapted_)
        step = finetune.make_train_step(fn, loss, tx, donate=False)
        data = batch
        if strategy is not None:
            data = jax.device_put(batch, NamedSharding(mesh, batch_spec(strategy)))
            trainable, frozen = shard_params(trainable, mesh, strategy), shard_params(frozen, mesh, strategy)
        state, losses = tx.init(trainable), []
        for i in range(steps):
            trainable, state, metrics = step(trainable, state, frozen, data, jax.random.key(i))
            losses.append(float(metrics["loss"]))
        hlo = step.lower(trainable, state, frozen, data, jax.random.key(0)).compile().as_text()
        return losses, trainable, hlo

    single_losses, single, _ = run(apply_fn, adapted, True)
    for strategy in ("dp", "fsdp", "tp"):
        with use_mesh(mesh, strategy):
            losses, trained, hlo = run(apply_fn, adapted, True, strategy)
        np.testing.assert_allclose(losses, single_losses, rtol=1e-5)
        for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(single)):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-4, atol=1e-5)
        _, _, reference = run(reference_fn, base, False, strategy, steps=1)
        extra = collective_bytes(hlo) - collective_bytes(reference)
        print(strategy, collective_bytes(reference), collective_bytes(hlo))
        assert extra <= 6 * n * 4, (strategy, extra)  # 6 adapted layers x n float32 coefficients
        if strategy == "tp":  # every 32x32 kernel is split over "model": no device holds a whole ΔW
            assert "f32[32,32]" not in hlo
    # jax.grad over the whole tree (kernels too, as with optax masks): the mesh matmul's kernel gradient is xᵀdy.
    whole = lambda p, b: loss(apply_fn(p, b, None, True), b["labels"])
    want = jax.grad(whole)(adapted, batch)
    with use_mesh(mesh, "tp"):
        placed = shard_params(adapted, mesh, "tp")
        got = jax.jit(jax.grad(whole))(placed, jax.device_put(batch, NamedSharding(mesh, batch_spec("tp"))))
    query = lambda t: t["encoder"]["layer"]["0"]["attention"]["self"]["query"]
    row_split = lambda t: t["encoder"]["layer"]["0"]["attention"]["output"]["dense"]
    for module in (query, row_split):
        for leaf in ("kernel", "fourierft_spectrum"):
            np.testing.assert_allclose(module(got)[leaf], module(want)[leaf], rtol=1e-4, atol=1e-6)
    print("OK")
    """
)


def test_mesh_train_step_adds_only_n_floats_of_collectives():
    """Under use_mesh, each strategy trains as one device does (losses rtol 1e-5, spectra 1e-4), and the
    compiled step moves at most n float32 per adapted layer more in collectives than the frozen model's step
    that backpropagates through the same layers; under "tp" no device holds a whole 32x32 ΔW, and a row-split
    adapted layer (attention.output.dense) trains and differentiates like the column-split ones."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", MESH_STEP], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stdout[-2000:] + done.stderr[-3000:]


def test_strategies_train_like_one_device():
    """dp / fsdp / tp placements: two FourierFT train steps give the single-device losses and spectra."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", STRATEGIES], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]


def test_shard_local_delta_w_on_eight_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]


GRID_SWEEP = textwrap.dedent(
    """
    import jax, numpy as np
    from jax.sharding import PartitionSpec as P
    from fourier_flax.finetune import load_classifier, resolve_run
    from fourier_flax.finetune.sweep import make_seed_run, sweep

    run = resolve_run("sst2", preset="tiny", overrides={"max_steps": 3, "batch_size": 4, "max_length": 8})
    model, base = load_classifier(num_labels=2, num_layers=2)
    rng = np.random.default_rng(0)
    train = {
        "input_ids": rng.integers(1000, 5000, size=(16, 8)).astype(np.int32),
        "attention_mask": np.ones((16, 8), np.int32),
        "token_type_ids": np.zeros((16, 8), np.int32),
        "labels": rng.integers(0, 2, size=16).astype(np.int32),
    }
    mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    rates = [(run.lr, run.head_lr, run.scaling), (2 * run.lr, run.head_lr, run.scaling / 3)]
    want_trained, want = sweep(make_seed_run(model, base, run, train), [0, 1], rates)
    trained, losses = sweep(make_seed_run(model, base, run, train, batch_axis="model"), [0, 1], rates, mesh=mesh)
    assert losses.sharding.spec == P("data") and {s.data.shape for s in losses.addressable_shards} == {(1, 3)}
    np.testing.assert_allclose(losses, want, rtol=1e-5, atol=1e-6)
    for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(want_trained), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    odd, odd_losses = sweep(make_seed_run(model, base, run, train), [0, 1, 2], rates[:1], mesh=mesh)  # padded
    _, third = sweep(make_seed_run(model, base, run, train), [2], rates[:1])  # seed 2 on one device
    expected = np.concatenate([np.asarray(want)[:2], np.asarray(third)])
    assert np.isfinite(expected).all()
    np.testing.assert_allclose(odd_losses, expected, rtol=1e-5, atol=1e-6)
    print("OK")
    """
)


def test_sweep_grid_maps_over_a_mesh_axis():
    """The seed x rate grid split over "data" (one run per device pair), each run's batches over "model":
    the same losses and trained leaves as the one-device vmapped sweep."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", GRID_SWEEP], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]


NNX_MESH = textwrap.dedent(
    """
    import warnings
    warnings.simplefilter("ignore")  # the scale guardrail on these random kernels
    import jax, jax.numpy as jnp, numpy as np, optax
    from flax import nnx
    from jax.sharding import PartitionSpec as P, NamedSharding
    import fourier_flax as ff
    from fourier_flax import nnx as ffnnx
    from fourier_flax.mesh import use_mesh
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    class Block(nnx.Module):
        def __init__(self, rngs):
            col = nnx.with_partitioning(nnx.initializers.lecun_normal(), (None, "model"))
            row = nnx.with_partitioning(nnx.initializers.lecun_normal(), ("model", None))
            self.query = nnx.Linear(32, 32, kernel_init=col, rngs=rngs)
            self.value = nnx.Linear(32, 32, kernel_init=col, rngs=rngs)
            self.out = nnx.Linear(32, 32, kernel_init=row, rngs=rngs)
        def __call__(self, x):
            return x + self.out(jnp.tanh(self.query(x)) * self.value(x))
    x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 6, 32)), jnp.float32)
    def train(model, steps=3):
        opt = nnx.Optimizer(model, optax.adam(0.05), wrt=ffnnx.AdapterParam)
        @nnx.jit
        def step(model, opt, x):
            objective = lambda m: jnp.mean((m(x) - 1) ** 2)
            loss, g = nnx.value_and_grad(objective, argnums=nnx.DiffState(0, ffnnx.AdapterParam))(model)
            opt.update(model, g)
            return loss
        return [float(step(model, opt, x)) for _ in range(steps)]
    configs = (
        ff.FourierFTConfig(target_modules=["query", "value"], n_frequency=24, scaling=20.0),
        ff.LoraConfig(target_modules=["query", "value"], r=4),
    )
    for config in configs:
        with nnx.use_eager_sharding(False):
            plain = Block(nnx.Rngs(0))
        ffnnx.apply_adapter(plain, config, jax.random.key(1))
        want = train(plain)
        with jax.set_mesh(mesh):
            model = Block(nnx.Rngs(0))
            assert model.query.kernel[...].sharding.spec == P(None, "model")
            ffnnx.apply_adapter(model, config, jax.random.key(1))
            specs = {name: var[...].sharding.spec for name, var in model.query.adapter.items()}
            expected = {"fourierft_spectrum": P(None), "lora_a": P(None, None), "lora_b": P(None, "model")}
            assert all(specs[name] == expected[name] for name in specs), specs
            x = jax.device_put(x, NamedSharding(mesh, P("data")))
            with use_mesh(mesh, "tp"):
                got = train(model)
        np.testing.assert_allclose(got, want, rtol=1e-5)
    print("OK")
    """
)


def test_nnx_adapters_shard_like_their_kernels_and_train_on_a_mesh():
    """NNX layers created on a mesh with partitioned kernels: the adapter Variables get the shardings the
    kernel implies (LoRA B split like the kernel's outputs, spectra replicated), and nnx.jit training under
    use_mesh(mesh, "tp") gives the one-device losses (rtol 1e-5)."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", NNX_MESH], env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]


def test_tp_splits_a_stacked_kernel_on_its_own_axes_never_the_layer_axis():
    from jax.sharding import PartitionSpec as P

    from fourier_flax.mesh import kernel_spec

    column, row = "encoder.layer.attention.self.query", "encoder.layer.attention.output.dense"
    assert kernel_spec("tp", column, (6, 32, 48), 4) == P(None, None, "model")  # out split
    assert kernel_spec("tp", row, (6, 32, 48), 4) == P(None, "model", None)  # in split, not the 6 layers
    assert kernel_spec("tp", row, (8, 30, 48), 4) == P()  # 30 inputs do not split 4 ways: replicated
    assert kernel_spec("tp", row, (32, 48), 4) == P("model", None)  # unstacked: as before


BANK_ON_A_MESH = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, numpy as np, flax.linen as nn
    from jax.sharding import NamedSharding
    import fourier_flax as ff
    from fourier_flax.bank import AdapterBank, adapter_ids
    from fourier_flax.mesh import batch_spec, use_mesh
    from fourier_flax.sharding import shard_params

    class Net(nn.Module):
        @nn.compact
        def __call__(self, x):
            return nn.Dense(32, name="query")(nn.Dense(32, name="value")(x))

    x = jnp.asarray(np.random.default_rng(0).standard_normal((8, 5, 32)), jnp.float32)
    base = Net().init(jax.random.key(0), x)["params"]
    inner = ff.FourierFTConfig(target_modules=["query", "value"], n_frequency=20, scaling=3.0)
    config = AdapterBank(inner, 3)
    params = ff.init_adapter(base, config, jax.random.key(1))
    ids = jnp.asarray([0, 1, 2, -1, 2, 1, 0, 0], jnp.int32)

    def f(p, x, ids):
        with ff.intercept(config), adapter_ids(ids):
            return Net().apply({"params": p}, x)

    want = jax.jit(f)(params, x, ids)
    mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
    for strategy in ("dp", "fsdp", "tp"):
        with use_mesh(mesh, strategy):
            xs = jax.device_put(x, NamedSharding(mesh, batch_spec(strategy)))
            got = jax.jit(f)(shard_params(params, mesh, strategy), xs, ids)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    print("OK")
    """
)


def test_adapter_banks_serve_on_every_mesh_strategy():
    """A FourierFT bank of two stacked layers on 8 fake devices computes what it does on one, under "dp", "fsdp"
    and "tp" (where the second layer's input comes split over its features: XLA:CPU's FFT once failed on it)."""
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", BANK_ON_A_MESH], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]
