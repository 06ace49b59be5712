"""How far each Figure 4 run moved the pretrained weights: ‖ΔW‖_F/‖W0‖_F at initialisation and after training.

Command (after ``glue_figure4.py run``; ~1 min, no training)::

  .venv/bin/python experiments/studies/figure4_update_size.py   # writes results/figure4_update_size.md

For every record of ``results/figure4_runs.jsonl`` (both scaling rules) it loads the saved adapter onto the real
all-MiniLM-L6-v2 and takes the largest ‖ΔW‖_F/‖W0‖_F over the 12 adapted layers
(:func:`fourier_flax.update_scale.update_norm_ratios`), and the same for a fresh initialisation of that config
(the run's seed; LoRA starts at ΔW = 0). At a fixed learning rate, Adam moves every trained number by about the
rate per step, so the trained ΔW grows with FourierFT's alpha·sqrt(n) and with LoRA's (lora_alpha / r)·sqrt(r).
This is the evidence behind Figure 4's scaling rule (``glue_figure4.SCALING_RULE``): under a fixed alpha the
n = 6144 and r = 1, 2 runs end far from W0 (and collapse). Under the rule FourierFT's trained ΔW stays within
0.34–0.45 of W0 at every n; LoRA's first step is the same at every r, but its trained ΔW still grows with r, as
both of its factors train.
"""

from __future__ import annotations

import pathlib
import sys

import jax
import numpy as np

import fourier_flax as ff
from fourier_flax.checkpoint import load_adapter
from fourier_flax.data import get_task
from fourier_flax.finetune import load_classifier
from fourier_flax.finetune.records import read_records
from fourier_flax.update_scale import update_norm_ratios

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # experiments/: experiment_paths
from experiment_paths import REPO, RESULTS  # noqa: E402

BACKBONE = "hf-flax"
MEASURES = ("scale", "lr", "initial", "trained", "dev")


def largest_ratio(params, config) -> float:
    """The largest ‖ΔW‖_F/‖W0‖_F over the adapted layers of ``params``."""
    return max(update_norm_ratios(params, config).values())


def update_scale(config) -> float:
    """What multiplies the trained numbers in ΔW: FourierFT's alpha, LoRA's lora_alpha / r."""
    return config.scaling if isinstance(config, ff.FourierFTConfig) else config.scale


def measure(records: list[dict]) -> list[dict]:
    """Per record: task, method, rule, setting, seed, update scale, lr, dev metric, initial and trained ratios."""
    rows, bases = [], {}
    for record in records:
        task = get_task(record["task"])
        if task.num_labels not in bases:
            bases[task.num_labels] = load_classifier(num_labels=task.num_labels, backbone=BACKBONE)[1]
        base = bases[task.num_labels]
        adapter_dir = (REPO / record["adapter_path"]).parent  # recorded relative to the repo
        config, trained = load_adapter(adapter_dir, base)
        initial = ff.init_adapter(base, config, jax.random.key(record["seed"]))
        rows.append(
            {
                "task": record["task"],
                "method": record["method"],
                "rule": record["scaling_rule"],
                "setting": record["setting"],
                "seed": record["seed"],
                "scale": update_scale(config),
                "lr": record["hyperparameters"]["lr"],
                "dev": record["dev_metric"],
                "initial": largest_ratio(initial, config),
                "trained": largest_ratio(trained, config),
            }
        )
    return rows


def render(rows: list[dict]) -> str:
    """The markdown table: per (task, rule, n) the medians over seeds."""
    lines = [
        "# ‖ΔW‖/‖W0‖ at Figure 4's points (written by experiments/studies/figure4_update_size.py)",
        "",
        "Reads Figure 4's saved adapters under runs/ (not versioned): on a fresh clone, recreate them with",
        "`.venv/bin/python experiments/paper/glue_figure4.py run`, then rerun this script.",
        "",
        "all-MiniLM-L6-v2, query/value, the GLUE table's budget. Largest ‖ΔW‖_F/‖W0‖_F over the 12 adapted",
        "layers, at a fresh N(0, 1) initialisation and after training (the saved stopping-epoch adapter); medians",
        "over seeds. Scale: FourierFT's alpha, LoRA's lora_alpha / r. fourier_flax.update_scale warns above 0.25",
        "at initialisation.",
        "",
        "| task | method | scaling rule | n or r | scale | lr | initial | trained | dev | seeds |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    groups = sorted({(r["task"], r["method"], r["rule"], r["setting"]) for r in rows})
    for key in groups:
        task, method, rule, setting = key
        group = [r for r in rows if (r["task"], r["method"], r["rule"], r["setting"]) == key]
        median = {key: float(np.median([r[key] for r in group])) for key in MEASURES}
        lines.append(
            f"| {task} | {method} | {rule} | {setting} | {median['scale']:.2f} | {median['lr']:g} | "
            f"{median['initial']:.3f} | {median['trained']:.3f} | {median['dev']:.1f} | {len(group)} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    rows = measure(read_records(RESULTS / "figure4_runs.jsonl"))
    text = render(rows)
    (RESULTS / "figure4_update_size.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
