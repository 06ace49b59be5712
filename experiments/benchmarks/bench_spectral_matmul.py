"""Benchmark: ``spectral_matmul`` (x·ΔW from the spectrum) against forming ΔW, relative to the base matmul x @ W0.

Command (from the repo root)::

    .venv/bin/python experiments/benchmarks/bench_spectral_matmul.py                       # ~3 min on this 2-core CPU
    .venv/bin/python experiments/benchmarks/bench_spectral_matmul.py --shapes 64x48 --rows 2 --tokens 4 --repeats 2 \\
        --out /tmp/bench_spectral_matmul_smoke.md                            # smoke run

Writes ``experiments/results/bench_spectral_matmul.md``. For each kernel shape, ``rows`` examples × ``tokens``
tokens, n = 1000 (or fewer on small shapes), jitted forward passes, float32:

* ``base``: ``x @ W0`` with one shared kernel — the cost every request pays anyway;
* ``spectral-shared`` / ``spectral-per-example``: :func:`fourier_flax.methods.fourierft.spectral_matmul` with one
  coefficient set, or one per example (every request on its own adapter);
* ``dense-shared``: ``x @ delta_w(c)`` (ΔW formed once); ``dense-per-example``: each example's ΔW formed and
  applied (``vmap``).

A second table, the **forward crossover**, times one adapted layer with a shared adapter as the layer computes it
— ``x @ (W0 + ΔW)`` with ΔW formed per call — against ``x @ W0 + spectral_matmul(x, c)``, for ``T`` tokens from 1
(one decoding step of one request) up. Layers with one shared adapter do not switch to the spectral form below the
crossover: in a compiled decoding loop XLA computes the loop-invariant ΔW once, before the loop
(``experiments/benchmarks/bench_many_adapters.py``: an unmerged adapter decodes at the base model's speed), so
the per-call saving this table shows does not occur there.

Timing: ``--repeats`` rounds, each configuration once per round (order reversed on odd rounds), median seconds
and the median per-round ratio to ``base``; the number of other runnable threads is sampled before each call
(quiet rounds: ≤ 0.5). Target (the issue on many adapters): spectral per-example ≤ 1.5× base at 768², n = 1000.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # experiments/: experiment_paths
from experiment_paths import RESULTS  # noqa: E402

# isort: split
from bench_machine import machine_summary, others_running  # noqa: E402


def compiled_runners(functions):
    """Per name, a zero-argument timer of ``fn(*args)`` (seconds), each compiled first."""
    runners = {}
    for name, (fn, args) in functions.items():
        fn(*args).block_until_ready()  # compile

        def run(fn=fn, args=args):
            start = time.perf_counter()
            fn(*args).block_until_ready()
            return time.perf_counter() - start

        runners[name] = run
    return runners


def configurations(shape, rows, tokens, n):
    import jax
    import jax.numpy as jnp

    from fourier_flax.methods.fourierft import delta_w, peft_entries, spectral_matmul

    rng = np.random.default_rng(0)
    entries = peft_entries(shape, n, seed=777)
    x = jnp.asarray(rng.standard_normal((rows, tokens, shape[0])), jnp.float32)
    w0 = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    shared = jnp.asarray(rng.standard_normal(n), jnp.float32)
    each = jnp.asarray(rng.standard_normal((rows, n)), jnp.float32)
    functions = {
        "base": (jax.jit(lambda x, w: x @ w), (x, w0)),
        "spectral-shared": (jax.jit(lambda x, c: spectral_matmul(x, c, entries, shape, 150.0)), (x, shared)),
        "spectral-per-example": (jax.jit(lambda x, c: spectral_matmul(x, c, entries, shape, 150.0)), (x, each)),
        "dense-shared": (jax.jit(lambda x, c: x @ delta_w(c, entries, shape, 150.0)), (x, shared)),
        "dense-per-example": (
            jax.jit(
                lambda x, c: jnp.einsum("btp,bpq->btq", x, jax.vmap(lambda cb: delta_w(cb, entries, shape, 150.0))(c))
            ),
            (x, each),
        ),
    }
    return compiled_runners(functions)


def crossover_configurations(shape, tokens, n):
    import jax
    import jax.numpy as jnp

    from fourier_flax.methods.fourierft import delta_w, peft_entries, spectral_matmul

    rng = np.random.default_rng(1)
    entries = peft_entries(shape, n, seed=777)
    x = jnp.asarray(rng.standard_normal((tokens, shape[0])), jnp.float32)
    w0 = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    c = jnp.asarray(rng.standard_normal(n), jnp.float32)
    functions = {
        "base": (jax.jit(lambda x, w, c: x @ w), (x, w0, c)),
        "dense": (jax.jit(lambda x, w, c: x @ (w + delta_w(c, entries, shape, 150.0))), (x, w0, c)),
        "spectral": (jax.jit(lambda x, w, c: x @ w + spectral_matmul(x, c, entries, shape, 150.0)), (x, w0, c)),
    }
    return compiled_runners(functions)


def crossover_table(shapes, token_counts, n, repeats) -> list[str]:
    lines = [
        "",
        "## Forward crossover: one adapted layer, shared adapter",
        "",
        "`dense`: `x @ (W0 + ΔW)` with ΔW formed in the call; `spectral`: `x @ W0 + spectral_matmul(x, c)`; ms, "
        "median of rounds (each the best of 3 calls).",
        "",
        "| shape | n | tokens | base ms | dense ms | spectral ms | faster | quiet rounds |",
        "|---|---|---:|---:|---:|---:|---|---:|",
    ]
    for shape in shapes:
        for tokens in token_counts:
            times = measure(crossover_configurations(shape, tokens, n), repeats)
            med = {k: 1e3 * statistics.median(t for t, _ in v) for k, v in times.items()}
            quiet = sum(load <= 0.5 for _, load in times["dense"])
            faster = "spectral" if med["spectral"] < med["dense"] else "dense"
            lines.append(
                f"| {shape[0]}×{shape[1]} | {n} | {tokens} | {med['base']:.3f} | {med['dense']:.3f} | "
                f"{med['spectral']:.3f} | {faster} | {quiet} |"
            )
            print(lines[-1], flush=True)
    return lines


def measure(runners, repeats):
    times = {name: [] for name in runners}
    for round_index in range(repeats):
        order = list(runners) if round_index % 2 == 0 else list(reversed(runners))
        for name in order:
            time.sleep(0.05)
            load = others_running()
            times[name].append((min(runners[name]() for _ in range(3)), load))
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="768x768,576x192,576x1536")
    parser.add_argument("--rows", type=int, default=64)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--crossover-shapes", default="576x576,576x192,768x768,1024x1024")
    parser.add_argument("--crossover-tokens", default="1,4,16,64,256,1024")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "bench_spectral_matmul.md")
    args = parser.parse_args()
    lines = [
        "# spectral_matmul against forming ΔW (ratios to the base matmul x @ W0)",
        "",
        f"`experiments/benchmarks/bench_spectral_matmul.py {' '.join(sys.argv[1:])}`".replace(" `", "`"),
        f"Machine: {machine_summary(('jax', 'jaxlib'))}. {args.rows} examples × {args.tokens} tokens, float32.",
        "",
        "| shape | n | configuration | median ms | / base (all rounds) | / base (quiet rounds) |",
        "|---|---|---|---|---|---|",
    ]
    for text in [t for t in args.shapes.split(",") if t]:
        shape = tuple(int(s) for s in text.split("x"))
        n = min(args.n, shape[0] * shape[1])
        times = measure(configurations(shape, args.rows, args.tokens, n), args.repeats)
        base = times["base"]
        for name, values in times.items():
            ratios = [t / b for (t, _), (b, _) in zip(values, base, strict=True)]
            quiet = [t / b for (t, lt), (b, lb) in zip(values, base, strict=True) if (lt + lb) / 2 <= 0.5]
            quiet_text = f"{statistics.median(quiet):.2f}× ({len(quiet)})" if quiet else "— (0)"
            median_ms = 1e3 * statistics.median(t for t, _ in values)
            lines.append(
                f"| {shape[0]}×{shape[1]} | {n} | {name} | {median_ms:.2f} | "
                f"{statistics.median(ratios):.2f}× | {quiet_text} |"
            )
    if args.crossover_shapes:
        shapes = [tuple(int(s) for s in text.split("x")) for text in args.crossover_shapes.split(",")]
        tokens = [int(t) for t in args.crossover_tokens.split(",")]
        lines += crossover_table(shapes, tokens, args.n, args.repeats)
    lines.append("")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print(args.out.read_text())


if __name__ == "__main__":
    main()
