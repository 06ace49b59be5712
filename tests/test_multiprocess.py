"""Two processes (jax.distributed on localhost, 4 fake CPU devices each, gloo collectives) train FourierFT under
"fsdp" with the mesh matmul, match a single-process run's losses, merge shard-locally on arrays no process fully
holds, and save/load the adapter with orbax from that run."""

import os
import socket
import subprocess
import sys
import textwrap

import numpy as np

WORKER = textwrap.dedent(
    """
    import sys, warnings
    warnings.simplefilter("ignore")
    import jax
    mode, port, out = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode != "single":
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(f"localhost:{port}", num_processes=2, process_id=int(mode))
    import contextlib
    import jax.numpy as jnp, numpy as np, optax
    from jax.sharding import NamedSharding
    import fourier_flax as ff
    from fourier_flax import finetune
    from fourier_flax.adapted_modules import module_effective_kernel
    from fourier_flax.partition import merge_params
    from fourier_flax.models.hf import tiny_model
    from fourier_flax.mesh import batch_spec, use_mesh
    from fourier_flax.sharding import shard_params

    model, base = tiny_model("roberta")
    config = ff.FourierFTConfig(target_modules=["query", "value"], n_frequency=20, scaling=30.0)
    params = ff.init_adapter(base, config, jax.random.key(0))
    trainable, frozen = ff.split_params(params, ff.trainable_mask(params, config))
    rng = np.random.default_rng(0)
    batch = {
        "input_ids": rng.integers(3, 128, (8, 12)).astype(np.int32),
        "labels": rng.standard_normal((8, 12, 32)).astype(np.float32),
    }

    def apply_fn(params, batch, rng, train):
        with ff.intercept(config):
            return model(batch["input_ids"], params=params).last_hidden_state

    tx = optax.adam(3e-2)
    step = finetune.make_train_step(apply_fn, lambda o, t: jnp.mean((o - t) ** 2), tx, donate=False)
    context = contextlib.nullcontext()
    if mode != "single":
        assert jax.process_count() == 2 and jax.device_count() == 8 and jax.local_device_count() == 4
        mesh = jax.make_mesh((2, 4), ("data", "model"), axis_types=(jax.sharding.AxisType.Auto,) * 2)
        sharding = NamedSharding(mesh, batch_spec("fsdp"))
        batch = {k: jax.make_array_from_callback(v.shape, sharding, lambda i, v=v: v[i]) for k, v in batch.items()}
        trainable, frozen = shard_params(trainable, mesh, "fsdp"), shard_params(frozen, mesh, "fsdp")
        context = use_mesh(mesh, "fsdp")
    state, losses = tx.init(trainable), []
    with context:
        for i in range(3):
            trainable, state, metrics = step(trainable, state, frozen, batch, jax.random.key(i))
            losses.append(float(metrics["loss"]))
    print("LOSSES", " ".join(repr(x) for x in losses), flush=True)
    if mode == "single":
        raise SystemExit
    full = merge_params(trainable, frozen)
    query = ("encoder", "layer", "0", "attention", "self", "query")
    kernel = frozen["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"]
    assert not kernel.is_fully_addressable
    merged = jax.jit(lambda p: ff.merge_adapter(p, config))(full)
    got = merged["encoder"]["layer"]["0"]["attention"]["self"]["query"]["kernel"]
    assert got.sharding == kernel.sharding, (got.sharding, kernel.sharding)
    module = full["encoder"]["layer"]["0"]["attention"]["self"]["query"]
    error = jax.jit(lambda m, k: jnp.max(jnp.abs(k - module_effective_kernel(config, ".".join(query), m))))(module, got)
    assert float(error) < 1e-5, float(error)
    ff.save_adapter(out, full, config)
    loaded_config, loaded = ff.load_adapter(out, base)
    for name in ("query", "value"):
        saved = np.asarray(trainable["encoder"]["layer"]["1"]["attention"]["self"][name]["fourierft_spectrum"])
        back = np.asarray(loaded["encoder"]["layer"]["1"]["attention"]["self"][name]["fourierft_spectrum"])
        assert np.array_equal(saved, back)
    assert loaded_config == config
    print("SAVED", flush=True)
    """
)


def _losses(stdout: str) -> list[float]:
    line = next(line for line in stdout.splitlines() if line.startswith("LOSSES"))
    return [float(x) for x in line.split()[1:]]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def test_two_processes_train_fsdp_like_one_and_save_with_orbax(tmp_path):
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
    port, out = str(_free_port()), str(tmp_path / "adapter")
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(i), port, out],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = [w.communicate(timeout=600) for w in workers]
    for worker, (stdout, stderr) in zip(workers, results, strict=True):
        assert worker.returncode == 0 and "SAVED" in stdout, stderr[-3000:]
    single = subprocess.run(
        [sys.executable, "-c", WORKER, "single", port, out],
        env={**env, "XLA_FLAGS": ""},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert single.returncode == 0, single.stderr[-3000:]
    reference = _losses(single.stdout)
    assert reference[-1] < reference[0]
    for stdout, _ in results:
        np.testing.assert_allclose(_losses(stdout), reference, rtol=1e-5)
