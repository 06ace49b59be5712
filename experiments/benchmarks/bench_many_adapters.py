"""Benchmark: many adapters in one batch — FourierFT banks (spectral, per example) against LoRA banks (gathered
factors), FourierFT merged per adapter (requests grouped by adapter) and the base model alone.

Command (from the repo root)::

    .venv/bin/python experiments/benchmarks/bench_many_adapters.py       # full run, ~20 min on this 2-core CPU
    .venv/bin/python experiments/benchmarks/bench_many_adapters.py --minilm-layers 1 --llm-layers 1 --minilm-batch 4 \\
        --llm-batch 2 --distinct 1,2 --new-tokens 2 --rounds 1 --out /tmp/bench_many.md    # smoke run

Writes ``experiments/results/bench_many_adapters.md`` and the raw numbers to ``bench_many_adapters.json``.

Two workloads, each with a bank of ``A`` adapters on ``q``/``v`` (FourierFT n = 1000, scaling 150; LoRA r = 8)
and ``k`` distinct adapters among the ``B`` requests (request ``b`` on adapter ``b mod k``):

* **MiniLM encode**: the real all-MiniLM-L6-v2 (linen, Hugging Face Flax), ``B`` requests × 32 random tokens,
  one jitted forward pass to the last hidden state; ``A = B``.
* **SmolLM2 decode**: the real SmolLM2-135M-Instruct (NNX, float32 from its GGUF), ``B`` prompts × 32 random
  tokens, ``--new-tokens`` greedy tokens each (no early stop) with :func:`fourier_flax.generate`; ``A = B``. Also one
  shared FourierFT adapter left unmerged (``ff.nnx.apply_adapter``, no bank), against the base model.

Configurations: ``base`` (no adapter), ``fourierft-bank`` (:class:`fourier_flax.bank.AdapterBank`, traced
``adapter_ids``: ``x @ W0`` plus each request's ``spectral_matmul``), ``lora-bank`` (gathered A/B: Punica-style),
``fourierft-merged`` (each adapter merged into its own copy of the q/v kernels ahead of time, then one call per
group of requests on the same adapter; the merges are not timed, their memory is reported).

Timing: ``--rounds`` rounds, every configuration once per round in an order reversed on odd rounds, after a
compiled warm-up; the number of other processes' runnable threads is sampled before each measurement. Reported: median
seconds, per-round ratios to ``base`` (median), and the same over quiet rounds (≤ 0.5 other runnable threads).
Targets (the issue on many adapters): with every request on its own adapter (``k = B``), ``fourierft-bank`` ≤
1.3× ``base`` and ≤ ``lora-bank``.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time
from collections.abc import Callable

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # experiments/: experiment_paths
from experiment_paths import RESULTS  # noqa: E402

# isort: split
from bench_machine import machine_summary, others_running  # noqa: E402

QUIET = 0.5
TOKENS = 32


def _adapters(names: tuple[str, str]):
    import fourier_flax as ff

    fourier = ff.FourierFTConfig(target_modules=list(names), n_frequency=1000, scaling=150.0)
    lora = ff.LoraConfig(target_modules=list(names), r=8, lora_alpha=8.0)
    return fourier, lora


class MiniLM:
    """Callables for the MiniLM encode workload, one per configuration, for ``k`` distinct adapters."""

    def __init__(self, layers: int, batch: int):
        import jax
        import jax.numpy as jnp

        import fourier_flax as ff
        from fourier_flax.bank import AdapterBank, bank_bytes_per_adapter
        from fourier_flax.bank import adapter_ids as use_adapter_ids
        from fourier_flax.models.hf import load_minilm

        self.model, self.base = load_minilm(num_hidden_layers=layers)
        self.batch = batch
        rng = np.random.default_rng(0)
        self.ids = jnp.asarray(rng.integers(1000, 30000, (batch, TOKENS)), jnp.int32)
        fourier, lora = _adapters(("query", "value"))
        self.inner = fourier
        self.banks = {}
        for name, inner in (("fourierft-bank", fourier), ("lora-bank", lora)):
            bank = AdapterBank(inner, batch)
            self.banks[name] = (bank, ff.init_adapter(self.base, bank, jax.random.key(1), check_scale=False))
        model = self.model

        @jax.jit
        def plain(params, ids):
            return model(ids, params=params).last_hidden_state

        def banked(bank):
            @jax.jit
            def forward(params, ids, adapter_ids):
                with ff.intercept(bank), use_adapter_ids(adapter_ids):
                    return model(ids, params=params).last_hidden_state

            return forward

        self.plain = plain
        self.forward = {name: banked(bank) for name, (bank, _) in self.banks.items()}
        self.bytes_per_adapter = {name: bank_bytes_per_adapter(p, bank) for name, (bank, p) in self.banks.items()}

    def merged(self, k: int) -> tuple[list, int]:
        """``k`` adapters merged into their own params trees (untouched leaves shared), and the bytes they add."""
        import fourier_flax as ff
        from fourier_flax.bank import bank_member

        bank, params = self.banks["fourierft-bank"]
        trees, added = [], 0
        for i in range(k):
            merged = ff.merge_adapter(bank_member(params, bank, i), self.inner)
            trees.append(merged)
            added += sum(
                np.asarray(leaf).nbytes
                for path, leaf in _flat(merged).items()
                if path[-1] == "kernel" and path[-2] in ("query", "value")
            )
        return trees, added

    def runners(self, k: int) -> tuple[dict[str, Callable[[], object]], dict]:
        import jax
        import jax.numpy as jnp

        adapter_ids = jnp.asarray(np.arange(self.batch) % k, jnp.int32)
        merged, merged_bytes = self.merged(k)
        groups = [np.flatnonzero(np.asarray(adapter_ids) == i) for i in range(k)]
        ids = self.ids

        def run_merged():
            return [self.plain(merged[i], ids[rows]) for i, rows in enumerate(groups)]

        runs = {
            "base": lambda: self.plain(self.base, ids),
            "fourierft-bank": lambda: self.forward["fourierft-bank"](self.banks["fourierft-bank"][1], ids, adapter_ids),
            "lora-bank": lambda: self.forward["lora-bank"](self.banks["lora-bank"][1], ids, adapter_ids),
            "fourierft-merged": run_merged,
        }
        return {name: (lambda f=f: jax.block_until_ready(f())) for name, f in runs.items()}, {
            "fourierft-merged bytes per adapter": merged_bytes // k
        }


class SmolLM2:
    """Callables for the SmolLM2 decode workload."""

    def __init__(self, layers: int, batch: int, new_tokens: int):
        import jax
        import jax.numpy as jnp
        from flax import nnx

        import fourier_flax as ff
        from fourier_flax import nnx as ffnnx
        from fourier_flax.bank import AdapterBank
        from fourier_flax.models import llama, smollm2_path

        self.batch, self.new_tokens = batch, new_tokens
        rng = np.random.default_rng(0)
        self.ids = jnp.asarray(rng.integers(100, 40000, (batch, TOKENS)), jnp.int32)
        fourier, lora = _adapters(("q_proj", "v_proj"))
        self.models = {"base": llama.from_gguf(smollm2_path(), num_hidden_layers=layers)}
        for name, inner in (("fourierft-bank", fourier), ("lora-bank", lora)):
            model = llama.from_gguf(smollm2_path(), num_hidden_layers=layers)
            ffnnx.apply_adapter(model, AdapterBank(inner, batch), jax.random.key(1))
            self.models[name] = model
        shared = llama.from_gguf(smollm2_path(), num_hidden_layers=layers)  # one adapter, left unmerged
        ffnnx.apply_adapter(shared, fourier, jax.random.key(1))
        self.models["shared"] = shared
        self.bank_layers = ffnnx.adapted_layers(self.models["fourierft-bank"])
        self.bytes_per_adapter = {
            name: sum(
                np.asarray(v[...]).nbytes
                for layer in ffnnx.adapted_layers(self.models[name]).values()
                for v in layer.adapter.values()
            )
            // batch
            for name in ("fourierft-bank", "lora-bank")
        }
        self.inner = fourier
        self.nnx, self.ff = nnx, ff

    def merged(self, k: int) -> tuple[list[dict], int]:
        """Per adapter, the merged q/v kernels ``W0 + ΔW_i`` by layer path, and the bytes one adapter adds."""
        from fourier_flax.adapted_modules import module_delta_w

        kernels, added = [], 0
        for i in range(k):
            per_layer = {}
            for path, layer in self.bank_layers.items():
                params = layer._params()
                member = {**params, "fourierft_spectrum": params["fourierft_spectrum"][i]}
                per_layer[path] = params["kernel"] + module_delta_w(self.inner, path, member)
                added += per_layer[path].nbytes if i == 0 else 0
            kernels.append(per_layer)
        return kernels, added

    def shared_runners(self) -> dict[str, Callable[[], object]]:
        """One shared FourierFT adapter left unmerged (ΔW is loop-invariant: XLA forms it once per ``generate``)."""
        import jax

        settings = {"max_new_tokens": self.new_tokens, "eos_token_id": ()}
        runs = {"base": self.models["base"], "fourierft-unmerged": self.models["shared"]}
        return {
            name: (lambda m=m: jax.block_until_ready(self.ff.generate(m, self.ids, **settings)))
            for name, m in runs.items()
        }

    def runners(self, k: int) -> tuple[dict[str, Callable[[], object]], dict]:
        import jax
        import jax.numpy as jnp

        generate, base = self.ff.generate, self.models["base"]
        adapter_ids = jnp.asarray(np.arange(self.batch) % k, jnp.int32)
        kernels, merged_bytes = self.merged(k)
        groups = [np.flatnonzero(np.asarray(adapter_ids) == i) for i in range(k)]
        originals = {path: _layer(base, path).kernel[...] for path in self.bank_layers}
        settings = {"max_new_tokens": self.new_tokens, "eos_token_id": ()}

        def run_merged():
            out = []
            for i, rows in enumerate(groups):
                for path, kernel in kernels[i].items():  # swap the adapter's kernels in (not a copy)
                    _layer(base, path).kernel[...] = kernel
                out.append(generate(base, self.ids[rows], **settings))
            for path, kernel in originals.items():
                _layer(base, path).kernel[...] = kernel
            return out

        runs = {
            "base": lambda: generate(base, self.ids, **settings),
            "fourierft-bank": lambda: generate(
                self.models["fourierft-bank"], self.ids, adapter_ids=adapter_ids, **settings
            ),
            "lora-bank": lambda: generate(self.models["lora-bank"], self.ids, adapter_ids=adapter_ids, **settings),
            "fourierft-merged": run_merged,
        }
        return {name: (lambda f=f: jax.block_until_ready(f())) for name, f in runs.items()}, {
            "fourierft-merged bytes per adapter": merged_bytes
        }


def _flat(tree) -> dict:
    from flax import traverse_util

    return traverse_util.flatten_dict(tree)


def _layer(model, path: str):
    node = model
    for part in path.split("."):
        node = node[int(part)] if part.isdigit() else getattr(node, part)
    return node


def measure(runs: dict[str, Callable[[], object]], rounds: int) -> dict:
    for run in runs.values():  # compile and warm up
        run()
        run()
    times = {name: [] for name in runs}
    contention = []
    names = list(runs)
    for r in range(rounds):
        busy = []
        for name in names if r % 2 == 0 else names[::-1]:
            busy.append(others_running())
            start = time.perf_counter()
            runs[name]()
            times[name].append(time.perf_counter() - start)
        contention.append(float(np.mean(busy)))
    return {"times": times, "contention": contention}


def ratio_cells(entry: dict, name: str) -> tuple[str, str]:
    times, contention = entry["times"], entry["contention"]
    ratios = [t / b for t, b in zip(times[name], times["base"], strict=True)]
    quiet = [x for x, c in zip(ratios, contention, strict=True) if c <= QUIET]
    return f"{statistics.median(ratios):.2f}×", (f"{statistics.median(quiet):.2f}× ({len(quiet)})" if quiet else "—")


def render(results: dict, command: str) -> str:
    lines = [
        "# Many adapters in one batch: FourierFT banks vs LoRA banks vs merged-per-adapter vs the base model",
        "",
        f"Command: `{command}`. Machine: {machine_summary(('jax', 'jaxlib', 'flax'))}.",
        "Method: the script's docstring. Seconds per call, median over rounds; ratios: median over rounds of the "
        f"configuration's time ÷ base's in the same round; quiet rounds: ≤ {QUIET} other runnable threads.",
        "",
    ]
    for workload, entries in results.items():
        lines += [f"## {workload}", "", "| distinct adapters k | configuration | s / call | ÷ base | ÷ base (quiet) |"]
        lines.append("|---|---|---:|---:|---:|")
        for key, entry in entries.items():
            for name in entry["times"]:
                median = statistics.median(entry["times"][name])
                every, quiet = ratio_cells(entry, name) if name != "base" else ("1.00×", "1.00×")
                lines.append(f"| {key} | {name} | {median:.4f} | {every} | {quiet} |")
        last_key = list(entries)[-1]
        last = entries[last_key]
        fourier = [f / b for f, b in zip(last["times"]["fourierft-bank"], last["times"]["base"], strict=True)]
        versus_lora = [f / g for f, g in zip(last["times"]["fourierft-bank"], last["times"]["lora-bank"], strict=True)]
        lines += [
            "",
            f"Every request on its own adapter ({last_key}): fourierft-bank ÷ base = {statistics.median(fourier):.2f}× "
            f"(target ≤ 1.3×: {'met' if statistics.median(fourier) <= 1.3 else '**not met**'}); fourierft-bank ÷ "
            f"lora-bank = {statistics.median(versus_lora):.2f}× (target ≤ 1: "
            f"{'met' if statistics.median(versus_lora) <= 1 else '**not met**'}). Other runnable threads per round: "
            + ", ".join(f"{c:.1f}" for c in last["contention"])
            + ".",
            f"Memory per adapter: FourierFT {last['fourierft bytes per adapter']:,d} B, LoRA "
            f"{last['lora bytes per adapter']:,d} B, FourierFT merged (its own q/v kernels) "
            f"{last['fourierft-merged bytes per adapter']:,d} B.",
            "",
        ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minilm-layers", type=int, default=6)
    parser.add_argument("--minilm-batch", type=int, default=64)
    parser.add_argument("--llm-layers", type=int, default=30)
    parser.add_argument("--llm-batch", type=int, default=16)
    parser.add_argument("--distinct", default="1,8,B", help="distinct adapters k per workload; B = the batch")
    parser.add_argument("--new-tokens", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--workloads", default="minilm,smollm2")
    parser.add_argument("--out", type=pathlib.Path, default=RESULTS / "bench_many_adapters.md")
    args = parser.parse_args()
    results = {}
    for workload in args.workloads.split(","):
        if workload == "minilm":
            bench, batch = MiniLM(args.minilm_layers, args.minilm_batch), args.minilm_batch
            title = f"MiniLM encode ({args.minilm_layers} layers), {batch} requests × {TOKENS} tokens"
        else:
            bench, batch = SmolLM2(args.llm_layers, args.llm_batch, args.new_tokens), args.llm_batch
            title = (
                f"SmolLM2 decode ({args.llm_layers} layers), {batch} prompts × {TOKENS} tokens, "
                f"{args.new_tokens} new tokens"
            )
        entries = {}
        if workload == "smollm2":
            entries["one shared adapter, unmerged"] = measure(bench.shared_runners(), args.rounds)
        for token in args.distinct.split(","):
            k = batch if token == "B" else int(token)
            runs, extra = bench.runners(k)
            entry = measure(runs, args.rounds)
            entry.update(extra)
            entry["fourierft bytes per adapter"] = bench.bytes_per_adapter["fourierft-bank"]
            entry["lora bytes per adapter"] = bench.bytes_per_adapter["lora-bank"]
            entries[f"k = {k}" + (" = B" if k == batch else "")] = entry
            print(f"{title} k={k}: " + ", ".join(f"{n} {statistics.median(t):.4f}s" for n, t in entry["times"].items()),
                  flush=True)  # fmt: skip
        results[title] = entries
    command = " ".join(["python experiments/benchmarks/bench_many_adapters.py", *sys.argv[1:]])
    text = render(results, command)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".json").write_text(json.dumps(results, indent=1) + "\n")
    args.out.write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
