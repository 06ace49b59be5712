"""Benchmark: the memory one FourierFT training step adds, fourier_flax (with and without remat) vs PEFT.

Command (from the repo root)::

    .venv/bin/python experiments/benchmarks/bench_memory.py      # ~15 min on this 2-core CPU (one process per cell)
    .venv/bin/python experiments/benchmarks/bench_memory.py --shapes minilm/8 --timed-steps 10  # + step times, quiet

Writes ``experiments/results/bench_memory.md`` (with ``--timed-steps``: ``bench_memory_speed.md``, adding the
median time of that many further steps in the same process and the machine's runnable-thread count).

Same models, batches, configurations and measures as
``experiments/benchmarks/bench_train_step.py`` (whose worker code this reuses): FourierFT n = 1000, scaling 150 on
query/value with the classifier trained, AdamW, dropout on, random token ids ``B × 128``. Each cell is a fresh
process: it builds the model, adapter and batch (JAX also compiles), returns freed heap to the OS, resets the
kernel's peak-RSS mark and records RSS; then it creates the optimizer state and runs one step. Reported: peak
RSS minus that baseline (the memory training adds: optimizer state, activations, gradients, temporaries) and,
for JAX, the compiled step's ``memory_analysis()`` (argument + output + temp − aliased bytes).

Configurations: ``fourierft`` (``backward="auto"``), ``fourierft-remat`` (the same with Hugging Face's
``enable_gradient_checkpointing``: each encoder layer is recomputed in the backward pass instead of keeping its
activations; ``load_classifier(remat=True)`` / ``--remat`` in the GLUE pipeline), ``fourierft-remat-memsched``
(the same with ``XLA_FLAGS=--xla_cpu_enable_concurrency_optimized_scheduler=false``: XLA:CPU's default scheduler
orders ops for concurrency and keeps far more buffers live; GPU/TPU schedulers differ), ``floor`` (the frozen
backbone back-propagated to its inputs) and ``peft-fourierft`` (PyTorch). Memory does not depend on machine load.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/: experiment_paths
from experiment_paths import RESULTS  # noqa: E402

# isort: split
import bench_train_step as bench  # noqa: E402  (the shared workers)

SHAPES = (("minilm", 8), ("minilm", 32), ("roberta-base", 32))
JAX_CONFIGS = ("fourierft", "fourierft-remat", "fourierft-remat-memsched", "floor")
# PEFT as loaded, and with transformers' gradient checkpointing (non-reentrant, so the frozen embeddings' outputs
# need no requires_grad): the like-for-like reference for our remat.
TORCH_CONFIGS = ("peft-fourierft", "peft-fourierft-gc")
# XLA:CPU's default scheduler favours concurrency over memory; this flag makes it minimise live memory instead.
MEMORY_SCHEDULER = "--xla_cpu_enable_concurrency_optimized_scheduler=false"


class RematBench(bench.JaxBench):
    """``JaxBench`` plus ``fourierft`` (backward auto) and ``fourierft-remat``."""

    def setup(self, name: str):
        if name.startswith("fourierft-remat"):
            self.model.enable_gradient_checkpointing()
        if name.startswith("fourierft"):
            name = "fourierft-auto"
        return super().setup(name)


def _timed(step, count: int) -> float:
    import statistics
    import time

    samples = []
    for _ in range(count):
        start = time.perf_counter()
        step()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)


def worker(framework: str, model_name: str, batch: int, name: str, timed_steps: int) -> None:
    """Prints ``{"rss_delta_mib": ..., "xla": {...}}`` for one configuration (run in a fresh process)."""
    protocol, sys.stdout = sys.stdout, sys.stderr
    out = {}
    if framework == "jax":
        jax_bench = RematBench(model_name, batch)
        compiled, trainable, init, frozen, _ = jax_bench.setup(name)
        out["xla"] = bench.jax_memory(compiled)
        base = bench.reset_peak_rss()
        state = [bench.run_jax_step(compiled, (trainable, init()), frozen, jax_bench.batch, jax_bench.rng)]

        def step():
            state[0] = bench.run_jax_step(compiled, state[0], frozen, jax_bench.batch, jax_bench.rng)

    else:
        step, _ = bench.TorchBench(model_name, batch).setup(name)
        base = bench.reset_peak_rss()
        step()
    out["rss_delta_mib"] = (bench.rss_kib("VmHWM") - base) / 1024
    if timed_steps:
        out["others_running"] = bench.others_running()
        out["step_s"] = _timed(step, timed_steps)
    print(json.dumps(out), file=protocol, flush=True)


def main() -> None:
    import argparse
    import subprocess

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", nargs=5, metavar=("FRAMEWORK", "MODEL", "BATCH", "CONFIG", "STEPS"))
    parser.add_argument("--shapes", default=",".join(f"{m}/{b}" for m, b in SHAPES), help="MODEL/BATCH,...")
    parser.add_argument("--timed-steps", type=int, default=0, help="also time this many steps per cell")
    parser.add_argument("--configs", default=",".join(JAX_CONFIGS + TORCH_CONFIGS), help="a subset, comma-separated")
    parser.add_argument("--out", type=Path, help="default: results/bench_memory.md (bench_memory_speed.md if timed)")
    args = parser.parse_args()
    if args.worker:
        framework, model_name, batch, name, steps = args.worker
        return worker(framework, model_name, int(batch), name, int(steps))
    shapes = [(item.split("/")[0], int(item.split("/")[1])) for item in args.shapes.split(",")]
    timed = args.timed_steps > 0

    lines = [
        "# Memory of one FourierFT training step: fourier_flax (± remat) vs PEFT",
        "",
        f"Written by `{' '.join(['python experiments/benchmarks/bench_memory.py', *sys.argv[1:]])}` (method: its docstring).",  # noqa: E501
        "RSS Δ: peak RSS of a",
        "fresh process over its baseline after loading (optimizer state + one step); XLA peak: the compiled",
        "step's argument + output + temp − aliased bytes (weights included). MiB.",
        "",
        "| model | batch | configuration | RSS Δ (MiB) | ÷ PEFT's RSS Δ | XLA peak (MiB) | XLA temp (MiB) |"
        + (" step (s) | ÷ PEFT's step | other runnable threads |" if timed else ""),
        "|---|---|---|---:|---:|---:|---:|" + ("---:|---:|---:|" if timed else ""),
    ]
    for model_name, batch in shapes:
        cells = {}
        wanted = args.configs.split(",")
        configs = [("jax", c) for c in JAX_CONFIGS] + [("torch", c) for c in TORCH_CONFIGS]
        for framework, name in [(f, c) for f, c in configs if c in wanted]:
            command = [sys.executable, __file__, "--worker", framework, model_name, str(batch), name]
            command.append(str(args.timed_steps))
            env = dict(os.environ)
            if name.endswith("memsched"):
                env["XLA_FLAGS"] = (env.get("XLA_FLAGS", "") + " " + MEMORY_SCHEDULER).strip()
            done = subprocess.run(command, capture_output=True, text=True, check=True, env=env)
            cells[name] = json.loads(done.stdout.strip().splitlines()[-1])
            print(f"{model_name} {batch}x128 {name}: {cells[name]}", file=sys.stderr, flush=True)
        peft = cells.get("peft-fourierft") or cells[TORCH_CONFIGS[-1]]
        for name, cell in cells.items():
            xla = cell.get("xla")
            peak = f"{xla['peak'] / 2**20:,.0f}" if xla else "—"
            temp = f"{xla['temp'] / 2**20:,.0f}" if xla else "—"
            row = (
                f"| {model_name} | {batch}x128 | {name} | {cell['rss_delta_mib']:,.0f} | "
                f"{cell['rss_delta_mib'] / peft['rss_delta_mib']:.2f} | {peak} | {temp} |"
            )
            if timed:
                row += f" {cell['step_s']:.3f} | {cell['step_s'] / peft['step_s']:.2f} | {cell['others_running']} |"
            lines.append(row)
    out = args.out or RESULTS / ("bench_memory_speed.md" if timed else "bench_memory.md")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
