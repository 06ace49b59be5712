"""Figure 4 on the real all-MiniLM-L6-v2: dev metric against adapter size, FourierFT n vs LoRA r.

Commands (resumable: finished runs are read back from figure4_runs.jsonl and skipped)::

  .venv/bin/python experiments/paper/glue_figure4.py run --tasks stsb,sst2 --seeds 0,1,2   # ~2.5 min a run here
  .venv/bin/python experiments/paper/glue_figure4.py render                               # figure4.md + figure4.png

FourierFT n in {50, 100, 200, 1000, 6144} and LoRA r in {1, 2, 4, 8, 16} at the GLUE table's budget and chosen
learning rates (``glue_table.chosen``; protocol in ``glue_table``). The n = 1000 and r = 8 points are the table's
own runs (glue_runs.jsonl).

Scaling rule (:data:`SCALING_RULE`): each method's update scale keeps the size of an Adam step on ΔW at the
table's point. Adam moves every trained number by about the learning rate per step, so FourierFT's step on ΔW
grows as alpha·sqrt(n) (as does its initial ΔW) and LoRA's as (lora_alpha / r)·sqrt(r). Hence FourierFT alpha =
12·sqrt(1000 / n) and LoRA lora_alpha = 8·sqrt(r / 8), an update scale of sqrt(8 / r) (rsLoRA's 1/sqrt(r)
anchored at r = 8). A fixed alpha (FourierFT 12; LoRA lora_alpha 8, PEFT's convention) was run first and
collapsed at the sizes where the step grows: STS-B seed 0, FourierFT n = 6144 31.2 Pearson (79.6 at n = 1000),
LoRA r = 1 39.1 and r = 2 −6.0 (74.3 at r = 8). ``experiments/studies/figure4_update_size.py`` measures the trained ΔW's
size at every point. Those runs stay in figure4_runs.jsonl under their own ``scaling_rule``; figure4.md lists
them apart.

Outputs (experiments/results/): figure4_runs.jsonl (one record per run, as glue_runs.jsonl plus ``setting`` and
``scaling_rule``), figure4.md, figure4.png.
"""

from __future__ import annotations

import argparse
import math
import pathlib
import re
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from fourier_flax.data import get_task
from fourier_flax.finetune import Trainer, default_data_dir, load_classifier, load_task_data, load_tokenizer
from fourier_flax.finetune.loop import train_run
from fourier_flax.finetune.presets import RunConfig
from fourier_flax.finetune.records import append_record, finished_keys, read_records

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # experiments/: experiment_paths
import experiment_paths  # noqa: E402, F401  (the groups on the import path)

# the table's protocol, rates and record format
from glue_table import BACKBONE, RESULTS, RUNS, TASKS, chosen, run_record, table_run_config  # noqa: E402

FIGURE4 = {"fourierft": ("n_frequency", (50, 100, 200, 1000, 6144)), "lora": ("lora_r", (1, 2, 4, 8, 16))}
TABLE_SETTING = {"fourierft": 1000, "lora": 8}
SCALING_RULE = {"fourierft": "alpha * sqrt(1000 / n)", "lora": "lora_alpha = 8 * sqrt(r / 8)"}


def figure4_run(task: str, method: str, setting: int, seed: int, picks: dict) -> RunConfig:
    """Figure 4's run of ``method`` at ``setting`` (n or r): the table's run with ``SCALING_RULE``'s update scale.

    Both rules keep the size of an Adam step on ΔW at the table's point (n = 1000, r = 8, where the run is the
    table's own): FourierFT's step grows as alpha·sqrt(n), LoRA's as (lora_alpha / r)·sqrt(r).
    """
    lr, table_scaling = picks[method]
    if method == "fourierft":
        scaling = table_scaling * math.sqrt(TABLE_SETTING["fourierft"] / setting)
        return table_run_config(task, method, seed, lr, scaling, n_frequency=setting)
    lora_alpha = RunConfig.lora_alpha * math.sqrt(setting / TABLE_SETTING["lora"])
    return table_run_config(task, method, seed, lr, table_scaling, lora_r=setting, lora_alpha=lora_alpha)


def figure4(seeds: Sequence[int], tasks: Sequence[str], results: pathlib.Path) -> None:
    """Runs every missing (task, method, setting, seed) of Figure 4; the table's runs stand for n=1000 / r=8."""
    path = results / "figure4_runs.jsonl"
    picks = chosen(results)
    table_runs = {(r["task"], r["method"], r["seed"]): r for r in read_records(results / "glue_runs.jsonl")}
    data_dir, tokenizer = default_data_dir(), load_tokenizer()
    key = ("task", "method", "setting", "seed", "scaling_rule")
    for seed in seeds:
        for task_name in tasks:
            task = get_task(task_name)
            model = base = data = None
            for method, (field, values) in FIGURE4.items():
                rule = SCALING_RULE[method]
                for value in values:
                    if (task_name, method, value, seed, rule) in finished_keys(path, key):
                        continue
                    tagged = {"setting": value, "scaling_rule": rule}
                    if value == TABLE_SETTING[method] and (task_name, method, seed) in table_runs:
                        append_record(path, {**table_runs[(task_name, method, seed)], **tagged})
                        continue
                    run = figure4_run(task_name, method, value, seed, picks)
                    if model is None:
                        model, base = load_classifier(num_labels=task.num_labels, backbone=BACKBONE)
                        data = load_task_data(run, data_dir, tokenizer)
                    rule_dir = re.sub(r"\W+", "_", rule).strip("_")
                    out = RUNS.parent / "figure4" / task_name / f"{method}_{value}" / rule_dir / f"seed{seed}"
                    result = train_run(
                        run, out, data_dir=data_dir, trainer=Trainer(model, base, run, data), progress=False
                    )
                    record = {**run_record(run, result, data, model), **tagged}
                    append_record(path, record)
                    print(f"figure4 {task_name} {method} {field}={value} seed {seed}: dev {record['dev_metric']:.2f}")
    render_figure4(results)


def render_figure4(results: pathlib.Path) -> None:
    """figure4.md and figure4.png from figure4_runs.jsonl: the points under ``SCALING_RULE``, then the others."""
    records = read_records(results / "figure4_runs.jsonl")
    if not records:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    current = [r for r in records if r.get("scaling_rule") == SCALING_RULE[r["method"]]]
    superseded = [r for r in records if r not in current]
    tasks = [t for t in TASKS if any(r["task"] == t for r in current)]
    picks = chosen(results)
    lines = [
        "# Figure 4 on all-MiniLM-L6-v2 (written by experiments/paper/glue_figure4.py)",
        "",
        "Dev metric x100 (full dev set, stopping epoch on the selection slice): median [min, max] over seeds.",
        f"The GLUE table's budget and chosen rates at every point (FourierFT lr {picks['fourierft'][0]:g}, LoRA lr "
        f"{picks['lora'][0]:g}).",
        "",
        "Scaling rule: each method's update scale keeps the size of an Adam step on Delta W at the table's point",
        f"(n = {TABLE_SETTING['fourierft']}, r = {TABLE_SETTING['lora']}, whose runs are the table's own). The step "
        "grows as alpha * sqrt(n) for FourierFT",
        f"(as does its initial Delta W), so alpha = {picks['fourierft'][1]:g} * sqrt(1000 / n); it grows as "
        "(lora_alpha / r) * sqrt(r) for",
        "LoRA, so lora_alpha = 8 * sqrt(r / 8), an update scale of sqrt(8 / r) (rsLoRA's 1/sqrt(r)). A fixed alpha",
        "(FourierFT 12; LoRA lora_alpha 8, PEFT's convention) was run first: see the last section and",
        "figure4_update_size.md.",
        "",
        "| task | method | setting | scaling | adapter params | dev | seeds |",
        "|---|---|---|---|---|---|---|",
    ]
    fig, axes = plt.subplots(1, len(tasks), figsize=(4.5 * len(tasks), 3.4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        for method, (field, values) in FIGURE4.items():
            xs, ys, lo, hi = [], [], [], []
            for value in values:
                runs = [r for r in current if (r["task"], r["method"], r["setting"]) == (task, method, value)]
                if not runs:
                    continue
                metric = np.array([r["dev_metric"] for r in runs])
                params = runs[0]["trainable_params_without_head"]
                lines.append(
                    f"| {task} | {method} | {field}={value} | {_figure4_scaling_text(runs[0])} | {params:,d} | "
                    f"{np.median(metric):.1f} [{metric.min():.1f}, {metric.max():.1f}] | {len(metric)} |"
                )
                xs.append(params)
                ys.append(np.median(metric))
                lo.append(np.median(metric) - metric.min())
                hi.append(metric.max() - np.median(metric))
            if xs:
                ax.errorbar(xs, ys, yerr=[lo, hi], marker="o", capsize=3, label=method)
        ax.set_xscale("log")
        ax.set_title(task)
        ax.set_xlabel("adapter parameters (head excluded)")
    if superseded:
        lines += [
            "",
            "## Runs under a superseded rule (not plotted)",
            "",
            "| task | method | setting | scaling rule | scaling | seed | dev |",
            "|---|---|---|---|---|---|---|",
        ]
        for r in sorted(superseded, key=lambda r: (r["task"], r["method"], r["setting"], r["seed"])):
            lines.append(
                f"| {r['task']} | {r['method']} | {r['setting']} | {r.get('scaling_rule', '-')} | "
                f"{_figure4_scaling_text(r)} | {r['seed']} | {r['dev_metric']:.1f} |"
            )
    axes[0][0].set_ylabel("dev metric x100")
    axes[0][-1].legend()
    fig.tight_layout()
    fig.savefig(results / "figure4.png", dpi=120)
    (results / "figure4.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def _figure4_scaling_text(record: dict[str, Any]) -> str:
    """The run's update scale as recorded: FourierFT's alpha, or LoRA's lora_alpha / r."""
    hp = record["hyperparameters"]
    if record["method"] == "fourierft":
        return f"alpha {hp['scaling']:.2f}"
    return f"{hp['lora_alpha']:.2f}/{hp['r']}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stage", choices=("run", "render"))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--tasks", default="stsb,sst2")
    parser.add_argument("--results", default=str(RESULTS))
    args = parser.parse_args(argv)
    results = pathlib.Path(args.results)
    if args.stage == "run":
        seeds = [int(s) for s in args.seeds.split(",") if s]
        figure4(seeds, [t for t in args.tasks.split(",") if t], results)
    else:
        render_figure4(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
