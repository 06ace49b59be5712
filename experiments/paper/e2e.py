"""The paper's NLG table (Table 3, E2E) on a real LLM: SmolLM2-135M-Instruct fine-tuned on E2E data-to-text.

Commands (from the repo root; every command resumes: finished runs are read back from their JSONL files)::

    nice -n 19 .venv/bin/python experiments/paper/e2e.py --sweep --rows fourierft-n1000   # rate × scaling grid
    nice -n 19 .venv/bin/python experiments/paper/e2e.py --rows zero-shot,fourierft-n1000 --seeds 0,1,2
    .venv/bin/python experiments/paper/e2e.py --smoke                                       # tiny end-to-end check
    nohup bash experiments/paper/e2e_all.sh > /dev/null 2>&1 &                           # every run, in order
    .venv/bin/python experiments/paper/e2e_table.py         # -> e2e_table.md, e2e_table.png from the JSONL files

Data (``../shared/data/e2e/original``): the challenge's training split is not reachable, so training data is its
dev set (547 MRs): 10 % of the MRs (55, whole MRs, seed 0) are the *selection slice*, the other 492 MRs train, one
example per reference (prompt: :func:`fourier_flax.data.e2e.mr_prompt` in the chat template with
:data:`~fourier_flax.data.e2e.SYSTEM`; target: the reference and ``<|im_end|>``). The test set (630 MRs) is
decoded once per run and scored with the official metrics (:mod:`fourier_flax.data.e2e_metrics`).

Schedule (the same for every method): ``--steps`` AdamW steps of batch 8 (300: 2,400 examples, 0.57 of an
epoch; linear warmup 10 %, linear decay), the response loss on the selection slice (each MR's first reference)
every ``--eval-every`` steps; the adapter with the lowest selection loss is the run's, and decodes the test set
(beam search, ``--beams`` beams, length penalty 0.9, no-repeat 4-grams, at most ``--max-new-tokens`` tokens).

Sweeps (``--sweep``): each row's grid — its rate × its scaling knob (FourierFT's ``scaling``, LoRA's ``lora_alpha``,
VeRA's ``d_initial``), 3 × 3 for every method, then walked on the grid's log spacing to a point better than all its
neighbours or 2 values past an end of an axis (:func:`sweep_points`: the same rule for every method; ``--reach``
widens it for a probe beyond the table's rule, run into its own ``--results``) — trained at that same schedule (seed
0) and scored by the best selection loss; ``e2e_sweep.jsonl`` holds one record per point (with its
``selection_trace``: the selection loss at step 0 and at every evaluation). Table runs use each row's best point and
refuse to start before its walk has ended; the seed-0 run of a row is its sweep's run at that point (same seed, data
and schedule), decoded from the state the sweep kept (``reused_from`` in its record; its training time counts once,
in the sweep). Every run saves its trainer's state at each evaluation under ``--state-dir``: a killed run resumes
from its last evaluation. The 4-bit rows are not swept: they train at their float twin's point (``Row.sweep_row``),
so their difference from the float rows is the base's alone.

Writes ``experiments/results/e2e_runs.jsonl`` (one record per finished run: row, method, seed, base, the five
test metrics, selection loss and step, trainable parameters, hyperparameters, decoding settings, steps, wall_s,
the outputs file) and keeps every test output in ``experiments/results/e2e_outputs/``. Runtime on this 2-core
CPU: a train step 2.7 s quiet on E2E's own batches (float base, batch 8; the output layer runs only on the loss
tokens: experiments/results/bench_e2e_step.md), so a 300-step run with its selection evaluations takes ~17 min
quiet (``wall_s`` in e2e_sweep.jsonl; the first point took 61 min beside other jobs), and a test decode ~15 min
quiet (11 s per batch of 8 MRs: experiments/results/bench_e2e_decode.md; the zero-shot one took 36 min beside
other jobs). Budget: 5 swept rows × 9 points (3 to ~15 more per walk) + 7 trained rows × 3 seeds, 25-60
CPU-hours with the test decodes: the resumable runner carries it across sittings.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import pathlib
import shutil
import sys
import time
from typing import Any

import jax

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # experiments/: experiment_paths
from experiment_paths import REPO, RESULTS, RUNS  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "e2e" / "original"
TARGETS = ["q_proj", "v_proj"]
BATCH = 8  # training and selection batch size, every row


@dataclasses.dataclass(frozen=True)
class Row:
    """One row of the table: a method with its fixed shape, its rate grid and its scaling knob's grid."""

    method: str
    config: Any  # a function (knob value) -> adapter config, or None for zero-shot
    rates: tuple[float, ...] = ()
    knob: str = ""
    knob_values: tuple[float, ...] = ()
    base: str = "float"
    scaling: Any = None  # knob -> the traced scaling the layers use (None: the knob only shapes the init)
    sweep_row: str | None = None  # the row whose sweep chooses this row's point (None: its own)


@dataclasses.dataclass
class Point:
    """A trained point: the trainer holding its best adapter, that adapter's selection loss and step, the adapter
    config, the trace ``[[step, selection loss], ...]`` (step 0 included), the wall seconds spent on it by
    earlier, killed processes (0 unless resumed), and who trained it: ``"sweep"`` or ``"table"`` (a table run at
    seed 0 finds the sweep's finished state of its point and decodes that adapter instead of training again)."""

    trainer: Any
    loss: float
    step: int
    config: Any
    trace: list[list[float]]
    earlier_wall_s: float
    trained_by: str


def _rows() -> dict[str, Row]:
    import fourier_flax as ff

    def fourierft(n):
        return lambda s: ff.FourierFTConfig(target_modules=TARGETS, n_frequency=n, scaling=float(s))

    def lora(r):
        return lambda a: ff.LoraConfig(target_modules=TARGETS, r=r, lora_alpha=float(a))

    grid_fourierft = dict(
        rates=(3e-3, 1e-2, 3e-2), knob="scaling", knob_values=(25.0, 50.0, 100.0), scaling=lambda s: s
    )

    def grid_lora(r):
        return dict(rates=(3e-4, 1e-3, 3e-3), knob="lora_alpha", knob_values=(4.0, 8.0, 16.0), scaling=lambda a: a / r)

    vera = lambda d: ff.VeraConfig(target_modules=TARGETS, r=256, d_initial=float(d))  # noqa: E731
    return {
        "zero-shot": Row("zero-shot", None),
        "fourierft-n1000": Row("fourierft", fourierft(1000), **grid_fourierft),
        "fourierft-n500": Row("fourierft", fourierft(500), **grid_fourierft),
        "lora-r4": Row("lora", lora(4), **grid_lora(4)),
        "lora-r8": Row("lora", lora(8), **grid_lora(8)),
        "vera": Row("vera", vera, rates=(1e-3, 3e-3, 1e-2), knob="d_initial", knob_values=(0.05, 0.1, 0.2)),
        # the 4-bit rows train at their float twin's chosen point: the difference is the base's alone
        "fourierft-n500-4bit": Row(
            "fourierft", fourierft(500), **grid_fourierft, base="4bit", sweep_row="fourierft-n500"
        ),
        "lora-r4-4bit": Row("lora", lora(4), **grid_lora(4), base="4bit", sweep_row="lora-r4"),
    }


REACH = 2  # the table's rule: how many values a sweep may go past each end of each axis of a row's own grid


def _reach(values: tuple[float, ...], reach: int = REACH) -> tuple[float, ...]:
    """``values`` with ``reach`` more past each end, each at its end's ratio (3 significant digits).

    Example: rates (3e-3, 1e-2, 3e-2) reach (2.7e-4, 9e-4, 3e-3, 1e-2, 3e-2, 0.09, 0.27).
    """
    if len(values) < 2:  # no ratio to extend by (the smoke run's one-point grids)
        return values
    low, high = list(values[:2]), list(values[-2:])
    for _ in range(reach):
        low.insert(0, float(f"{low[0] * low[0] / low[1]:.3g}"))
        high.append(float(f"{high[-1] * high[-1] / high[-2]:.3g}"))
    return (*low[:reach], *values, *high[2:])


def sweep_points(row: Row, losses: dict[tuple[float, float], float], reach: int = REACH) -> list[tuple[float, float]]:
    """The (rate, knob) points row ``row``'s sweep must run, given the finished points' selection ``losses``.

    First its own 3 × 3 grid; once those are in, the grid neighbours (one value along either axis or both, at the
    axis's own ratio) of the best of them; once those are in too, the neighbours of the best point so far, and so
    on while that point has a neighbour not yet run: a walk to a point whose whole neighbourhood is worse, or to
    ``reach`` values past an end of an axis, where the optimum may lie beyond (:func:`at_reach`). The walk
    waits for each neighbourhood to finish, so the points do not depend on the order they ran in. The same rule
    for every row, so every method's sweep has the same density around its optimum; the sweep is complete when
    every returned point has a loss (points an older rule ran that are not returned take no part).

    Example: FourierFT's rates (3e-3, 1e-2, 3e-2) × scalings (25, 50, 100) with the best loss at (3e-2, 50) add
    rate 0.09 × scalings 25, 50, 100; if (0.09, 25) is then best, (0.27, 25), (0.27, 50) and the scaling 12.5
    points of rates 0.03 to 0.27 follow.
    """
    axes = (_reach(row.rates, reach), _reach(row.knob_values, reach))
    points = list(itertools.product(row.rates, row.knob_values))
    while len(points) > 1 and all(point in losses for point in points):
        best = min(points, key=losses.__getitem__)
        at = [values.index(value) for values, value in zip(axes, best, strict=True)]
        near = [values[max(0, i - 1) : i + 2] for values, i in zip(axes, at, strict=True)]
        new = [point for point in itertools.product(*near) if point not in points]
        if not new:
            break
        points += new
    return points


def at_reach(row: Row, point: tuple[float, float], reach: int = REACH) -> bool:
    """Whether ``point`` lies at the end of the sweep's reach on either axis (the optimum may lie beyond)."""
    return any(
        value in (values[0], values[-1])
        for values, value in zip((_reach(row.rates, reach), _reach(row.knob_values, reach)), point, strict=True)
    )


def table_rows(*, one_point: bool = False) -> dict[str, Row]:
    """The table's rows; with ``one_point`` each grid cut to its first rate and knob (the smoke run checks the
    pipeline, not the rates)."""
    rows = _rows()
    if not one_point:
        return rows
    return {
        name: dataclasses.replace(row, rates=row.rates[:1], knob_values=row.knob_values[:1])
        for name, row in rows.items()
    }


def load_data(smoke: bool):
    from fourier_flax.data.e2e import read_e2e, split_mrs

    train, select = split_mrs(read_e2e(DATA / "devset.csv"), fraction=0.1, seed=0)
    test = read_e2e(DATA / "testset_w_refs.csv")
    if smoke:
        train, select, test = train[:6], select[:2], test[:3]
    return train, select, test


class Experiment:
    """The model, tokenizer and data of one invocation; trains and decodes rows."""

    def __init__(self, args: argparse.Namespace):
        from fourier_flax.finetune.causal_lm import encode_batches, encode_chat
        from fourier_flax.models import llama, smollm2_path

        self.args = args
        self.tokenizer = llama.load_tokenizer(smollm2_path())
        self.train, self.select, self.test = load_data(args.smoke)
        from fourier_flax.data.e2e import SYSTEM, mr_prompt, training_pairs

        self.system, self.prompt = SYSTEM, mr_prompt
        self.train_examples = encode_chat(self.tokenizer, training_pairs(self.train), system=SYSTEM)
        first_refs = [(mr_prompt(m.mr), m.refs[0]) for m in self.select]
        self.select_batches = list(
            encode_batches(encode_chat(self.tokenizer, first_refs, system=SYSTEM), BATCH, shuffle=False)
        )
        self.encode_batches = encode_batches

    def model(self, base: str):
        from fourier_flax.models import llama, smollm2_path

        layers = 2 if self.args.smoke else None
        return llama.from_gguf(smollm2_path(), quantized=base == "4bit", num_hidden_layers=layers)

    def batches(self, seed: int):
        """Training batches for ``--steps`` steps (epochs reshuffled by seed)."""
        for epoch in itertools.count():
            yield from self.encode_batches(
                self.train_examples, BATCH, shuffle=True, seed=seed, epoch=epoch, drop_remainder=True
            )

    def selection_loss(self, trainer) -> float:
        losses = [trainer.loss(batch) for batch in self.select_batches]
        weights = [float(batch["loss_mask"].sum()) for batch in self.select_batches]
        return sum(loss * w for loss, w in zip(losses, weights, strict=True)) / sum(weights)

    def train_point(
        self, name: str, row: Row, rate: float, knob: float, seed: int, *, role: str, trainer=None
    ) -> Point:
        """Trains row ``name``'s (rate, knob) point at ``seed`` and keeps the adapter of its best selection step.
        Given the ``trainer`` of an earlier point of the same row, it restarts that one (rate and scaling are
        traced, so the step is not compiled again). The trainer's state is saved at every evaluation (under
        ``--state-dir``), so a killed run resumes from its last evaluation; :meth:`forget` removes it once the
        run's record is written."""
        from flax import nnx

        from fourier_flax import nnx as ffnnx
        from fourier_flax.finetune.causal_lm import CausalLMTrainer
        from fourier_flax.finetune.trainer_state import restore_trainer_state, save_trainer_state

        config = row.config(knob)
        model = self.model(row.base)
        ffnnx.apply_adapter(model, config, jax.random.key(seed))
        scaling = None if row.scaling is None else row.scaling(knob)
        steps, warmup = self.args.steps, max(1, self.args.steps // 10)
        if trainer is None:
            trainer = CausalLMTrainer(
                model, learning_rate=rate, scaling=scaling, warmup_steps=warmup, total_steps=steps, chunk=128
            )
        else:
            trainer.restart(nnx.state(model, ffnnx.AdapterParam), learning_rate=rate, scaling=scaling)
        start, state = time.time(), self.state_dir(name, rate, knob, seed)
        restored = restore_trainer_state(state, trainer, arrays_like={"best": trainer.snapshot()})
        if restored is None:
            best = (self.selection_loss(trainer), 0, trainer.snapshot())
            trace, earlier_wall_s, trained_by = [[0, best[0]]], 0.0, role
        else:
            arrays, meta = restored
            best = (meta["best_loss"], meta["best_step"], arrays["best"])
            trace, earlier_wall_s, trained_by = meta["trace"], meta["wall_s"], meta["trained_by"]
            print(f"  resumed at step {trainer.steps_taken} from {state}", flush=True)
        done = trainer.steps_taken
        batches = itertools.islice(self.batches(seed), done, None)  # the data order of an uninterrupted run
        for step, batch in zip(range(done + 1, steps + 1), batches, strict=False):
            trainer.step(batch)
            if step % self.args.eval_every == 0 or step == steps:
                loss = self.selection_loss(trainer)
                trace.append([step, loss])
                print(f"  step {step}: selection loss {loss:.4f}", flush=True)
                if loss < best[0]:
                    best = (loss, step, trainer.snapshot())
                meta = {"best_loss": best[0], "best_step": best[1], "trace": trace, "trained_by": trained_by,
                        "wall_s": earlier_wall_s + time.time() - start}  # fmt: skip
                save_trainer_state(state, trainer, arrays={"best": best[2]}, meta=meta)
        trainer.restart(best[2])
        return Point(trainer, best[0], best[1], config, trace, earlier_wall_s, trained_by)

    def state_dir(self, name: str, rate: float, knob: float, seed: int) -> pathlib.Path:
        """Where run ``(name, rate, knob, seed)`` at this invocation's steps and evaluation period keeps its state."""
        args = self.args
        return args.state_dir / f"{name}-rate{rate:g}-knob{knob:g}-seed{seed}-steps{args.steps}-every{args.eval_every}"

    def forget(self, name: str, rate: float, knob: float, seed: int) -> None:
        """Removes a finished run's saved state (its record is written)."""
        shutil.rmtree(self.state_dir(name, rate, knob, seed), ignore_errors=True)

    def decode_test(self, model) -> list[str]:
        from fourier_flax.finetune.causal_lm import decode

        return decode(
            model, self.tokenizer, [self.prompt(m.mr) for m in self.test], system=self.system,
            batch_size=self.args.decode_batch, max_new_tokens=self.args.max_new_tokens,
            num_beams=self.args.beams, length_penalty=0.9, no_repeat_ngram_size=4, eos_token_id=2,
        )  # fmt: skip


def sweep(exp: Experiment, names: list[str]) -> None:
    from fourier_flax.finetune.records import append_record

    path = exp.args.results / "e2e_sweep.jsonl"
    rows = table_rows(one_point=exp.args.smoke)
    for name in names:
        row = rows[name]
        if row.sweep_row is not None:
            print(f"{name} takes {row.sweep_row}'s chosen point: sweep {row.sweep_row} instead.", flush=True)
            continue
        trainer = None
        while True:
            losses = swept_losses(exp.args.results, name, exp.args.steps)
            missing = [point for point in sweep_points(row, losses, exp.args.reach) if point not in losses]
            if not missing:
                break
            rate, knob = missing[0]
            print(f"sweep {name}: rate {rate}, {row.knob} {knob}", flush=True)
            start = time.time()
            point = exp.train_point(name, row, rate, knob, seed=0, role="sweep", trainer=trainer)
            trainer = point.trainer
            append_record(
                path,
                {"row": name, "method": row.method, "base": row.base, "rate": rate, "knob": knob,
                 "knob_name": row.knob, "steps": exp.args.steps, "selection_loss": point.loss,
                 "best_step": point.step, "selection_trace": point.trace,
                 "wall_s": round(point.earlier_wall_s + time.time() - start, 1)},
            )  # fmt: skip
        chosen = chosen_point(exp, name, row)
        for rate, knob in losses:  # the chosen point's state stays: the table's seed-0 run decodes it
            if (rate, knob) != chosen:
                exp.forget(name, rate, knob, seed=0)


def swept_losses(results: pathlib.Path, name: str, steps: int) -> dict[tuple[float, float], float]:
    """``{(rate, knob): selection loss}`` of row ``name``'s finished sweep points at ``steps`` steps."""
    from fourier_flax.finetune.records import read_records

    return {
        (r["rate"], r["knob"]): r["selection_loss"]
        for r in read_records(results / "e2e_sweep.jsonl")
        if r["row"] == name and r["steps"] == steps
    }


def chosen_point(exp: Experiment, name: str, row: Row) -> tuple[float, float] | None:
    """The (rate, knob) with the lowest selection loss in the sweep of ``row.sweep_row or name``, once every point
    of :func:`sweep_points` is in; None before."""
    swept = row.sweep_row or name
    return sweep_choice(
        table_rows(one_point=exp.args.smoke)[swept],
        swept_losses(exp.args.results, swept, exp.args.steps),
        exp.args.reach,
    )


def sweep_choice(row: Row, losses: dict[tuple[float, float], float], reach: int = REACH) -> tuple[float, float] | None:
    """The best of the points :func:`sweep_points` asks for, once all are in ``losses``; None before."""
    points = sweep_points(row, losses, reach)
    if any(point not in losses for point in points):
        return None
    return min(points, key=losses.__getitem__)


def table_runs(exp: Experiment, names: list[str], seeds: list[int]) -> None:
    from fourier_flax.data.e2e_metrics import e2e_scores
    from fourier_flax.finetune.records import append_record, finished_keys

    path = exp.args.results / "e2e_runs.jsonl"
    outputs_dir = exp.args.results / "e2e_outputs"
    outputs_dir.mkdir(parents=True, exist_ok=True)
    rows = table_rows(one_point=exp.args.smoke)
    decoding = {"num_beams": exp.args.beams, "length_penalty": 0.9, "no_repeat_ngram_size": 4,
                "max_new_tokens": exp.args.max_new_tokens}  # fmt: skip
    for name in names:
        row = rows[name]
        for seed in [0] if row.config is None else seeds:
            if (name, seed) in finished_keys(path, ("row", "seed")):
                continue
            start, earlier_wall_s = time.time(), 0.0
            record: dict[str, Any] = {"row": name, "method": row.method, "seed": seed, "base": row.base}
            if row.config is None:
                model = exp.model(row.base)
                record.update(trainable_params=0, steps=0)
            else:
                point = chosen_point(exp, name, row)
                if point is None:
                    swept = row.sweep_row or name
                    print(f"{name}: no finished sweep at {exp.args.steps} steps; run --sweep --rows {swept} first.")
                    continue
                rate, knob = point
                print(f"run {name} seed {seed}: rate {rate}, {row.knob} {knob}", flush=True)
                trained = exp.train_point(name, row, rate, knob, seed, role="table")
                model, earlier_wall_s = trained.trainer.model, trained.earlier_wall_s
                if trained.trained_by == "sweep":  # its training time is the sweep point's wall_s already
                    record["reused_from"], earlier_wall_s = "e2e_sweep.jsonl", 0.0
                leaves = jax.tree.leaves(trained.trainer.params)
                record.update(
                    rate=rate, knob_name=row.knob, knob=knob, steps=exp.args.steps, selection_loss=trained.loss,
                    best_step=trained.step, selection_trace=trained.trace,
                    trainable_params=sum(int(x.size) for x in leaves), config=repr(trained.config),
                )  # fmt: skip
            outputs = exp.decode_test(model)
            out_file = outputs_dir / f"{name}-seed{seed}.txt"
            out_file.write_text("\n".join(outputs) + "\n")
            record.update(
                test=e2e_scores(exp.test, outputs), decoding=decoding, outputs=_relative(out_file),
                wall_s=round(earlier_wall_s + time.time() - start, 1),
            )  # fmt: skip
            append_record(path, record)
            if row.config is not None:
                exp.forget(name, record["rate"], record["knob"], seed)
            print(f"{name} seed {seed}: {record['test']}", flush=True)


def _relative(path: pathlib.Path) -> str:
    """``path`` relative to the repository when inside it (records must not hold this machine's paths)."""
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else path.name


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="zero-shot")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--sweep", action="store_true", help="run the rows' rate × knob grids")
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--beams", type=int, default=10)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--decode-batch", type=int, default=8)
    parser.add_argument("--results", type=pathlib.Path, default=RESULTS)
    parser.add_argument(
        "--state-dir", type=pathlib.Path, default=RUNS / "e2e_state", help="unfinished runs' saved trainer states"
    )
    parser.add_argument(
        "--reach", type=int, default=REACH,
        help=f"values a sweep may walk past each end of a row's grid (the table's rule: {REACH}); a larger reach "
        "probes beyond it: give it its own --results, seeded with the table's sweep records",
    )  # fmt: skip
    parser.add_argument("--smoke", action="store_true", help="2 layers, a few MRs, 2 steps: checks the pipeline")
    args = parser.parse_args(argv)
    if args.smoke:
        args.steps, args.eval_every, args.beams, args.max_new_tokens = 2, 1, 2, 8
    names = args.rows.split(",")
    rows = table_rows(one_point=args.smoke)
    unknown = sorted(set(names) - set(rows))
    if unknown:
        sys.exit(f"unknown rows {unknown}; rows: {sorted(rows)}")
    exp = Experiment(args)
    if args.sweep:
        sweep(exp, names)
    else:
        table_runs(exp, names, [int(s) for s in args.seeds.split(",")])


if __name__ == "__main__":
    main()
