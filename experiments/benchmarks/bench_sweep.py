"""Wall time of S seeds trained as one vmapped, jitted program vs S sequential runs (compiled once, reused).

Command::

  .venv/bin/python experiments/benchmarks/bench_sweep.py            # S = 4 seeds; ~3-6 min on the shared 2-core CPU

Config: real all-MiniLM-L6-v2 cut to 2 layers, FourierFT (n = 200 on query/value) + head, synthetic token batches
(the sweep machinery, not the data, is measured), batch 8, length 16, 12 steps. Compilation (``lower().compile()``)
and execution are timed separately, once each, vmapped first; the sequential runs reuse one compiled program.
Also checks that both give the same losses per seed.
Writes ``experiments/results/bench_sweep.md``.
"""

import argparse
import os
import pathlib
import platform
import sys
import time

import jax
import numpy as np

from fourier_flax.finetune import load_classifier, resolve_run
from fourier_flax.finetune.sweep import make_seed_run, seed_grid

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # experiments/: experiment_paths
from experiment_paths import RESULTS as RESULTS_DIR  # noqa: E402

RESULTS = RESULTS_DIR / "bench_sweep.md"


def synthetic_train(num_examples: int, length: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        "input_ids": rng.integers(1000, 20000, size=(num_examples, length)).astype(np.int32),
        "attention_mask": np.ones((num_examples, length), np.int32),
        "token_type_ids": np.zeros((num_examples, length), np.int32),
        "labels": rng.integers(0, 2, size=num_examples).astype(np.int32),
    }


def timed(fn):
    start = time.perf_counter()
    out = jax.block_until_ready(fn())
    return out, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS)
    args = parser.parse_args()
    run = resolve_run(
        "sst2",
        preset="tiny",
        overrides={"n_frequency": 200, "batch_size": 8, "max_length": 16, "max_steps": args.steps, "epochs": 100},
    )
    model, base = load_classifier(num_labels=2, num_layers=2)
    run_seed = make_seed_run(model, base, run, synthetic_train(64, run.max_length))
    grid = seed_grid(list(range(args.seeds)), [(run.lr, run.head_lr, run.scaling)])
    vmapped, c_sweep = timed(lambda: jax.jit(jax.vmap(run_seed)).lower(*grid).compile())
    (_, swept_losses), r_sweep = timed(lambda: vmapped(*grid))
    single, c_seq = timed(lambda: jax.jit(run_seed).lower(*(x[0] for x in grid)).compile())
    (_, seq_losses), r_seq = timed(
        lambda: jax.tree.map(lambda *xs: np.stack(xs), *[single(*a) for a in zip(*grid, strict=True)])
    )
    t_sweep, t_seq = c_sweep + r_sweep, c_seq + r_seq
    max_diff = float(np.max(np.abs(np.asarray(swept_losses) - np.asarray(seq_losses))))
    lines = [
        "# Seed sweep: one vmapped program vs sequential runs",
        "",
        f"Produced by `.venv/bin/python experiments/benchmarks/bench_sweep.py` (`--seeds {args.seeds} --steps {args.steps}`).",  # noqa: E501
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs while measured), "
        f"jax {jax.__version__}. Model: all-MiniLM-L6-v2 cut to 2 layers, FourierFT n={run.n_frequency} on "
        f"query/value + head, batch {run.batch_size}, length {run.max_length}, {args.steps} steps per seed.",
        "",
        "| | compile (s) | run (s) | total (s) |",
        "|---|---|---|---|",
        f"| {args.seeds} seeds, `jit(vmap(run_seed))` | {c_sweep:.1f} | {r_sweep:.1f} | {t_sweep:.1f} |",
        f"| {args.seeds} seeds, sequential `jit(run_seed)` (compiled once) | {c_seq:.1f} | {r_seq:.1f} | {t_seq:.1f} |",
        f"| ratio sequential / vmapped | {c_seq / c_sweep:.2f} | {r_seq / r_sweep:.2f} | {t_seq / t_sweep:.2f} |",
        "",
        f"Largest per-step loss difference between the two: {max_diff:.2e}.",
        "One measurement each, on a machine shared with other jobs: treat the ratios as indicative (a second run "
        "can differ by tens of percent). A ratio below 1 means the vmapped sweep was slower in that column.",
        "",
    ]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
