"""Figure 5 of the FourierFT paper on all-MiniLM-L6-v2: the frequency bias's centre f_c against uniform entries.

Command (resumable: each finished run appends to ``experiments/results/frequency_bias_runs.jsonl`` and is skipped
on a rerun)::

  .venv/bin/python experiments/paper/frequency_bias.py                   # mrpc + stsb, 6 f_c, seeds 0-2 (~3 h)
  .venv/bin/python experiments/paper/frequency_bias.py render            # figure + table from the JSONL only

The paper sweeps f_c from 0 to ~500 at W = 200 on RoBERTa-base's 768×768 kernels (largest distance to the centre
of the shifted spectrum: 543). MiniLM's kernels are 384×384 (largest distance 272), so both are halved: W = 100
and f_c in {0, 50, 100, 150, 200, 250}. Budget and hyperparameters are the GLUE table's FourierFT row
(experiments/paper/glue_table.py: the ``glue`` preset, the swept learning rate and scaling, n = 1000 on query/value);
seeds 0-2; full dev sets. The "no bias" baseline is that row itself: its entries are PEFT's ``randperm`` draws,
uniform over the grid without replacement — the same distribution as ``entry_sampling="uniform"`` — with the same
budget, rates and seeds, so its runs in ``glue_runs.jsonl`` are the uniform points (no duplicate runs).

Entry sets run sequentially, not as a vmapped axis: the entries are static per config (they index the gathers and
the spectral backward's reads), so each set compiles its own program anyway, and on this 2-core CPU vmapping runs
was measured slower than running them one by one (results/bench_sweep.md).

Writes ``frequency_bias.md`` (mean ± standard error per f_c and task, the uniform baseline, each f_c's difference
from uniform paired by seed with a Holm-adjusted paired t-test, and which f_c beat or trail uniform) and
``frequency_bias.png``.
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np
from scipy import stats

from fourier_flax.data import get_task
from fourier_flax.finetune import (
    Trainer,
    default_data_dir,
    holm_adjust,
    load_classifier,
    load_task_data,
    load_tokenizer,
    metric_by_seed,
    paired_difference,
    shared_seeds,
)
from fourier_flax.finetune.loop import train_run
from fourier_flax.finetune.records import append_record, finished_keys, read_records

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # experiments/: experiment_paths
import experiment_paths  # noqa: E402
from glue_table import BACKBONE, chosen, run_record, table_run_config  # noqa: E402  (the table's protocol and rates)

RESULTS = experiment_paths.RESULTS
RUNS = experiment_paths.RUNS / "frequency_bias"
CENTERS = (0.0, 50.0, 100.0, 150.0, 200.0, 250.0)
BANDWIDTH = 100.0


def sweep(tasks, seeds) -> None:
    path = RESULTS / "frequency_bias_runs.jsonl"
    lr, scaling = chosen(RESULTS)["fourierft"]
    data_dir, tokenizer = default_data_dir(), load_tokenizer()
    for seed in seeds:
        for task_name in tasks:
            task = get_task(task_name)
            model = base = data = None
            for center in CENTERS:
                if (task_name, center, seed) in finished_keys(path, ("task", "center_frequency", "seed")):
                    continue
                bias = {"entry_sampling": "frequency_bias", "center_frequency": center, "bandwidth": BANDWIDTH}
                run = table_run_config(task_name, "fourierft", seed, lr, scaling, **bias)
                if model is None:
                    model, base = load_classifier(num_labels=task.num_labels, backbone=BACKBONE)
                    data = load_task_data(run, data_dir, tokenizer)
                name = f"fc{center:g}"
                result = train_run(
                    run,
                    RUNS / task_name / name / f"seed{seed}",
                    data_dir=data_dir,
                    trainer=Trainer(model, base, run, data),
                    progress=False,
                )
                bias_fields = {"center_frequency": center, "bandwidth": BANDWIDTH}
                append_record(path, {**run_record(run, result, data, model), **bias_fields})
                print(f"{task_name} {name} seed {seed}: dev {100 * result.dev_metric:.2f}", flush=True)


def _by_seed(records, task, center) -> dict[int, float]:
    return metric_by_seed(records, task=task, center_frequency=center)


def _paired_to_uniform(records, tasks, centers) -> tuple[list, list[float]]:
    """Per f_c, the paired difference from uniform over every (task, seed) both have; Holm p over the f_c."""
    diffs = []
    for center in centers:
        treated, uniform = [], []
        for task in tasks:
            runs, base = _by_seed(records, task, center), _by_seed(records, task, None)
            for seed in shared_seeds(runs, base):
                treated.append(runs[seed])
                uniform.append(base[seed])
        diffs.append(paired_difference(treated, uniform))
    return diffs, holm_adjust([d.p_value for d in diffs])


def _verdict(name, centers, diffs, adjusted) -> str:
    better = [f"{c:g}" for c, d, p in zip(centers, diffs, adjusted, strict=True) if d.mean > 0 and p < 0.05]
    worse = [f"{c:g}" for c, d, p in zip(centers, diffs, adjusted, strict=True) if d.mean < 0 and p < 0.05]
    pairs = min(d.pairs for d in diffs)
    # Holm's first step tests the smallest p at 0.05 / (number of f_c): the |t| a paired test needs there.
    needed = stats.t.isf(0.05 / 2 / len(diffs), pairs - 1) if pairs > 1 else float("nan")
    return (
        f"- {name}: f_c above uniform at Holm p < 0.05: {', '.join(better) or 'none'}; below it: "
        f"{', '.join(worse) or 'none'}; {sum(d.mean < 0 for d in diffs)} of {len(diffs)} f_c have a mean below "
        f"uniform's (with {pairs} seed pairs, a difference needs |Δ| > {needed:.1f} s.e. of Δ to pass)."
    )


def _trend(records, task, centers) -> str:
    """Per seed, the least-squares slope of the dev metric over f_c; their mean, s.e. and one-sample t-test."""
    by_center = [_by_seed(records, task, c) for c in centers]
    slopes = [100 * np.polyfit(centers, [runs[seed] for runs in by_center], 1)[0] for seed in shared_seeds(*by_center)]
    if len(slopes) < 2:
        return f"- {task}: trend over f_c needs two seeds with every f_c."
    trend = paired_difference(slopes, [0.0] * len(slopes))
    return (
        f"- {task}: trend {trend.mean:+.2f} ± {trend.standard_error:.2f} points per 100 of f_c (per-seed least-squares "
        f"slopes, mean ± s.e. over {trend.pairs} seeds; t-test p = {trend.p_value:.3f})."
    )


def render() -> None:
    records = read_records(RESULTS / "frequency_bias_runs.jsonl")
    if not records:
        print("no runs yet")
        return
    baseline = [
        {**r, "center_frequency": None}
        for r in read_records(RESULTS / "glue_runs.jsonl")
        if r["method"] == "fourierft" and r["task"] in {x["task"] for x in records}
    ]
    records = records + baseline
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def mean_se(values):
        values = np.asarray(list(values), float)
        return values.mean(), values.std(ddof=1) / np.sqrt(len(values)) if len(values) > 1 else float("nan")

    tasks = sorted({r["task"] for r in records})
    lines = [
        "# Frequency bias on all-MiniLM-L6-v2 (written by experiments/paper/frequency_bias.py)",
        "",
        f"W = {BANDWIDTH:g} on the 384x384 grid; dev metric x100 (full dev set), mean ± standard error over seeds.",
        "uniform: the GLUE table's FourierFT runs (PEFT's randperm entries, uniform; same budget, rates, seeds).",
        "Δ: f_c minus uniform paired by seed (a seed fixes the head's init, dropout and data order in both), its",
        "standard error, and the paired t-test's two-sided p-value, Holm-adjusted over the task's f_c values.",
        "",
        "| task | f_c | mean | s.e. | seeds | Δ vs uniform | s.e. of Δ | p (Holm) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    verdicts = []
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        uniform = _by_seed(records, task, None)
        u_mean, u_se = mean_se(uniform.values())
        lines.append(f"| {task} | uniform | {u_mean:.2f} | {u_se:.2f} | {len(uniform)} | | | |")
        centers = [c for c in CENTERS if _by_seed(records, task, c)]
        diffs, adjusted = _paired_to_uniform(records, [task], centers)
        stats_per_center = [mean_se(_by_seed(records, task, c).values()) for c in centers]
        for center, (mean, se), diff, p in zip(centers, stats_per_center, diffs, adjusted, strict=True):
            lines.append(
                f"| {task} | {center:g} | {mean:.2f} | {se:.2f} | {len(_by_seed(records, task, center))} "
                f"| {diff.mean:+.2f} | {diff.standard_error:.2f} | {p:.3f} |"
            )
        verdicts += [_verdict(task, centers, diffs, adjusted), _trend(records, task, centers)]
        ax.errorbar(centers, *zip(*stats_per_center, strict=True), marker="o", capsize=3, label="frequency bias")
        ax.axhspan(u_mean - u_se, u_mean + u_se, alpha=0.3, color="gray", label="uniform ± s.e.")
        ax.set_title(task)
        ax.set_xlabel("f_c (384x384 grid)")
    centers = [c for c in CENTERS if all(_by_seed(records, t, c) for t in tasks)]
    if len(tasks) > 1 and centers:
        diffs, adjusted = _paired_to_uniform(records, tasks, centers)
        lines += [
            "",
            f"Pooled over {', '.join(tasks)}, descriptive only: it mixes the tasks' metrics (accuracy and Pearson "
            f"differences, x100) as if interchangeable. Intervals: paired t, simultaneous over the {len(centers)} "
            "f_c (Bonferroni); no verdict is drawn from the pool (the per-task verdicts above are the test).",
            "",
        ]
        lines += ["| f_c | Δ vs uniform | s.e. of Δ | simultaneous 95% interval | pairs | p (Holm) |", "|---" * 6 + "|"]
        for center, diff, p in zip(centers, diffs, adjusted, strict=True):
            level = 0.025 / len(centers)
            half = stats.t.isf(level, diff.pairs - 1) * diff.standard_error if diff.pairs > 1 else float("nan")
            lines.append(
                f"| {center:g} | {diff.mean:+.2f} | {diff.standard_error:.2f} | [{diff.mean - half:+.2f}, "
                f"{diff.mean + half:+.2f}] | {diff.pairs} | {p:.3f} |"
            )
    lines += ["", *verdicts]
    axes[0][0].set_ylabel("dev metric x100 (mean ± s.e.)")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(RESULTS / "frequency_bias.png", dpi=120)
    (RESULTS / "frequency_bias.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", nargs="?", default="all", choices=("all", "render"))
    parser.add_argument("--tasks", default="mrpc,stsb")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    if args.stage == "all":
        sweep([t for t in args.tasks.split(",") if t], [int(s) for s in args.seeds.split(",") if s])
    render()
    return 0


if __name__ == "__main__":
    sys.exit(main())
