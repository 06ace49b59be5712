"""Benchmark: SmolLM2-135M-Instruct — a FourierFT train step and batched greedy decoding against transformers +
PEFT on the same weights, and the memory of the float and 4-bit bases.

Command (from the repo root)::

    .venv/bin/python experiments/benchmarks/bench_llm.py                     # full run, ~10 min on this 2-core CPU
    .venv/bin/python experiments/benchmarks/bench_llm.py --layers 1 --batch 2x16 --new-tokens 4 --rounds 1 \\
        --out /tmp/bench_llm_smoke.md                             # smoke run (tests/test_bench_scripts.py)

Writes ``experiments/results/bench_llm.md`` and the raw numbers to ``bench_llm.json`` beside it.

* **Train step**: FourierFT n = 1000 on q_proj/v_proj (60,000 trainable floats over 30 layers), AdamW, batch
  ``B × T`` of random token ids with the loss on every token. Ours: :class:`CausalLMTrainer` on the float32 base
  loaded from the GGUF (the chunked cross-entropy; spectral backward where ``backward="auto"`` picks it) and on the
  4-bit base; reference: transformers' ``LlamaForCausalLM`` built by its own GGUF loader (float32) with PEFT's
  ``FourierFTConfig(n_frequency=1000, scaling=150)``, ``model(input_ids, labels=input_ids).loss.backward()`` and
  ``torch.optim.AdamW`` (``torch.set_num_threads(2)``).
* **Decoding**: ``B`` chat prompts, left-padded, ``--new-tokens`` greedy tokens each with no early stop (ours:
  ``eos_token_id=()``; transformers: ``min_new_tokens`` = ``max_new_tokens``), the models without adapters;
  tokens per second = ``B × new tokens / wall time`` after a compiled warm-up.
* **Memory**: bytes of every array in the model's state (:func:`fourier_flax.models.quantized.state_bytes`).

Timing: ``--rounds`` rounds; each round times every configuration once, the order reversed on odd rounds; before
each measurement the number of other runnable threads on the machine is sampled (``procs_running``). Reported:
median seconds, the median of per-round ratios, and the same over quiet rounds (≤ 0.5 other runnable threads).
Targets (the issue on decoder LLMs): train step ≤ 0.8× PEFT's time, decoding ≥ 1× transformers' throughput, 4-bit
state ≤ 0.3× float32's.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import pathlib
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # experiments/: experiment_paths
from experiment_paths import RESULTS  # noqa: E402

# isort: split
from bench_machine import machine_summary, others_running  # noqa: E402

PROMPTS = [
    "What is the capital of France?",
    "Write a haiku about the sea.",
    "List three prime numbers.",
    "Explain photosynthesis in one sentence.",
    "Give me a synonym for happy.",
    "What is 12 times 12?",
    "Name a famous painter.",
    "Translate 'good morning' into Spanish.",
]


class Ours:
    def __init__(self, layers: int, batch: int, length: int, quantized: bool):
        import jax

        import fourier_flax as ff
        from fourier_flax import nnx as ffnnx
        from fourier_flax.finetune.causal_lm import CausalLMTrainer
        from fourier_flax.models import llama, smollm2_path

        self.model = llama.from_gguf(smollm2_path(), num_hidden_layers=layers, quantized=quantized)
        config = ff.FourierFTConfig(target_modules=["q_proj", "v_proj"], n_frequency=1000, scaling=150.0)
        ffnnx.apply_adapter(self.model, config, jax.random.key(0))
        self.trainer = CausalLMTrainer(self.model, learning_rate=1e-3)
        ids = np.random.default_rng(0).integers(0, 49152, (batch, length)).astype(np.int32)
        ones = np.ones_like(ids)
        self.batch = {"input_ids": ids, "attention_mask": ones, "loss_mask": ones}
        self.trainer.step(self.batch)  # compile

    def step(self) -> float:
        start = time.perf_counter()
        self.trainer.step(self.batch)
        return time.perf_counter() - start


@functools.cache
def hf_model(layers: int):
    """transformers' ``LlamaForCausalLM`` from the GGUF by its own loader (loaded once: it parses the file twice)."""
    import transformers

    from fourier_flax.models import smollm2_path

    path = smollm2_path()
    return transformers.AutoModelForCausalLM.from_pretrained(
        str(path.parent), gguf_file=path.name, num_hidden_layers=layers
    )


class Peft:
    def __init__(self, layers: int, batch: int, length: int):
        import peft
        import torch

        torch.set_num_threads(2)
        base = copy.deepcopy(hf_model(layers))  # get_peft_model adapts the model in place
        config = peft.FourierFTConfig(n_frequency=1000, scaling=150.0, target_modules=["q_proj", "v_proj"])
        self.model = peft.get_peft_model(base, config).train()
        self.optimizer = torch.optim.AdamW([p for p in self.model.parameters() if p.requires_grad], lr=1e-3)
        self.ids = torch.tensor(np.random.default_rng(0).integers(0, 49152, (batch, length)))
        self.torch = torch
        self.step()

    def step(self) -> float:
        start = time.perf_counter()
        loss = self.model(input_ids=self.ids, labels=self.ids).loss
        loss.backward()
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        return time.perf_counter() - start


def prompt_batch(batch: int):
    from fourier_flax.models import llama, smollm2_path

    tokenizer = llama.load_tokenizer(smollm2_path())
    tokenizer.padding_side = "left"
    texts = [
        tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False)
        for p in (PROMPTS * batch)[:batch]
    ]
    return tokenizer(texts, add_special_tokens=False, padding=True, return_tensors="np")


class OursDecode:
    def __init__(self, layers: int, batch: int, new_tokens: int):
        import fourier_flax as ff
        from fourier_flax.models import llama, smollm2_path

        self.model = llama.from_gguf(smollm2_path(), num_hidden_layers=layers)
        self.enc, self.new_tokens, self.generate = prompt_batch(batch), new_tokens, ff.generate
        self.run()

    def run(self) -> float:
        start = time.perf_counter()
        out = self.generate(
            self.model, self.enc["input_ids"], attention_mask=self.enc["attention_mask"],
            max_new_tokens=self.new_tokens, eos_token_id=(),
        )  # fmt: skip
        np.asarray(out)
        return time.perf_counter() - start


class HfDecode:
    def __init__(self, layers: int, batch: int, new_tokens: int):
        import torch

        torch.set_num_threads(2)
        self.model = hf_model(layers).eval()
        enc = prompt_batch(batch)
        self.ids, self.mask = torch.tensor(enc["input_ids"]), torch.tensor(enc["attention_mask"])
        self.new_tokens, self.torch = new_tokens, torch
        self.run()

    def run(self) -> float:
        start = time.perf_counter()
        with self.torch.no_grad():
            self.model.generate(
                self.ids, attention_mask=self.mask, do_sample=False, max_new_tokens=self.new_tokens,
                min_new_tokens=self.new_tokens, eos_token_id=2, pad_token_id=2,
            )  # fmt: skip
        return time.perf_counter() - start


def memory(layers: int) -> dict[str, int]:
    from fourier_flax.models import llama, smollm2_path
    from fourier_flax.models.quantized import state_bytes

    return {
        "float32": state_bytes(llama.from_gguf(smollm2_path(), num_hidden_layers=layers)),
        "4-bit": state_bytes(llama.from_gguf(smollm2_path(), num_hidden_layers=layers, quantized=True)),
    }


def loss_memory(layers: int, batch: int, length: int, chunk: int) -> dict[str, int]:
    """XLA's temp bytes of the compiled FourierFT loss gradient: the chunked cross-entropy against optax's
    cross-entropy over the whole batch's float32 logits (``memory_analysis`` of ``jit(grad)``)."""
    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    import fourier_flax as ff
    from fourier_flax import nnx as ffnnx
    from fourier_flax.finetune.causal_lm import causal_lm_loss
    from fourier_flax.models import llama, smollm2_path

    model = llama.from_gguf(smollm2_path(), num_hidden_layers=layers)
    config = ff.FourierFTConfig(target_modules=["q_proj", "v_proj"], n_frequency=1000, scaling=150.0)
    ffnnx.apply_adapter(model, config, jax.random.key(0))
    graphdef, params, frozen = nnx.split(model, ffnnx.AdapterParam, ...)
    ids = jnp.asarray(np.random.default_rng(0).integers(0, 49152, (batch, length)), jnp.int32)
    data = {"input_ids": ids, "attention_mask": jnp.ones_like(ids), "loss_mask": jnp.ones_like(ids)}

    def chunked(params):
        return causal_lm_loss(nnx.merge(graphdef, params, frozen), data, chunk=chunk)

    def full(params):
        logits = nnx.merge(graphdef, params, frozen)(ids[:, :-1])
        return optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]).mean()

    return {
        name: int(jax.jit(jax.grad(fn)).lower(params).compile().memory_analysis().temp_size_in_bytes)
        for name, fn in (("chunked", chunked), ("full-logits", full))
    }


def timed_rounds(runners: dict, rounds: int) -> dict[str, list[tuple[float, int]]]:
    times = {name: [] for name in runners}
    for round_index in range(rounds):
        order = list(runners) if round_index % 2 == 0 else list(reversed(runners))
        for name in order:
            time.sleep(0.3)  # let our own thread pools go idle before sampling the machine's load
            load = others_running()
            times[name].append((runners[name](), load))
    return times


def summary(times: dict, a: str, b: str) -> dict[str, float | None]:
    ratios = [ta / tb for (ta, la), (tb, lb) in zip(times[a], times[b], strict=True)]
    quiet = [ta / tb for (ta, la), (tb, lb) in zip(times[a], times[b], strict=True) if (la + lb) / 2 <= 0.5]
    return {
        "ratio": statistics.median(ratios),
        "quiet_ratio": statistics.median(quiet) if quiet else None,
        "quiet_rounds": len(quiet),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=30)
    parser.add_argument("--batch", default="8x128", help="train batch B x T")
    parser.add_argument("--decode-batch", type=int, default=8)
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "bench_llm.md")
    parser.add_argument(
        "--loss-memory", action="store_true", help="only the loss-memory comparison (to bench_llm_loss_memory.md)"
    )
    parser.add_argument("--chunk", type=int, default=256)
    args = parser.parse_args()
    batch, length = (int(x) for x in args.batch.split("x"))
    if args.loss_memory:
        memory_bytes = loss_memory(args.layers, batch, length, args.chunk)
        out = args.out.with_name(args.out.stem + "_loss_memory.md")
        mib = {k: v / 2**20 for k, v in memory_bytes.items()}
        out.write_text(
            "# Cross-entropy memory: token chunks vs the whole batch's logits\n\n"
            f"`experiments/benchmarks/bench_llm.py {' '.join(sys.argv[1:])}`\n"
            f"Machine: {machine_summary(('jax', 'jaxlib', 'flax'))}. {args.layers} layers, B × T = {batch} × "
            f"{length}, FourierFT n = 1000 on q/v; XLA temp bytes of the compiled gradient.\n\n"
            f"| loss | temp MiB |\n|---|---|\n| chunked ({args.chunk} tokens) | {mib['chunked']:.1f} |\n"
            f"| optax on full float32 logits | {mib['full-logits']:.1f} |\n\n"
            f"Saved: {mib['full-logits'] - mib['chunked']:.1f} MiB "
            f"({memory_bytes['chunked'] / memory_bytes['full-logits']:.2f}× the full-logits loss).\n"
        )
        print(out.read_text())
        return

    train = {"ours": Ours(args.layers, batch, length, quantized=False)}
    train["ours-4bit"] = Ours(args.layers, batch, length, quantized=True)
    train["peft"] = Peft(args.layers, batch, length)
    train_times = timed_rounds({name: runner.step for name, runner in train.items()}, args.rounds)
    del train
    decode = {
        "ours": OursDecode(args.layers, args.decode_batch, args.new_tokens),
        "transformers": HfDecode(args.layers, args.decode_batch, args.new_tokens),
    }
    decode_times = timed_rounds({name: runner.run for name, runner in decode.items()}, args.rounds)
    del decode
    mem = memory(args.layers)
    tokens = args.decode_batch * args.new_tokens
    result = {
        "layers": args.layers,
        "train_batch": [batch, length],
        "train_seconds": {k: [t for t, _ in v] for k, v in train_times.items()},
        "train_load": {k: [load for _, load in v] for k, v in train_times.items()},
        "train_vs_peft": summary(train_times, "ours", "peft"),
        "train_4bit_vs_peft": summary(train_times, "ours-4bit", "peft"),
        "decode_seconds": {k: [t for t, _ in v] for k, v in decode_times.items()},
        "decode_load": {k: [load for _, load in v] for k, v in decode_times.items()},
        "decode_tokens": tokens,
        "decode_time_vs_transformers": summary(decode_times, "ours", "transformers"),
        "state_bytes": mem,
        "machine": machine_summary(("jax", "jaxlib", "flax", "torch", "peft", "transformers")),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(result, indent=1) + "\n")
    args.out.write_text(report(result, " ".join(sys.argv[1:])))
    print(args.out.read_text())


def report(result: dict, command: str) -> str:
    def med(values):
        return statistics.median(values)

    def fmt(ratio):
        return "—" if ratio is None else f"{ratio:.2f}×"

    train, decode = result["train_vs_peft"], result["decode_time_vs_transformers"]
    train4 = result["train_4bit_vs_peft"]
    through = {k: result["decode_tokens"] / med(v) for k, v in result["decode_seconds"].items()}
    decode_ratio = 1 / decode["ratio"]
    decode_quiet = None if decode["quiet_ratio"] is None else 1 / decode["quiet_ratio"]
    mem = result["state_bytes"]
    lines = [
        "# SmolLM2-135M-Instruct: train step, decoding, memory",
        "",
        f"`experiments/benchmarks/bench_llm.py {command}`".replace(" `", "`"),
        f"Machine: {result['machine']}. {result['layers']} layers.",
        "",
        f"## Train step (FourierFT n = 1000 on q/v, AdamW, B × T = {result['train_batch'][0]} × "
        f"{result['train_batch'][1]})",
        "",
        "| configuration | median s | runnable others (median) |",
        "|---|---|---|",
    ]
    for name, times in result["train_seconds"].items():
        lines.append(f"| {name} | {med(times):.2f} | {med(result['train_load'][name]):.0f} |")
    lines += [
        "",
        f"Ours / PEFT (float base): {fmt(train['ratio'])} all rounds, {fmt(train['quiet_ratio'])} over "
        f"{train['quiet_rounds']} quiet rounds; 4-bit base / PEFT: {fmt(train4['ratio'])} "
        f"({fmt(train4['quiet_ratio'])} quiet). Target ≤ 0.80×.",
        "",
        f"## Batched greedy decoding ({result['decode_tokens']} new tokens per call)",
        "",
        "| decoder | median s | tokens/s |",
        "|---|---|---|",
    ]
    for name, times in result["decode_seconds"].items():
        lines.append(f"| {name} | {med(times):.2f} | {through[name]:.1f} |")
    lines += [
        "",
        f"Our throughput / transformers': {decode_ratio:.2f}× all rounds, "
        f"{'—' if decode_quiet is None else f'{decode_quiet:.2f}×'} quiet ({decode['quiet_rounds']} rounds). "
        "Target ≥ 1×.",
        "",
        "## Memory of the model's state",
        "",
        f"float32 {mem['float32'] / 2**20:.1f} MiB, 4-bit {mem['4-bit'] / 2**20:.1f} MiB: "
        f"{mem['4-bit'] / mem['float32']:.3f}× (target ≤ 0.3×).",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
