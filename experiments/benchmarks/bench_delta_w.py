"""Benchmark: fourier_flax's ``delta_w`` vs Hugging Face PEFT's ``FourierFTLayer.get_delta_weight``.

Command (from the repo root)::

    .venv/bin/python experiments/benchmarks/bench_delta_w.py

Runtime: about 3 minutes on the 2-core CPU this project is developed on. Writes
``experiments/results/bench_delta_w.md``.

What it measures, per kernel shape ``(d1, d2)`` and ``n = 1000`` (Flax ``(in, out)``; PEFT's layer is
``nn.Linear(d1, d2)`` so its ΔW is the ``(d2, d1)`` transpose, the same numbers):

* forward: ΔW from the coefficients (ours jitted; PEFT's real ``get_delta_weight`` under ``no_grad``);
* forward+backward: the loss ``sum(G · ΔW)`` and its gradient w.r.t. the coefficients (ours: jitted
  ``value_and_grad``; PEFT: ``get_delta_weight`` then ``backward()``);
* the plain ``jnp.fft.ifft2`` formulation (``delta_w_reference``) for comparison;
* 24 stacked layers in one ``delta_w`` call vs 24 single-layer calls.

Both sides are warmed up, then timed interleaved (ours, PEFT, ours, …) and reported as medians of ``REPEATS``
runs; torch uses as many threads as jax has cores. Ratios < 1 mean fourier_flax is faster.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import peft
import torch

from fourier_flax.methods.fourierft import delta_w, delta_w_reference, peft_entries

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/: experiment_paths
from experiment_paths import RESULTS as RESULTS_DIR  # noqa: E402

# isort: split
from bench_machine import machine_summary  # noqa: E402

SHAPES = "768x768,1024x1024,768x3072,4096x4096"
N_FREQUENCY = 1000
SCALING = 150.0
SEED = 777
REPEATS = 25
STACKED_LAYERS = 24
# torch's FFT with 2 threads slows ~10x when another process holds a core (measured here: 40 ms vs 4.6 ms for a
# 768x768 ifft2), so PEFT is timed with 1 and with all threads and credited with the faster.
TORCH_THREADS = (1, os.cpu_count() or 1)
RESULTS = RESULTS_DIR / "bench_delta_w.md"


def peft_layer(d1: int, d2: int):
    model = torch.nn.Sequential()
    model.add_module("lin", torch.nn.Linear(d1, d2))
    config = peft.FourierFTConfig(
        target_modules=["lin"], n_frequency=N_FREQUENCY, scaling=SCALING, random_loc_seed=SEED
    )
    return peft.get_peft_model(model, config).base_model.model.lin


def with_torch_threads(threads: int, fn):
    """``fn`` run with torch's intra-op pool at ``threads``."""

    def run():
        torch.set_num_threads(threads)
        return fn()

    return run


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved_medians(candidates: dict, repeats: int = REPEATS) -> dict[str, float]:
    """Median seconds of each zero-argument callable, after a warm-up, timed round-robin."""
    for fn in candidates.values():
        fn()
        fn()
    times = {name: [] for name in candidates}
    for _ in range(repeats):
        for name, fn in candidates.items():
            times[name].append(timed(fn))
    return {name: float(np.median(ts)) for name, ts in times.items()}


def shape_rows(d1: int, d2: int, repeats: int) -> dict[str, float]:
    layer = peft_layer(d1, d2)
    spectrum = layer.fourierft_spectrum["default"]
    entries = peft_entries((d1, d2), N_FREQUENCY, SEED)
    c = jnp.asarray(spectrum.detach().numpy())
    cotangent = np.random.default_rng(0).standard_normal((d1, d2)).astype(np.float32)
    g_ours, g_torch = jnp.asarray(cotangent), torch.from_numpy(cotangent.T.copy())

    forward = jax.jit(lambda c: delta_w(c, entries, (d1, d2), SCALING))
    forward_ref = jax.jit(lambda c: delta_w_reference(c, entries, (d1, d2), SCALING))
    loss_and_grad = jax.jit(jax.value_and_grad(lambda c: jnp.sum(g_ours * delta_w(c, entries, (d1, d2), SCALING))))
    loss_and_grad_ref = jax.jit(
        jax.value_and_grad(lambda c: jnp.sum(g_ours * delta_w_reference(c, entries, (d1, d2), SCALING)))
    )

    def peft_forward():
        with torch.no_grad():
            return layer.get_delta_weight("default")

    def peft_forward_backward():
        spectrum.grad = None
        loss = torch.sum(g_torch * layer.get_delta_weight("default"))
        loss.backward()
        return loss.item(), spectrum.grad

    medians = interleaved_medians(
        {
            "ours_fwd": lambda: forward(c).block_until_ready(),
            **{f"peft_fwd_{t}t": with_torch_threads(t, peft_forward) for t in TORCH_THREADS},
            "ref_fwd": lambda: forward_ref(c).block_until_ready(),
            "ours_fb": lambda: jax.block_until_ready(loss_and_grad(c)),
            **{f"peft_fb_{t}t": with_torch_threads(t, peft_forward_backward) for t in TORCH_THREADS},
            "ref_fb": lambda: jax.block_until_ready(loss_and_grad_ref(c)),
        },
        repeats,
    )
    for kind in ("fwd", "fb"):  # PEFT is credited with its faster thread setting
        medians[f"peft_{kind}"] = min(medians[f"peft_{kind}_{t}t"] for t in TORCH_THREADS)
    check = np.abs(np.asarray(forward(c)) - peft_forward().numpy().T).max()
    assert check <= 1e-5 * np.abs(np.asarray(forward(c))).max(), f"ours and PEFT disagree by {check}"
    return medians


def stacked_rows(d: int = 768) -> dict[str, float]:
    entries = peft_entries((d, d), N_FREQUENCY, SEED)
    c = jnp.asarray(np.random.default_rng(1).standard_normal((STACKED_LAYERS, N_FREQUENCY)), jnp.float32)
    stacked = jax.jit(lambda c: delta_w(c, entries, (d, d), SCALING))
    single = jax.jit(lambda c: delta_w(c, entries, (d, d), SCALING))
    return interleaved_medians(
        {
            "stacked": lambda: stacked(c).block_until_ready(),
            "loop": lambda: jax.block_until_ready([single(c[i]) for i in range(STACKED_LAYERS)]),
        },
        repeats=10,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default=SHAPES, help="d1xd2,... (n = 1000 must fit each)")
    parser.add_argument("--stacked-d", type=int, default=768, help="the stacked-layers row's d x d kernels")
    parser.add_argument("--repeats", type=int, default=REPEATS)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    shapes = [tuple(int(d) for d in s.split("x")) for s in args.shapes.split(",")]
    load_before = os.getloadavg()[0]
    lines = [
        "# delta_w vs PEFT get_delta_weight",
        "",
        f"Command: `.venv/bin/python {' '.join(['experiments/benchmarks/bench_delta_w.py', *sys.argv[1:]])}` — machine: "  # noqa: E501
        f"{machine_summary()}.",
        f"n={N_FREQUENCY}, scaling={SCALING}, medians of {args.repeats} interleaved runs after warm-up, milliseconds; "
        f"PEFT timed with torch threads {TORCH_THREADS}, the faster shown. "
        "fwd+bwd = loss sum(G·ΔW) and its gradient w.r.t. c. Ratio = fourier_flax ÷ PEFT (targets: fwd ≤ 0.7, "
        "fwd+bwd ≤ 0.5).",
        "",
        "| shape (d1, d2) | ours fwd | PEFT fwd | ratio fwd | ours fwd+bwd | PEFT fwd+bwd | ratio fwd+bwd "
        "| ifft2 ref fwd | ifft2 ref fwd+bwd |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for d1, d2 in shapes:
        m = {k: v * 1e3 for k, v in shape_rows(d1, d2, args.repeats).items()}
        row = (
            f"| ({d1}, {d2}) | {m['ours_fwd']:.2f} | {m['peft_fwd']:.2f} | {m['ours_fwd'] / m['peft_fwd']:.2f} "
            f"| {m['ours_fb']:.2f} | {m['peft_fb']:.2f} | {m['ours_fb'] / m['peft_fb']:.2f} "
            f"| {m['ref_fwd']:.2f} | {m['ref_fb']:.2f} |"
        )
        print(row, flush=True)
        lines.append(row)
    s = {k: v * 1e3 for k, v in stacked_rows(args.stacked_d).items()}
    lines += [
        "",
        f"{STACKED_LAYERS} stacked {args.stacked_d}×{args.stacked_d} layers in one call: {s['stacked']:.1f} ms; "
        f"{STACKED_LAYERS} single-layer calls: {s['loop']:.1f} ms (ratio {s['stacked'] / s['loop']:.2f}).",
    ]
    print(lines[-1])
    lines.append(
        f"\n1-minute load average before/after the run: {load_before:.2f} / {os.getloadavg()[0]:.2f} "
        "(PEFT's torch thread pool slows down sharply when other processes hold a core; compare only quiet runs)."
    )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n" + NOTES)


NOTES = """
## What was tried (forward, this CPU)

* `jnp.fft.ifft2(F).real` on a complex64 dense spectrum (the reference column): a full complex 2-D FFT.
* Hermitian half spectrum + `irfft2`: scatter `c/2` at `(u, v)` and `(-u, -v)`, keep columns `0..d2//2`.
* `Re(rfft2(F))` of the real dense spectrum, unfolding the missing half with `X[p, q] = X[-p, -q]` (shipped):
  a real-to-complex transform is cheaper than a complex-to-real one in XLA's CPU FFT, and the backward pass is
  one more `rfft2` (of the cotangent) read at the n entries, written as a `custom_vjp`.
* The half taken along axis 0 instead of axis 1, and two explicit 1-D transforms: no faster on these shapes.
"""


if __name__ == "__main__":
    main()
