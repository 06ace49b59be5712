"""How far FourierFT moves the pretrained weights at each Figure 4 point: ‖ΔW‖_F/‖W0‖_F before and after training.

Command (after ``glue_figure4.py run``; ~1 min, no training)::

  .venv/bin/python experiments/figure4_update_size.py   # writes results/figure4_update_size.md

For every FourierFT record of ``results/figure4_runs.jsonl`` (both scaling rules) it loads the saved adapter onto
the real all-MiniLM-L6-v2 and takes the largest ‖ΔW‖_F/‖W0‖_F over the 12 adapted layers
(:func:`fourier_flax.update_scale.update_norm_ratios`), and the same for a fresh N(0, 1) initialisation of that
config (the run's seed). Both grow with alpha·sqrt(n) at a fixed learning rate: the initial one exactly in
expectation, the trained one because Adam moves every coefficient by about the learning rate per step whatever n
is. This is the evidence behind Figure 4's scaling rule (``glue_figure4.SCALING_RULE``): under a fixed alpha the
n = 6144 runs end far from W0; alpha·sqrt(1000/n) keeps every n near the table's n = 1000.
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

RESULTS = pathlib.Path(__file__).resolve().parent / "results"
BACKBONE = "hf-flax"
MEASURES = ("alpha", "lr", "initial", "trained", "dev")


def largest_ratio(params, config) -> float:
    """The largest ‖ΔW‖_F/‖W0‖_F over the adapted layers of ``params``."""
    return max(update_norm_ratios(params, config).values())


def measure(records: list[dict]) -> list[dict]:
    """Per FourierFT record: task, rule, n, seed, alpha, dev metric and the initial and trained largest ratios."""
    rows, bases = [], {}
    for record in records:
        if record["method"] != "fourierft":
            continue
        task = get_task(record["task"])
        if task.num_labels not in bases:
            bases[task.num_labels] = load_classifier(num_labels=task.num_labels, backbone=BACKBONE)[1]
        base = bases[task.num_labels]
        adapter_dir = pathlib.Path(record["adapter_path"]).parent
        config, trained = load_adapter(adapter_dir, base)
        initial = ff.init_adapter(base, config, jax.random.key(record["seed"]))
        rows.append(
            {
                "task": record["task"],
                "rule": record["scaling_rule"],
                "n": record["setting"],
                "seed": record["seed"],
                "alpha": config.scaling,
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
        "# ‖ΔW‖/‖W0‖ at Figure 4's FourierFT points (written by experiments/figure4_update_size.py)",
        "",
        "all-MiniLM-L6-v2, query/value, the GLUE table's budget. Largest ‖ΔW‖_F/‖W0‖_F over the 12 adapted",
        "layers, at a fresh N(0, 1) initialisation and after training (the saved stopping-epoch adapter); medians",
        "over seeds. fourier_flax.update_scale warns above 0.25 at initialisation.",
        "",
        "| task | scaling rule | n | alpha | lr | initial | trained | dev | seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    groups = sorted({(r["task"], r["rule"], r["n"]) for r in rows})
    for task, rule, n in groups:
        group = [r for r in rows if (r["task"], r["rule"], r["n"]) == (task, rule, n)]
        median = {key: float(np.median([r[key] for r in group])) for key in MEASURES}
        lines.append(
            f"| {task} | {rule} | {n} | {median['alpha']:.2f} | {median['lr']:g} | {median['initial']:.3f} | "
            f"{median['trained']:.3f} | {median['dev']:.1f} | {len(group)} |"
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
