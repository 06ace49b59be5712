"""Benchmark: one training step of FourierFT vs LoRA vs head-only vs the frozen floor, JAX and PEFT/PyTorch.

Command (from the repo root)::

    .venv/bin/python experiments/benchmarks/bench_train_step.py            # full run, ~30 min on this 2-core CPU
    .venv/bin/python experiments/benchmarks/bench_train_step.py --models minilm --batches 8x128 --repeats 3 \
        --out /tmp/smoke.md                                      # smoke run, ~10 min

Writes ``experiments/results/bench_train_step.md`` and the raw numbers to ``bench_train_step.json`` beside it
(after each shape, so ``--resume`` continues an interrupted run).

Models: the real all-MiniLM-L6-v2 (6 layers, hidden 384) and a random-init RoBERTa-base-shaped model (12
layers, hidden 768, 12 heads, FFN 3072), both as sequence classifiers with 2 labels, on batches of random
token ids (``B × 128``, full attention mask, dropout on). Configurations, all AdamW (two learning rates):

* ``fourierft-dense`` / ``fourierft-spectral``: fourier_flax FourierFT on query/value, n = 1000, scaling 150,
  classifier in ``modules_to_save``, with ``FourierFTConfig.backward`` "dense" (autodiff through W0 + ΔW) and
  "spectral" (the custom VJP that never forms the weight gradient);
* ``lora``: fourier_flax LoRA r = 8 on query/value (+ classifier), through the same interceptor;
* ``head``: only the classifier trains (no adapter, plain model);
* ``floor``: only the token-type embedding table trains (2 × hidden, or 1 × hidden for RoBERTa): the step must
  run the frozen backbone forward and back-propagate to its inputs, but computes no weight gradient — the
  cost every adapter that touches the first layer pays at least;
* ``peft-fourierft`` / ``peft-lora``: Hugging Face PEFT on PyTorch CPU (``get_peft_model`` with
  ``FourierFTConfig(n_frequency=1000, scaling=150)`` / ``LoraConfig(r=8, lora_alpha=8)``, query/value,
  ``modules_to_save=["classifier"]``), ``torch.optim.AdamW`` with the same two groups, ``set_num_threads(2)``.

Timing: one long-lived worker process per framework builds every configuration, compiles (JAX:
``jit(...).lower(...).compile()``) and runs a warm-up step; the coordinator then asks the workers for one
step at a time, cycling through all configurations (JAX and torch interleaved; the order reverses every round)
``--repeats`` rounds (default 10; 5 for RoBERTa-base 8×128 and 3 for 32×128, whose steps take many seconds).
Only one worker computes at a time. Before each step the coordinator samples how many other threads are
runnable on the machine (``procs_running`` in ``/proc/stat``, our idle workers excluded): the machine is
shared, and contention slows the configurations unequally (PyTorch's thread pool most). Reported: median
(min–max) step times, the median of per-round ratios (both configurations timed in the same round), and the
same over the *quiet* rounds (≤ 0.5 other runnable threads on average).

Results (``experiments/results/bench_train_step.md``; three full or partial runs at different machine loads):
FourierFT with the backward ``auto`` picks (dense at 384×384, spectral at 768×768) costs 0.93–1.06× the frozen
floor and 0.89–0.97× our LoRA, and its memory is within 0.3 % of LoRA's (XLA peak and RSS). Against PEFT the
ratio depends on the machine more than on the method: quiet MiniLM 8×128 0.88× (our floor alone is 0.86×), but
RoBERTa-base 32×128 1.17–1.44× in one run and 0.93× an hour earlier (JAX 11–17.6 s, PEFT 11.7–15.3 s across
runs at similar measured contention). Known cause of JAX's variance at large batches: every XLA step
page-faults its whole temp buffer afresh (~540k minor faults per MiniLM 32×128 step, measured with
``getrusage``; PyTorch: 0 after its first step), and transparent huge pages are ``madvise``-only here.

Memory, two measures:

* JAX ``memory_analysis()`` of the compiled step: argument + output + temp bytes (minus aliased donated
  buffers: the bytes the executable needs at its peak, model weights included);
* peak-RSS delta, the same method for both frameworks, after the timing: a fresh subprocess per configuration
  builds the model, the adapter and the batch (JAX also compiles), returns freed heap to the OS
  (``malloc_trim``), resets the kernel's peak-RSS mark (``/proc/self/clear_refs`` ← 5) and records RSS; then
  it creates the optimizer state and runs one training step. Reported: the peak RSS (``VmHWM``) minus that
  baseline, i.e. the memory training adds on top of the loaded model (optimizer state, activations,
  gradients, temporaries).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # experiments/: experiment_paths
from experiment_paths import RESULTS  # noqa: E402

# isort: split
from bench_machine import others_running  # noqa: E402  (re-exported for bench_memory.py)

SEQ_LEN = 128
N_FREQUENCY, SCALING, RANK = 1000, 150.0, 8
SPECTRUM_LR, HEAD_LR = 0.05, 5e-3
ROBERTA_BASE = dict(
    vocab_size=50265,
    hidden_size=768,
    num_hidden_layers=12,
    num_attention_heads=12,
    intermediate_size=3072,
    max_position_embeddings=514,
    type_vocab_size=1,
    pad_token_id=1,
    num_labels=2,
)
# A random-init 2-layer RoBERTa for the smoke test (tests/test_bench_scripts.py): every code path, seconds.
TINY = {
    **ROBERTA_BASE,
    "vocab_size": 1000,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
}
RANDOM_MODELS = {"roberta-base": ROBERTA_BASE, "tiny": TINY}
TORCH_CONFIGS = ("peft-fourierft", "peft-lora")


# --------------------------------------------------------------------------------------------- shared


def jax_configs() -> tuple[str, ...]:
    """fourier_flax's configurations."""
    return ("fourierft-dense", "fourierft-spectral", "lora", "head", "floor")


def batch_arrays(vocab_size: int, batch: int, seed: int = 0) -> dict:
    import numpy as np

    rng = np.random.default_rng(seed)
    return {
        "input_ids": rng.integers(5, vocab_size, (batch, SEQ_LEN)).astype(np.int32),
        "attention_mask": np.ones((batch, SEQ_LEN), np.int32),
        "labels": rng.integers(0, 2, batch).astype(np.int32),
    }


def rss_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} missing from /proc/self/status")


def steal_seconds() -> float:
    """CPU time the hypervisor gave other guests while this VM wanted it, since boot (all CPUs)."""
    with open("/proc/stat") as stat:
        fields = stat.readline().split()  # cpu user nice system idle iowait irq softirq steal ...
    return int(fields[8]) / os.sysconf("SC_CLK_TCK")


def reset_peak_rss() -> int:
    """Returns freed heap to the OS, resets the peak-RSS mark to the current RSS, and returns it (KiB)."""
    ctypes.CDLL("libc.so.6").malloc_trim(0)
    with open("/proc/self/clear_refs", "w") as clear_refs:
        clear_refs.write("5")
    return rss_kib("VmRSS")


# ------------------------------------------------------------------------------------------------ JAX


class JaxBench:
    """Builds the JAX configurations of one model and batch size."""

    def __init__(self, model_name: str, batch: int):
        import jax
        import jax.numpy as jnp
        import transformers

        from fourier_flax.models.hf import load_minilm

        if model_name == "minilm":
            self.model, self.params = load_minilm(num_labels=2)
        else:
            config = transformers.RobertaConfig(**RANDOM_MODELS[model_name])
            self.model = transformers.FlaxRobertaForSequenceClassification(config, seed=0)
            self.params = self.model.params
        self.prefix = "bert" if model_name == "minilm" else "roberta"
        arrays = batch_arrays(self.model.config.vocab_size, batch)
        self.batch = {k: jnp.asarray(v) for k, v in arrays.items()}
        self.rng = jax.random.key(0)

    def setup(self, name: str):
        """``(step, trainable, opt_state_fn, frozen)`` for configuration ``name`` (opt state built lazily)."""
        import jax
        from flax import traverse_util

        import fourier_flax as ff
        from fourier_flax import finetune
        from fourier_flax.methods.fourierft import FourierFTConfig
        from fourier_flax.methods.lora import LoraConfig

        targets = dict(target_modules=["query", "value"], modules_to_save=["classifier"])
        if name.startswith("fourierft"):
            backward = name.split("-")[1]
            config = FourierFTConfig(**targets, n_frequency=N_FREQUENCY, scaling=SCALING, backward=backward)
        elif name == "lora":
            config = LoraConfig(**targets, r=RANK, lora_alpha=float(RANK))
        else:
            config = None
        if config is not None:
            params = ff.init_adapter(self.params, config, jax.random.key(1))
            mask = ff.trainable_mask(params, config)
        else:
            params = self.params
            wanted = ("classifier",) if name == "head" else (self.prefix, "embeddings", "token_type_embeddings")
            flat = traverse_util.flatten_dict(params)
            mask = traverse_util.unflatten_dict({k: k[: len(wanted)] == wanted for k in flat})
        trainable, frozen = ff.split_params(params, mask)
        model = self.model

        def apply_fn(params, batch, rng, train):
            def run():
                out = model(batch["input_ids"], batch["attention_mask"], params=params, dropout_rng=rng, train=train)
                return out.logits

            if config is None:
                return run()
            with ff.intercept(config):
                return run()

        optimizer = finetune.make_optimizer(spectrum_lr=SPECTRUM_LR, head_lr=HEAD_LR, total_steps=10_000)
        step = finetune.make_train_step(apply_fn, finetune.classification_loss, optimizer)
        opt_state = jax.eval_shape(optimizer.init, trainable)
        compiled = step.lower(trainable, opt_state, frozen, self.batch, self.rng).compile()
        count = ff.trainable_parameter_summary(params, mask)[0]
        return compiled, trainable, (lambda: optimizer.init(trainable)), frozen, count


def jax_memory(compiled) -> dict:
    analysis = compiled.memory_analysis()
    parts = {
        "argument": analysis.argument_size_in_bytes,
        "output": analysis.output_size_in_bytes,
        "temp": analysis.temp_size_in_bytes,
        "alias": analysis.alias_size_in_bytes,
    }
    parts["peak"] = parts["argument"] + parts["output"] + parts["temp"] - parts["alias"]
    return parts


def run_jax_step(compiled, state, frozen, batch, rng):
    import jax

    trainable, opt_state = state
    trainable, opt_state, metrics = compiled(trainable, opt_state, frozen, batch, rng)
    jax.block_until_ready((trainable, opt_state, metrics))
    return trainable, opt_state


# ---------------------------------------------------------------------------------------------- torch


class TorchBench:
    """Builds the PEFT configurations of one model and batch size."""

    def __init__(self, model_name: str, batch: int):
        import torch

        torch.set_num_threads(2)
        self.model_name = model_name
        vocab = 30522 if model_name == "minilm" else RANDOM_MODELS[model_name]["vocab_size"]
        self.batch = {k: torch.as_tensor(v).long() for k, v in batch_arrays(vocab, batch).items()}

    def base_model(self):
        import torch
        import transformers

        torch.manual_seed(0)
        if self.model_name == "minilm":
            from fourier_flax.models.hf import minilm_path

            return transformers.BertForSequenceClassification.from_pretrained(minilm_path(), num_labels=2)
        config = transformers.RobertaConfig(**RANDOM_MODELS[self.model_name])
        return transformers.RobertaForSequenceClassification(config)

    def setup(self, name: str):
        """``(step, count)``; ``step()`` runs one forward/backward/AdamW step."""
        import peft
        import torch

        targets = dict(target_modules=["query", "value"], modules_to_save=["classifier"])
        if name.startswith("peft-fourierft"):
            config = peft.FourierFTConfig(**targets, n_frequency=N_FREQUENCY, scaling=SCALING)
        else:
            config = peft.LoraConfig(**targets, r=RANK, lora_alpha=RANK)
        base = self.base_model()
        if name.endswith("-gc"):  # gradient checkpointing (bench_memory.py's like-for-like reference for remat)
            base.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model = peft.get_peft_model(base, config)
        model.train()
        trained = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
        head = [p for n, p in trained if "modules_to_save" in n]
        adapter = [p for n, p in trained if "modules_to_save" not in n]
        optimizer = torch.optim.AdamW(
            [{"params": adapter, "lr": SPECTRUM_LR}, {"params": head, "lr": HEAD_LR}], weight_decay=0.0
        )
        batch = self.batch

        def step():
            loss = model(**batch).loss
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

        return step, sum(p.numel() for _, p in trained)


# -------------------------------------------------------------------------------------------- workers


def timing_worker(framework: str, model_name: str, batch: int) -> None:
    """Serves ``{"config": name}`` requests on stdin with one timed step each, one JSON line per answer."""
    protocol = sys.stdout
    sys.stdout = sys.stderr  # keep library prints off the protocol channel
    info = {}
    steps = {}
    if framework == "jax":
        bench = JaxBench(model_name, batch)
        for name in jax_configs():
            compiled, trainable, init, frozen, count = bench.setup(name)
            state = run_jax_step(compiled, (trainable, init()), frozen, bench.batch, bench.rng)  # warm-up
            steps[name] = [compiled, state, frozen]
            info[name] = {"trainable": count, "memory_analysis": jax_memory(compiled)}
    else:
        bench = TorchBench(model_name, batch)
        for name in TORCH_CONFIGS:
            step, count = bench.setup(name)
            step()  # warm-up (also creates AdamW's state)
            steps[name] = step
            info[name] = {"trainable": count}
    print(json.dumps(info), file=protocol, flush=True)
    for line in sys.stdin:
        name = json.loads(line)["config"]
        start = time.perf_counter()
        if framework == "jax":
            compiled, state, frozen = steps[name]
            steps[name][1] = run_jax_step(compiled, state, frozen, bench.batch, bench.rng)
        else:
            steps[name]()
        print(json.dumps({"seconds": time.perf_counter() - start}), file=protocol, flush=True)


def memory_worker(framework: str, model_name: str, batch: int, name: str) -> None:
    """Prints the peak-RSS delta (MiB) of creating the optimizer state and running one step of ``name``."""
    protocol = sys.stdout
    sys.stdout = sys.stderr
    if framework == "jax":
        bench = JaxBench(model_name, batch)
        compiled, trainable, init, frozen, _ = bench.setup(name)
        base = reset_peak_rss()
        run_jax_step(compiled, (trainable, init()), frozen, bench.batch, bench.rng)
    else:
        step, _ = TorchBench(model_name, batch).setup(name)
        base = reset_peak_rss()
        step()
    print(json.dumps({"rss_delta_mib": (rss_kib("VmHWM") - base) / 1024}), file=protocol, flush=True)


# ---------------------------------------------------------------------------------------- coordinator


def spawn(*args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, __file__, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)


def measure_timing(model_name: str, batch: int, repeats: int) -> dict:
    """Interleaved step times (and each config's trainable count and XLA memory) for one shape."""
    results, workers = {}, {}
    for framework in ("jax", "torch"):  # built one after the other: each warms up alone
        workers[framework] = spawn("--timing-worker", framework, model_name, str(batch))
        results.update(json.loads(workers[framework].stdout.readline()))
    order = [("jax", name) for name in jax_configs()] + [("torch", name) for name in TORCH_CONFIGS]
    times = {name: [] for _, name in order}
    contention, steal = [], []
    for r in range(repeats):
        samples, round_start, steal_start = [], time.perf_counter(), steal_seconds()
        for framework, name in order if r % 2 == 0 else order[::-1]:
            time.sleep(0.05)  # lets the last worker's thread pool stop spinning before sampling and timing
            samples.append(others_running())
            worker = workers[framework]
            worker.stdin.write(json.dumps({"config": name}) + "\n")
            worker.stdin.flush()
            times[name].append(json.loads(worker.stdout.readline())["seconds"])
        contention.append(statistics.mean(samples))
        steal.append((steal_seconds() - steal_start) / (os.cpu_count() * (time.perf_counter() - round_start)))
        print(f"  {model_name} {batch}x{SEQ_LEN} round {r + 1}/{repeats}", file=sys.stderr, flush=True)
    for worker in workers.values():
        worker.stdin.close()
        worker.wait()
    for name, seconds in times.items():
        results[name]["times"] = seconds
    return {"results": results, "contention": contention, "steal": steal}


def measure_memory(model_name: str, batch: int) -> dict[str, float]:
    """Peak-RSS delta (MiB) of each configuration, each in a fresh process."""
    rss = {}
    for framework, names in (("jax", jax_configs()), ("torch", TORCH_CONFIGS)):
        for name in names:
            worker = spawn("--memory-worker", framework, model_name, str(batch), name)
            out, _ = worker.communicate()
            rss[name] = json.loads(out.strip().splitlines()[-1])["rss_delta_mib"]
            print(f"  memory {model_name} {batch}x{SEQ_LEN} {name} done", file=sys.stderr, flush=True)
    return rss


def mib(num_bytes: float) -> str:
    return f"{num_bytes / 2**20:,.0f}"


QUIET = 0.5  # a round is "quiet" when on average at most this many other threads were runnable


BOUND_ROUNDS = (("all rounds", False), ("quiet rounds", True))


def paired_ratio(shape: dict, a: str, b: str, quiet: bool = False) -> float | None:
    """Median over rounds of ``time(a) / time(b)`` measured in the same round (None: no such rounds)."""
    ta, tb = shape["results"][a]["times"], shape["results"][b]["times"]
    rounds = [r for r, c in enumerate(shape["contention"]) if c <= QUIET or not quiet]
    return statistics.median(ta[r] / tb[r] for r in rounds) if rounds else None


def report(shapes: dict, command: str) -> str:
    """The markdown results page from the raw per-shape results."""
    from bench_machine import machine_summary

    from fourier_flax.methods.fourierft.backward import choose_backward

    minutes = sum(shape["minutes"] for shape in shapes.values())
    lines = [
        "# Train step: FourierFT vs LoRA vs head-only vs frozen floor, fourier_flax (JAX) and PEFT (PyTorch)",
        "",
        f"Command: `{command}` — {minutes:.0f} min in all. Machine: {machine_summary()}; shared with other "
        "jobs, so each round also records how many other threads were runnable (sampled from "
        "`/proc/stat` before every step, averaged over the round). Rounds averaging ≤ "
        f"{QUIET} are *quiet*. Contention slows every configuration, PyTorch's thread pool most, so ratios "
        "are given over all rounds and over the quiet ones.",
        "",
        "Step = forward + backward + AdamW update on a sequence classifier (2 labels, dropout on), random "
        f"token ids, B × {SEQ_LEN}. FourierFT n = {N_FREQUENCY}, scaling {SCALING:g}; LoRA r = {RANK}; both on "
        "query/value with the classifier trained. Time: median (min–max) over the rounds; ratios: median "
        "over rounds of the two configurations' times in the same round. `XLA peak`: compiled "
        "`memory_analysis()`, argument + output + temp − aliased bytes (weights included). `RSS Δ`: peak RSS "
        "of a fresh process running one step (with optimizer-state creation) minus its RSS after loading the "
        "model — the memory training adds. See the script's docstring for the method. Raw numbers: "
        "`bench_train_step.json`.",
        "",
    ]
    for key, shape in shapes.items():
        results, contention = shape["results"], shape["contention"]
        quiet = sum(c <= QUIET for c in contention)
        d = 384 if key.startswith("minilm") else RANDOM_MODELS[key.split()[0]]["hidden_size"]
        tokens = int(key.split()[1].split("x")[0]) * SEQ_LEN
        auto = choose_backward((d, d), tokens, N_FREQUENCY)
        lines += [
            f"## {key}: {shape['repeats']} rounds ({quiet} quiet), {shape['minutes']:.0f} min",
            "",
            f"Other runnable threads per round: {', '.join(f'{c:.1f}' for c in contention)}. "
            f"`FourierFTConfig(backward='auto')` picks **{auto}** for these {d}×{d} query/value layers.",
            "",
            "| configuration | trainable params | step (s) | quiet rounds (s) | ÷ floor | XLA peak (MiB) "
            "| XLA temp (MiB) | RSS Δ (MiB) |",
            "|---|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for name, res in results.items():
            times, analysis = res["times"], res.get("memory_analysis")
            quiet_times = [t for t, c in zip(times, contention, strict=True) if c <= QUIET]
            quiet_cell = f"{statistics.median(quiet_times):.3f}" if quiet_times else "—"
            xla = f"{mib(analysis['peak'])} | {mib(analysis['temp'])}" if analysis else "— | —"
            rss = f"{res['rss_delta_mib']:,.0f}" if "rss_delta_mib" in res else "—"
            lines.append(
                f"| {name} | {res['trainable']:,} | {statistics.median(times):.3f} ({min(times):.3f}–"
                f"{max(times):.3f}) | {quiet_cell} | {paired_ratio(shape, name, 'floor'):.2f} | {xla} | {rss} |"
            )
        bounds = {label: paired_ratio(shape, "floor", "peft-fourierft", quiet=q) for label, q in BOUND_ROUNDS}
        bound = ", ".join(f"{ratio:.3f} ({label})" for label, ratio in bounds.items() if ratio is not None)
        lines += [
            "",
            *targets(shape),
            "",
            f"Bound on the PEFT ratio: our frozen floor's step alone is {bound} × PEFT FourierFT's step.",
            "",
        ]
    return "\n".join(lines)


def targets(shape: dict) -> list[str]:
    """The targets for each FourierFT backward: the ratio over all rounds and over quiet rounds, met or not."""
    results = shape["results"]
    variants = [name for name in results if name.startswith("fourierft")]

    def verdict(ratio: float | None, limit: float) -> str:
        if ratio is None:
            return "—"
        return f"{ratio:.3f} {'met' if ratio <= limit else '**not met**'}"

    def timing(other: str, limit: float):
        return lambda v: (
            verdict(paired_ratio(shape, v, other), limit),
            verdict(paired_ratio(shape, v, other, quiet=True), limit),
        )

    def memory(field: str):
        def cells(v):
            if field == "xla":
                ratio = results[v]["memory_analysis"]["peak"] / results["lora"]["memory_analysis"]["peak"]
            else:
                ratio = results[v]["rss_delta_mib"] / results["lora"]["rss_delta_mib"]
            return verdict(ratio, 1.0), ""

        return cells

    checks = [
        ("step ≤ 1.0 × our LoRA", timing("lora", 1.0)),
        ("step ≤ 0.8 × PEFT FourierFT", timing("peft-fourierft", 0.8)),
        ("step ÷ frozen floor ≤ 1.10", timing("floor", 1.10)),
        ("XLA peak ≤ our LoRA's", memory("xla")),
    ]
    if all("rss_delta_mib" in results[name] for name in ("lora", *variants)):
        checks.append(("RSS Δ ≤ our LoRA's", memory("rss")))
    header = " | ".join(f"{v}: all rounds | {v}: quiet rounds" for v in variants)
    rows = [f"| target | {header} |", "|---|" + "---|" * 2 * len(variants)]
    for label, cells in checks:
        rows.append(f"| {label} | " + " | ".join(" | ".join(cells(v)) for v in variants) + " |")
    return rows


def repeats_for(spec: str, model_name: str, shape: str) -> int:
    """``spec`` is a default count then overrides, e.g. ``10,roberta-base=5,roberta-base/32x128=3``."""
    default, *overrides = spec.split(",")
    table = dict(item.split("=") for item in overrides)
    return int(table.get(f"{model_name}/{shape}", table.get(model_name, default)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="minilm,roberta-base")
    parser.add_argument("--batches", default="8x128,32x128", help="comma-separated BxL (L must be 128)")
    parser.add_argument(
        "--repeats",
        default="10,roberta-base=5,roberta-base/32x128=3",
        help="timed rounds per shape: a default, then MODEL=N or MODEL/BxL=N overrides",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the per-configuration RSS processes")
    parser.add_argument("--out", default=str(RESULTS / "bench_train_step.md"))
    parser.add_argument("--resume", action="store_true", help="keep shapes already in the raw .json next to --out")
    parser.add_argument("--timing-worker", nargs=3, metavar=("FRAMEWORK", "MODEL", "BATCH"))
    parser.add_argument("--memory-worker", nargs=4, metavar=("FRAMEWORK", "MODEL", "BATCH", "CONFIG"))
    args = parser.parse_args()
    if args.timing_worker:
        framework, model_name, batch = args.timing_worker
        return timing_worker(framework, model_name, int(batch))
    if args.memory_worker:
        framework, model_name, batch, name = args.memory_worker
        return memory_worker(framework, model_name, int(batch), name)

    raw_path = Path(args.out).with_suffix(".json")
    raw_path.parent.mkdir(parents=True, exist_ok=True)
    shapes = json.loads(raw_path.read_text()) if args.resume and raw_path.exists() else {}
    for model_name in args.models.split(","):
        for shape in args.batches.split(","):
            batch, length = (int(x) for x in shape.split("x"))
            if length != SEQ_LEN:
                raise SystemExit(f"sequence length must be {SEQ_LEN}, got {shape}")
            key = f"{model_name} {shape}"
            if key in shapes:
                continue
            repeats = repeats_for(args.repeats, model_name, shape)
            start = time.perf_counter()
            entry = {"repeats": repeats, **measure_timing(model_name, batch, repeats)}
            if not args.no_memory:
                for name, rss in measure_memory(model_name, batch).items():
                    entry["results"][name]["rss_delta_mib"] = rss
            shapes[key] = {**entry, "minutes": (time.perf_counter() - start) / 60}
            raw_path.write_text(json.dumps(shapes, indent=1) + "\n")
    command = " ".join(["python experiments/benchmarks/bench_train_step.py", *sys.argv[1:]])
    text = report(shapes, command)
    Path(args.out).write_text(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
