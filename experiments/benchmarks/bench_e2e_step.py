"""Benchmark: the E2E table's train step on real E2E batches — what padding and the output layer cost.

Command (from the repo root)::

    .venv/bin/python experiments/benchmarks/bench_e2e_step.py                   # full run, ~10 min on this CPU
    .venv/bin/python experiments/benchmarks/bench_e2e_step.py --layers 1 --steps 2 --rounds 1 --batch 2 --mrs 20 \\
        --out /tmp/bench_e2e_step_smoke.md                        # smoke run (tests/test_bench_scripts.py)

Writes ``experiments/results/bench_e2e_step.md`` and the raw numbers to ``bench_e2e_step.json`` beside it.

The step of ``experiments/paper/e2e.py``: SmolLM2-135M-Instruct (float32 base from the GGUF), FourierFT n = 1000
on q_proj/v_proj, :class:`CausalLMTrainer` (AdamW, cross-entropy chunks of 128 tokens), batches of 8 of the
E2E training examples (dev set minus the selection slice; prompt in the chat template, loss on the reference and
its end token). The first ``--steps`` batches of the seed-0 stream under three configurations:

* ``pow2``: batches padded to powers of two (``encode_batches``' default), loss on the response;
* ``mult16``: padded to multiples of 16 tokens (the E2E runner's ``bucket_multiple=16``), loss on the response;
* ``mult16-all-tokens``: the ``mult16`` batches with the loss on every real token (``loss_mask`` = the attention
  mask): the output layer then runs on every chunk with a real token — the reference for what skipping the
  chunks without a loss token saves.

Every distinct batch shape is compiled (and timed) before the timed steps. ``--rounds`` rounds time each
configuration's steps in turn, the order reversed on odd rounds, sampling the other runnable threads on the
machine first (``procs_running``). Reported: median seconds per step over rounds (each round's mean over its
steps), tokens per step (B × T, padding included), padding and loss-token fractions, compile seconds.
"""

from __future__ import annotations

import argparse
import pathlib
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # experiments/: experiment_paths
from experiment_paths import REPO, RESULTS  # noqa: E402

# isort: split
from bench_machine import machine_summary, timed_rounds, write_results  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "e2e" / "original" / "devset.csv"
CONFIGS = ("pow2", "mult16", "mult16-all-tokens")


def e2e_batches(steps: int, batch_size: int, mrs: int | None) -> dict[str, list[dict[str, np.ndarray]]]:
    """The first ``steps`` training batches of the seed-0 stream under each configuration (``mrs``: only the
    first that many training MRs, for the smoke run)."""
    from fourier_flax.data.e2e import SYSTEM, read_e2e, split_mrs, training_pairs
    from fourier_flax.finetune.causal_lm import encode_batches, encode_chat
    from fourier_flax.models import llama, smollm2_path

    train, _ = split_mrs(read_e2e(DATA), fraction=0.1, seed=0)
    train = train[:mrs]
    examples = encode_chat(llama.load_tokenizer(smollm2_path()), training_pairs(train), system=SYSTEM)

    def first(multiple):
        stream = encode_batches(
            examples, batch_size, shuffle=True, seed=0, drop_remainder=True, bucket_multiple=multiple
        )
        return [batch for _, batch in zip(range(steps), stream, strict=False)]

    mult16 = first(16)
    all_tokens = [{**batch, "loss_mask": batch["attention_mask"].copy()} for batch in mult16]
    return {"pow2": first(None), "mult16": mult16, "mult16-all-tokens": all_tokens}


def trainer(layers: int):
    import jax

    import fourier_flax as ff
    from fourier_flax import nnx as ffnnx
    from fourier_flax.finetune.causal_lm import CausalLMTrainer
    from fourier_flax.models import llama, smollm2_path

    model = llama.from_gguf(smollm2_path(), num_hidden_layers=layers)
    config = ff.FourierFTConfig(target_modules=["q_proj", "v_proj"], n_frequency=1000, scaling=50.0)
    ffnnx.apply_adapter(model, config, jax.random.key(0))
    return CausalLMTrainer(model, learning_rate=1e-2, chunk=128)


def compile_shapes(step, batches) -> float:
    """Runs one batch of every distinct shape (compiling it); returns the seconds that took."""
    start, seen = time.perf_counter(), set()
    for batch in batches:
        if batch["input_ids"].shape not in seen:
            seen.add(batch["input_ids"].shape)
            step(batch)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--batch", type=int, default=8, help="examples per step (the E2E runner's 8)")
    parser.add_argument("--mrs", type=int, default=None, help="use only the first MRs (smoke run)")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "bench_e2e_step.md")
    args = parser.parse_args()

    streams = e2e_batches(args.steps, args.batch, args.mrs)
    train = trainer(args.layers)
    compile_s = {name: compile_shapes(train.step, streams[name]) for name in CONFIGS}

    def timed(name: str) -> float:
        start = time.perf_counter()
        for batch in streams[name]:
            train.step(batch)
        return (time.perf_counter() - start) / len(streams[name])

    times = timed_rounds(CONFIGS, timed, args.rounds)
    result = {
        "machine": machine_summary(("jax", "jaxlib", "flax")),
        "layers": args.layers,
        "batch": args.batch,
        "configs": {},
    }
    for name in CONFIGS:
        batches = streams[name]
        tokens = sum(b["input_ids"].size for b in batches)
        result["configs"][name] = {
            "s_per_step": statistics.median(t for t, _ in times[name]),
            "rounds": times[name],
            "tokens_per_step": tokens / len(batches),
            "padding": 1 - sum(int(b["attention_mask"].sum()) for b in batches) / tokens,
            "loss_tokens": sum(int(b["loss_mask"].sum()) for b in batches) / tokens,
            "shapes": sorted({b["input_ids"].shape[1] for b in batches}),
            "compile_s": compile_s[name],
        }
    write_results(args.out, result, report(result, " ".join(sys.argv[1:])))


def report(result: dict, command: str) -> str:
    configs = result["configs"]
    reference = configs["pow2"]["s_per_step"]
    lines = [
        "# E2E train step: padding and the output layer (SmolLM2-135M-Instruct, FourierFT n = 1000 on q/v)",
        "",
        f"`experiments/benchmarks/bench_e2e_step.py {command}`".replace(" `", "`"),
        f"Machine: {result['machine']}. {result['layers']} layers, {result['batch']} examples per step.",
        "",
        "| configuration | s / step (median over rounds) | / pow2 | tokens / step | padding | loss tokens "
        "| widths | compile s | runnable others per round |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, c in configs.items():
        lines.append(
            f"| {name} | {c['s_per_step']:.2f} | {c['s_per_step'] / reference:.2f}× | {c['tokens_per_step']:.0f} "
            f"| {c['padding']:.0%} | {c['loss_tokens']:.0%} | {', '.join(map(str, c['shapes']))} "
            f"| {c['compile_s']:.0f} | {', '.join(str(load) for _, load in c['rounds'])} |"
        )
    lines += [
        "",
        "pow2 and mult16 train on the same examples per step; mult16-all-tokens is mult16 with the loss on every "
        "real token (the cost of the output layer without skipping the chunks that hold no loss token).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
