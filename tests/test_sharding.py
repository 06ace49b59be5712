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
    from fourier_flax import delta_w, uniform_entries
    from fourier_flax.sharding import sharded_delta_w

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


def test_shard_local_delta_w_on_eight_devices():
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=8", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0 and done.stdout.strip().endswith("OK"), done.stderr[-3000:]
