"""Benchmark: the E2E table's test decode — beam search on real test MRs, adapter unmerged against merged.

Command (from the repo root)::

    .venv/bin/python experiments/benchmarks/bench_e2e_decode.py                 # full run, ~5 min on this CPU
    .venv/bin/python experiments/benchmarks/bench_e2e_decode.py --layers 1 --batches 1 --batch 2 --beams 2 \\
        --max-new-tokens 4 --rounds 1 --out /tmp/bench_e2e_decode_smoke.md    # smoke run (tests/test_bench_scripts.py)

Writes ``experiments/results/bench_e2e_decode.md`` and the raw numbers to ``bench_e2e_decode.json`` beside it.

The decode of ``experiments/paper/e2e.py``: SmolLM2-135M-Instruct (float32 base from the GGUF), FourierFT
n = 1000 on q_proj/v_proj with N(0, 1) coefficients at ``scaling`` 5 (a small, non-zero update, so the outputs
stay as long as the instruct model's own), :func:`fourier_flax.finetune.causal_lm.decode` with the table's
settings (beam ``--beams``, length penalty 0.9, no-repeat 4-grams, at most ``--max-new-tokens`` tokens) on
``--batches`` batches of ``--batch`` test MRs spread evenly through the test set. Two configurations:

* ``unmerged``: the adapter runs beside the frozen kernels, as the runner decodes (the 4-bit rows cannot merge);
* ``merged``: the same adapter merged into the kernels (:func:`fourier_flax.nnx.merge_adapter`).

Each configuration decodes once untimed (compiling every prompt width), then ``--rounds`` rounds time both in
turn, the order reversed on odd rounds, sampling the other runnable threads first. Reported: median seconds per
batch, the projected minutes for the 630 test MRs, and whether both configurations produce the same text.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # experiments/: experiment_paths
from experiment_paths import REPO, RESULTS  # noqa: E402

# isort: split
from bench_machine import machine_summary, timed_rounds, write_results  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "e2e" / "original" / "testset_w_refs.csv"
CONFIGS = ("unmerged", "merged")
TEST_MRS = 630


def models(layers: int):
    """The adapted model twice: as trained (unmerged) and merged."""
    import jax

    import fourier_flax as ff
    from fourier_flax import nnx as ffnnx
    from fourier_flax.models import llama, smollm2_path

    config = ff.FourierFTConfig(target_modules=["q_proj", "v_proj"], n_frequency=1000, scaling=5.0)
    built = {}
    for name in CONFIGS:
        model = llama.from_gguf(smollm2_path(), num_hidden_layers=layers)
        ffnnx.apply_adapter(model, config, jax.random.key(0))
        if name == "merged":
            ffnnx.merge_adapter(model)
        built[name] = model
    return built


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8, help="MRs per decode call (the E2E runner's 8)")
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "bench_e2e_decode.md")
    args = parser.parse_args()

    from fourier_flax.data.e2e import SYSTEM, mr_prompt, read_e2e
    from fourier_flax.finetune.causal_lm import decode
    from fourier_flax.models import llama, smollm2_path

    test = read_e2e(DATA)
    count = args.batches * args.batch
    prompts = [mr_prompt(test[i * len(test) // count].mr) for i in range(count)]
    tokenizer = llama.load_tokenizer(smollm2_path())
    settings = dict(system=SYSTEM, batch_size=args.batch, max_new_tokens=args.max_new_tokens, num_beams=args.beams,
                    length_penalty=0.9, no_repeat_ngram_size=4, eos_token_id=2)  # fmt: skip
    built = models(args.layers)
    outputs, compile_s = {}, {}
    for name, model in built.items():
        start = time.perf_counter()
        outputs[name] = decode(model, tokenizer, prompts, **settings)
        compile_s[name] = time.perf_counter() - start

    def timed(name: str) -> float:
        start = time.perf_counter()
        decode(built[name], tokenizer, prompts, **settings)
        return (time.perf_counter() - start) / args.batches

    times = timed_rounds(CONFIGS, timed, args.rounds)
    result = {
        "machine": machine_summary(("jax", "jaxlib", "flax")),
        "layers": args.layers,
        "batch": args.batch,
        "batches": args.batches,
        "beams": args.beams,
        "max_new_tokens": args.max_new_tokens,
        "same_outputs": outputs["unmerged"] == outputs["merged"],
        "mean_words": statistics.mean(len(text.split()) for text in outputs["unmerged"]),
        "configs": {
            name: {
                "s_per_batch": statistics.median(t for t, _ in times[name]),
                "rounds": times[name],
                "first_pass_s": compile_s[name],
            }
            for name in CONFIGS
        },
    }
    write_results(args.out, result, report(result, " ".join(sys.argv[1:])))


def report(result: dict, command: str) -> str:
    configs, per_test = result["configs"], math.ceil(TEST_MRS / result["batch"])
    reference = configs["unmerged"]["s_per_batch"]
    lines = [
        "# E2E test decode: beam search, adapter unmerged and merged (SmolLM2-135M-Instruct, FourierFT n = 1000)",
        "",
        f"`experiments/benchmarks/bench_e2e_decode.py {command}`".replace(" `", "`"),
        f"Machine: {result['machine']}. {result['layers']} layers; {result['batches']} batches of "
        f"{result['batch']} test MRs; beam {result['beams']}, length penalty 0.9, no-repeat 4-grams, at most "
        f"{result['max_new_tokens']} new tokens.",
        "",
        f"| configuration | s / batch (median over rounds) | / unmerged | {TEST_MRS} test MRs, min | first pass s "
        "| runnable others per round |",
        "|---|---|---|---|---|---|",
    ]
    for name, c in configs.items():
        lines.append(
            f"| {name} | {c['s_per_batch']:.2f} | {c['s_per_batch'] / reference:.2f}× "
            f"| {c['s_per_batch'] * per_test / 60:.1f} | {c['first_pass_s']:.0f} "
            f"| {', '.join(str(load) for _, load in c['rounds'])} |"
        )
    lines += [
        "",
        f"Same text from both: {'yes' if result['same_outputs'] else 'no'}; {result['mean_words']:.1f} words per "
        "output on average. The first pass compiles every prompt width and decodes once.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
