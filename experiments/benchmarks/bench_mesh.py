"""Benchmark: FourierFT on a device mesh — per-device memory and collective bytes per train step, and delta_w's
fft vs matmul forms.

Command (from the repo root)::

    .venv/bin/python experiments/benchmarks/bench_mesh.py mesh  # ~15 min: compiles only (abstract shapes), 8 fake CPUs
    .venv/bin/python experiments/benchmarks/bench_mesh.py delta_w   # ~5 min of timing: run it on a quiet machine

Writes ``experiments/results/bench_mesh.md`` (the mesh stage) and ``bench_delta_w_impl.md`` (the timing stage).

**mesh.** For a RoBERTa-base-shaped encoder (2 of its 12 layers: hidden 768, FFN 3072, batch 32 × 128) and a
LLaMA-7B-shaped layer stack (2 layers of q/k/v/o 4096 × 4096 and gate/up/down 4096 ↔ 11008, a stand-in for
attention that keeps the kernel shapes, batch 8 × 128), the train step of ``fourier_flax.finetune.make_train_step`` is
compiled under ``fourier_flax.mesh.use_mesh`` for each strategy at 1, 2, 4 and 8 devices (8 fake CPU devices;
``dp`` on a ``(P, 1)`` mesh, ``fsdp`` and ``tp`` on ``(1, P)``), from abstract arrays, so nothing runs and the
7B-shaped kernels never exist. Two steps per cell: *adapted* (FourierFT n = 1000 on q/v, spectra trained) and
*frozen* (the same model back-propagated to a bottom bias, what any adapter's step must at least do). Reported per
device: ``memory_analysis()`` temp and argument bytes, and bytes moved by collectives (sum of the result shapes
of all-reduce / all-gather / reduce-scatter / all-to-all / collective-permute in the compiled HLO). The adapter's
part is adapted − frozen: its temp should fall as 1/P where kernels are split (fsdp, tp), and its collectives
should be n float32 per adapted layer.

**delta_w.** Time of ``jit(delta_w(impl=...))`` (forward, and forward + backward w.r.t. ``c``) for shapes ×
``n``, median of 20 calls after warm-up, with the machine's runnable-thread count recorded per cell; which form
wins, and what ``spectral.choose_impl`` picks on this CPU.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/: experiment_paths
from experiment_paths import RESULTS  # noqa: E402

N = 1000
OP = re.compile(
    r"^\s*(?:ROOT\s+)?\S+\s*=\s*(.*?)\s(all-reduce|all-gather|reduce-scatter|all-to-all|collective-permute)(?:-start)?\("
)
ARRAY = re.compile(r"(f32|s32|bf16|f16)\[([0-9,]*)\]")


def collective_bytes(hlo: str) -> int:
    total = 0
    for line in hlo.splitlines():
        match = OP.search(line)
        if match:
            for kind, dims in ARRAY.findall(match.group(1)):
                size = 2 if kind in ("bf16", "f16") else 4
                total += size * math.prod(int(d) for d in dims.split(",") if d)
    return total


def _llama_stack(d: int, f: int):
    import flax.linen as nn
    import jax.numpy as jnp

    class Layer(nn.Module):
        @nn.compact
        def __call__(self, h):
            q, k, v = (nn.Dense(d, use_bias=False, name=n)(h) for n in ("q_proj", "k_proj", "v_proj"))
            h = h + nn.Dense(d, use_bias=False, name="o_proj")(jnp.tanh(q * k) + v)
            gate, up = nn.Dense(f, use_bias=False, name="gate_proj")(h), nn.Dense(f, use_bias=False, name="up_proj")(h)
            return h + nn.Dense(d, use_bias=False, name="down_proj")(nn.silu(gate) * up)

    class Stack(nn.Module):
        @nn.compact
        def __call__(self, x):
            h = x + self.param("input_bias", nn.initializers.zeros, (d,))
            for i in range(2):
                h = Layer(name=f"layers_{i}")(h)
            return h

    return Stack()


def _cells(tiny: bool):
    """One (model, strategy, devices) cell per yield: (name, apply_fn pieces, abstract params, batch).

    ``tiny``: the same two models at hidden size 64 on 2 x 16 batches (the smoke test's size)."""
    import jax
    import jax.numpy as jnp
    import transformers
    from bench_train_step import ROBERTA_BASE, TINY

    shape = {k: v for k, v in (TINY if tiny else ROBERTA_BASE).items() if k != "num_labels"}
    hidden, (d, f) = shape["hidden_size"], ((64, 128) if tiny else (4096, 11008))
    (roberta_batch, llama_batch) = ((2, 16), (2, 16)) if tiny else ((32, 128), (8, 128))
    roberta = transformers.FlaxRobertaModel(
        transformers.RobertaConfig(**{**shape, "num_hidden_layers": 2}), _do_init=False
    )
    roberta_params = jax.eval_shape(lambda: roberta.init_weights(jax.random.key(0), (1, 8)))
    llama = _llama_stack(d, f)
    llama_params = jax.eval_shape(lambda: llama.init(jax.random.key(0), jnp.zeros((1, d)))["params"])
    yield (
        f"roberta-{'tiny' if tiny else 'base'} (2 layers), {'x'.join(map(str, roberta_batch))}",
        lambda p, b: roberta(b["input_ids"], params=p).last_hidden_state,
        roberta_params,
        {
            "input_ids": jax.ShapeDtypeStruct(roberta_batch, jnp.int32),
            "labels": jax.ShapeDtypeStruct((*roberta_batch, hidden), jnp.float32),
        },
        ("embeddings", "LayerNorm", "bias"),
        ["query", "value"],
    )
    yield (
        f"llama-{'tiny' if tiny else '7b'}-shaped (2 layers), {'x'.join(map(str, llama_batch))}",
        lambda p, b: llama.apply({"params": p}, b["x"]),
        llama_params,
        {
            "x": jax.ShapeDtypeStruct((*llama_batch, d), jnp.float32),
            "labels": jax.ShapeDtypeStruct((*llama_batch, d), jnp.float32),
        },
        ("input_bias",),
        ["q_proj", "v_proj"],
    )


def _compile_step(forward, params, batch, bias, config, mesh, strategy) -> dict:
    """Compiles one train step from abstract arrays under ``use_mesh``; its memory and collective bytes."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import traverse_util
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    import fourier_flax as ff
    from fourier_flax import finetune
    from fourier_flax.mesh import batch_spec, use_mesh
    from fourier_flax.sharding import param_specs

    flat = traverse_util.flatten_dict(params)
    train = {k: v for k, v in flat.items() if k == bias or k[-1] == "fourierft_spectrum"}
    trainable = traverse_util.unflatten_dict(train)
    frozen = traverse_util.unflatten_dict({k: v for k, v in flat.items() if k not in train})

    def apply_fn(p, b, rng, train_):
        if config is None:
            return forward(p, b)
        with ff.intercept(config):
            return forward(p, b)

    def placed(tree, specs):
        return jax.tree.map(
            lambda leaf, spec: jax.ShapeDtypeStruct(leaf.shape, leaf.dtype, sharding=NamedSharding(mesh, spec)),
            tree,
            specs,
        )

    tx = optax.adam(1e-3)
    step = finetune.make_train_step(apply_fn, lambda o, t: jnp.mean((o - t) ** 2), tx, donate=True)
    trainable = placed(trainable, param_specs(trainable, mesh, strategy))
    frozen = placed(frozen, param_specs(frozen, mesh, strategy))
    opt_state = jax.eval_shape(tx.init, trainable)
    opt_state = placed(opt_state, jax.tree.map(lambda _: P(), opt_state))
    data = placed(batch, {k: batch_spec(strategy) for k in batch})
    start = time.perf_counter()
    with use_mesh(mesh, strategy):
        compiled = step.lower(trainable, opt_state, frozen, data, jax.random.key(0)).compile()
    memory = compiled.memory_analysis()
    return {
        "temp": memory.temp_size_in_bytes,
        "argument": memory.argument_size_in_bytes,
        "collective": collective_bytes(compiled.as_text()),
        "compile_s": time.perf_counter() - start,
    }


def mesh_stage(args) -> None:
    if os.environ.get("BENCH_MESH_CHILD") != "1":  # the device count is fixed when jax starts
        env = {
            **os.environ,
            "BENCH_MESH_CHILD": "1",
            "JAX_PLATFORMS": "cpu",
            "XLA_FLAGS": "--xla_force_host_platform_device_count=8",
        }
        subprocess.run([sys.executable, __file__, *sys.argv[1:]], env=env, check=True)
        return
    import jax

    import fourier_flax as ff

    rows, n = [], args.n
    for name, forward, abstract, batch, bias, targets in _cells(args.tiny):
        config = ff.FourierFTConfig(target_modules=targets, n_frequency=n, scaling=150.0)
        adapted = jax.eval_shape(
            partial(ff.init_adapter, config=config, rng=jax.random.key(0), check_scale=False), abstract
        )
        for strategy in ("dp", "fsdp", "tp"):
            for count in args.devices:
                shape = (count, 1) if strategy == "dp" else (1, count)
                mesh = jax.make_mesh(
                    shape,
                    ("data", "model"),
                    devices=jax.devices()[:count],
                    axis_types=(jax.sharding.AxisType.Auto,) * 2,
                )
                cell = {"model": name, "strategy": strategy, "devices": count}
                for kind, params in (("frozen", abstract), ("adapted", adapted)):
                    cell[kind] = _compile_step(
                        forward, params, batch, bias, config if kind == "adapted" else None, mesh, strategy
                    )
                rows.append(cell)
                print(json.dumps(cell), flush=True)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "bench_mesh.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    mib = lambda b: f"{b / 2**20:,.1f}"  # noqa: E731
    lines = [
        "# FourierFT on a device mesh: per-device memory and collectives per train step",
        "",
        f"Written by `python experiments/benchmarks/bench_mesh.py {' '.join(sys.argv[1:])}` (method in its docstring; raw: "  # noqa: E501
        "bench_mesh.jsonl).",
        f"FourierFT n = {n} on two kernels per layer, 2 layers; *frozen* = the same step back-propagated to a bottom",
        "bias. Per device, MiB; the adapter's part = adapted − frozen. Collectives: bytes of all collective results.",
        "",
        "| model | strategy | devices | frozen temp | adapted temp | adapter temp | frozen args | adapted args |"
        " frozen collectives | adapted collectives | adapter collectives (bytes) |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        f, a = r["frozen"], r["adapted"]
        lines.append(
            f"| {r['model']} | {r['strategy']} | {r['devices']} | {mib(f['temp'])} | {mib(a['temp'])} | "
            f"{mib(a['temp'] - f['temp'])} | {mib(f['argument'])} | {mib(a['argument'])} | {mib(f['collective'])} | "
            f"{mib(a['collective'])} | {a['collective'] - f['collective']:,d} |"
        )
    lines += ["", f"n float32 per adapted layer × 4 adapted layers = {4 * n * 4:,d} bytes."]
    (args.out_dir / "bench_mesh.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _runnable() -> int:
    with open("/proc/stat") as stat:
        for line in stat:
            if line.startswith("procs_running"):
                return int(line.split()[1]) - 1
    return -1


def _weighted_sum(c, *, entries, weights, impl):
    from fourier_flax.methods.fourierft import spectral

    return (spectral.delta_w(c, entries, weights.shape, 150.0, impl=impl) * weights).sum()


def delta_w_stage(args) -> None:
    import statistics

    import jax
    import jax.numpy as jnp
    import numpy as np

    from fourier_flax.methods.fourierft import spectral, uniform_entries

    shapes = [tuple(int(d) for d in s.split("x")) for s in args.shapes.split(",")]
    ns = [int(n) for n in args.ns.split(",")]
    lines = [
        "# delta_w: fft vs matmul (DFT columns) on this CPU",
        "",
        f"Written by `python experiments/benchmarks/bench_mesh.py {' '.join(sys.argv[1:])}`. Median of",
        f"{args.repeats} jitted calls after warm-up, ms; fwd+bwd = value_and_grad w.r.t. c of sum(ΔW·G). "
        "`load`: other runnable",
        "threads when the cell ran (0 = quiet). `auto`: what `spectral.choose_impl` picks on CPU.",
        "",
        "| shape | n | fft fwd | matmul fwd | fft fwd+bwd | matmul fwd+bwd | faster (fwd+bwd) | auto | load |",
        "|---|---:|---:|---:|---:|---:|---|---|---:|",
    ]
    agree = total = 0
    for shape in shapes:
        weights = jnp.asarray(np.random.default_rng(0).standard_normal(shape), jnp.float32)
        for n in ns:
            entries = jnp.asarray(uniform_entries(shape, n, seed=0))
            c = jnp.asarray(np.random.default_rng(1).standard_normal(n), jnp.float32)
            times, load = {}, _runnable()
            for impl in ("fft", "matmul"):
                fwd = jax.jit(partial(spectral.delta_w, entries=entries, shape=shape, alpha=150.0, impl=impl))
                both = jax.jit(jax.value_and_grad(partial(_weighted_sum, entries=entries, weights=weights, impl=impl)))
                for label, fn in (("fwd", fwd), ("both", both)):
                    jax.block_until_ready(fn(c))
                    samples = []
                    for _ in range(args.repeats):
                        start = time.perf_counter()
                        jax.block_until_ready(fn(c))
                        samples.append(time.perf_counter() - start)
                    times[impl, label] = statistics.median(samples) * 1e3
            faster = "matmul" if times["matmul", "both"] < times["fft", "both"] else "fft"
            auto = spectral.choose_impl(shape, n, "cpu")
            agree, total = agree + (auto == faster), total + 1
            lines.append(
                f"| {shape[0]}×{shape[1]} | {n} | {times['fft', 'fwd']:.2f} | {times['matmul', 'fwd']:.2f} | "
                f"{times['fft', 'both']:.2f} | {times['matmul', 'both']:.2f} | {faster} | {auto} | {load} |"
            )
            print(lines[-1], flush=True)
    lines += ["", f"`auto` picks the faster form (fwd+bwd) in {agree} of {total} cells."]
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / "bench_delta_w_impl.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", nargs="?", default="mesh", choices=("mesh", "delta_w"))
    parser.add_argument("--tiny", action="store_true", help="mesh: hidden-64 models on 2x16 batches (smoke test)")
    parser.add_argument("--devices", default="1,2,4,8", help="mesh: device counts (at most 8)")
    parser.add_argument("--n", type=int, default=N, help="mesh: FourierFT's n")
    parser.add_argument("--shapes", default="384x384,768x768,1024x1024,768x3072,4096x4096", help="delta_w stage")
    parser.add_argument("--ns", default="50,100,200,500,1000,4000", help="delta_w stage")
    parser.add_argument("--repeats", type=int, default=20, help="delta_w stage")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.devices = [int(d) for d in args.devices.split(",")]
    {"mesh": mesh_stage, "delta_w": delta_w_stage}[args.stage](args)


if __name__ == "__main__":
    main()
