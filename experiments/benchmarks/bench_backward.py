"""Dense vs spectral backward of one adapted layer: the measurement behind ``choose_backward``.

For each kernel shape ``(d1, d2)`` and token count ``T`` it times one jitted ``value_and_grad`` step of
``L = sum((x @ (W0 + ΔW(c))) * G)``, float32, ``n = 1000`` coefficients:

* ``dense`` — autodiff through ``x @ (W0 + delta_w(c))`` (forms the ``d1 × d2`` weight gradient ``xᵀ dy``);
* ``spectral`` — :func:`fourier_flax.methods.fourierft.backward.adapted_matmul` (rfft of ``x`` and ``dy``
  along features).

Two gradients are timed: w.r.t. ``c`` only (the first adapted layer: no ``dL/dx`` needed) and w.r.t.
``(c, x)`` (a layer inside a network, which must pass ``dL/dx`` on). A third block varies ``n`` at two shapes.
Each cell is the median of ``--repeats`` steps after two warm-up calls, dense and spectral interleaved (ABBA).
A non-negative least-squares fit of ``t_dense − t_spectral`` to the cost terms of the two backward passes gives
the constants of ``choose_backward``; the file also reports how often the current rule picks the measured winner.

Command (from the repo root; 8-20 min on the shared 2-core CPU, depending on its load):

  .venv/bin/python experiments/benchmarks/bench_backward.py

Writes ``experiments/results/bench_backward.md``.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import nnls

from fourier_flax.methods.fourierft import delta_w, uniform_entries
from fourier_flax.methods.fourierft.backward import adapted_matmul, backward_cost_terms, choose_backward

SHAPES = "384x384,384x1536,768x768,768x3072,1024x1024"
TOKENS = "128,512,1024,4096"
N_DEFAULT = 1000
# The larger-n block: at the 3rd and 4th shapes (768 x 768, 768 x 3072), the 2nd and last token counts.
N_SWEEP = "4000,16000"
ALPHA = 150.0


def step_functions(shape, n, wrt_x):
    """Jitted ``value_and_grad`` steps (dense, spectral) of one layer's loss."""
    entries = uniform_entries(shape, n, seed=0)
    argnums = (0, 1) if wrt_x else 0

    def dense_loss(c, x, kernel, g):
        return jnp.sum(g * (x @ (kernel + delta_w(c, entries, shape, ALPHA))))

    def spectral_loss(c, x, kernel, g):
        return jnp.sum(g * adapted_matmul(x, kernel, c, entries, shape, ALPHA))

    return (
        jax.jit(jax.value_and_grad(dense_loss, argnums=argnums)),
        jax.jit(jax.value_and_grad(spectral_loss, argnums=argnums)),
    )


def time_pair(shape, tokens, n, wrt_x, repeats):
    """Median seconds (dense, spectral) over ``repeats`` interleaved steps."""
    rng = np.random.default_rng(0)
    d1, d2 = shape
    args = [
        jnp.asarray(rng.standard_normal(n), jnp.float32),
        jnp.asarray(rng.standard_normal((tokens, d1)), jnp.float32),
        jnp.asarray(rng.standard_normal(shape) / np.sqrt(d1), jnp.float32),
        jnp.asarray(rng.standard_normal((tokens, d2)), jnp.float32),
    ]
    fns = step_functions(shape, n, wrt_x)
    for fn in fns:
        for _ in range(2):
            jax.block_until_ready(fn(*args))
    times = [[], []]
    for r in range(repeats):
        for k in (0, 1) if r % 2 == 0 else (1, 0):
            start = time.perf_counter()
            jax.block_until_ready(fns[k](*args))
            times[k].append(time.perf_counter() - start)
    return float(np.median(times[0])), float(np.median(times[1]))


def machine() -> str:
    cpu = "unknown CPU"
    if os.path.exists("/proc/cpuinfo"):
        with open("/proc/cpuinfo") as f:
            cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), cpu)
    return (
        f"{cpu}, {os.cpu_count()} cores (shared), {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}, jax {jax.__version__} ({jax.default_backend()})"
    )


def fit(rows):
    """Non-negative constants (seconds per cost unit) of ``t_dense − t_spectral ≈ saved − spent``.

    Each row is weighted by ``1 / (t_dense + t_spectral)``: the rule must pick the winner in small cells too.
    """
    features, target = [], []
    for shape, tokens, n, dense, spectral in rows:
        saved, spent_fft, spent_gather = backward_cost_terms(shape, tokens, n)
        features.append(np.asarray([*saved, -spent_fft, -spent_gather]) / (dense + spectral))
        target.append((dense - spectral) / (dense + spectral))
    features, target = np.asarray(features), np.asarray(target)
    scale = np.abs(features).max(axis=0)
    coef, _ = nnls(features / scale, target)
    return coef / scale


def table(rows, title):
    lines = [
        f"### {title}",
        "",
        "| d1 × d2 | T | n | dense ms | spectral ms | dense / spectral | measured winner | choose_backward |",
        "|---|---:|---:|---:|---:|---:|---|---|",
    ]
    agree = 0
    for shape, tokens, n, dense, spectral in rows:
        winner = "spectral" if spectral < dense else "dense"
        chosen = choose_backward(shape, tokens, n)
        agree += chosen == winner
        lines.append(
            f"| {shape[0]} × {shape[1]} | {tokens} | {n} | {dense * 1e3:.2f} | {spectral * 1e3:.2f} | "
            f"{dense / spectral:.2f} | {winner} | {chosen} |"
        )
    return lines, agree


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--shapes", default=SHAPES, help="d1xd2,...")
    parser.add_argument("--tokens", default=TOKENS)
    parser.add_argument("--n", type=int, default=N_DEFAULT)
    parser.add_argument("--n-sweep", default=N_SWEEP, help="the larger n values of the third block")
    parser.add_argument("--out", default="experiments/results/bench_backward.md")
    args = parser.parse_args()
    shapes = [tuple(int(d) for d in s.split("x")) for s in args.shapes.split(",")]
    tokens = [int(t) for t in args.tokens.split(",")]
    n_sweep = [
        (shape, t, n)
        for shape in shapes[2:4] or shapes[:1]
        for t in (tokens[min(1, len(tokens) - 1)], tokens[-1])
        for n in (int(v) for v in args.n_sweep.split(","))
    ]
    load_before = os.getloadavg()
    started = time.time()
    results = {}
    configs = {
        "grad w.r.t. c (first adapted layer)": [(s, t, args.n, False) for s in shapes for t in tokens],
        "grad w.r.t. (c, x) (a layer inside the network)": [(s, t, args.n, True) for s in shapes for t in tokens],
        "grad w.r.t. (c, x), larger n": [(s, t, n, True) for s, t, n in n_sweep],
    }
    for title, cells in configs.items():
        results[title] = []
        for shape, tokens, n, wrt_x in cells:
            dense, spectral = time_pair(shape, tokens, n, wrt_x, args.repeats)
            results[title].append((shape, tokens, n, dense, spectral))
            print(
                f"{title[:20]} {shape} T={tokens} n={n}: dense {dense * 1e3:.2f} ms, spectral {spectral * 1e3:.2f} ms"
            )
    all_rows = [row for rows in results.values() for row in rows]
    coef = fit([row for title, rows in results.items() if "(c, x)" in title for row in rows])
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    lines = [
        "# Dense vs spectral backward of one FourierFT layer",
        "",
        f"Machine: {machine()}. Load average before/after: {load_before[0]:.2f} / {os.getloadavg()[0]:.2f} "
        "(other jobs share the cores: differences under ~10 % are noise).",
        f"Command: `.venv/bin/python {' '.join(sys.argv)}` at commit {commit} (+ working tree); "
        f"{(time.time() - started) / 60:.1f} min.",
        "",
        "One jitted `value_and_grad` step of `sum((x @ (W0 + ΔW(c))) * G)`, float32, median of "
        f"{args.repeats} interleaved steps after warm-up. `dense` = autodiff through `x @ (W0 + delta_w(c))`; "
        "`spectral` = `adapted_matmul`.",
        "",
    ]
    agree_total = 0
    for title, rows in results.items():
        block, agree = table(rows, title)
        agree_total += agree
        lines += [*block, ""]
    names = [
        "T·d1·d2 (saved matmul)",
        "d1·d2·log2(d1·d2) (saved rfft2)",
        "T·Σ d·log2 d (rfft of x, dy)",
        "T·n (gather)",
    ]
    lines += [
        "### Fit",
        "",
        "Non-negative least squares of `t_dense − t_spectral` on the `(c, x)` rows, relative to `t_dense + t_spectral` "
        "(seconds per unit):",
        "",
        *[f"- {name}: {value:.3e}" for name, value in zip(names, coef, strict=True)],
        "",
        f"`choose_backward` picks the measured winner in {agree_total} of {len(all_rows)} cells (its constants come "
        "from an earlier run of this script, so this is a check on fresh measurements).",
        "",
    ]
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
