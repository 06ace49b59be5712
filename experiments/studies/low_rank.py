"""Singular-value spectra and effective rank of trained FourierFT ΔW vs LoRA ΔW (the paper's "not low-rank" point).

Command (after ``experiments/paper/glue_table.py``, whose seed-0 adapters it reads from
``runs/glue_table/<task>/<method>/seed0/adapter``)::

  .venv/bin/python experiments/studies/low_rank.py [--task sst2]      # ~1 min

For every adapted query/value kernel of MiniLM-L6 (384 x 384) it builds ΔW from the saved adapter
(:func:`fourier_flax.adapted_modules.module_delta_w`) and reports, per method, the median over layers of: the entropy
effective rank ``exp(H(σ/Σσ))`` (Roy & Vetterli, 2007), the number of singular values above 1% of the largest, and
the rank (numerical, ``σ > 384 · eps · σ_max``). LoRA's ΔW has rank ≤ r = 8 by construction; FourierFT's n = 1000
cosines give a ΔW of rank up to min(384, n). Writes ``experiments/results/low_rank.md`` and ``low_rank.png``.
"""

import argparse
import pathlib
import statistics
import sys

import matplotlib

matplotlib.use("Agg")
import jax  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from fourier_flax import adapter_module_paths, load_adapter  # noqa: E402
from fourier_flax.adapted_modules import module_delta_w  # noqa: E402
from fourier_flax.data import get_task  # noqa: E402
from fourier_flax.finetune import load_classifier, prepare_params, resolve_run  # noqa: E402
from fourier_flax.module_paths import get_module  # noqa: E402

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # experiments/: experiment_paths
import experiment_paths  # noqa: E402

RESULTS = experiment_paths.RESULTS


def effective_rank(singular_values: np.ndarray) -> float:
    """``exp`` of the entropy of the normalised singular values (1 for rank one, d for a flat spectrum)."""
    p = singular_values / singular_values.sum()
    p = p[p > 0]
    return float(np.exp(-(p * np.log(p)).sum()))


def spectra(config, params) -> dict[str, np.ndarray]:
    """Module path -> singular values (descending) of its ΔW."""
    return {
        module: np.linalg.svd(
            np.asarray(module_delta_w(config, module, get_module(params, module)), np.float64), compute_uv=False
        )
        for module in adapter_module_paths(params)
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="sst2")
    args = parser.parse_args()
    _, base = load_classifier(num_labels=get_task(args.task).num_labels)
    runs = experiment_paths.RUNS / "glue_table" / args.task
    loaded = {m: load_adapter(runs / m / "seed0" / "adapter", base) for m in ("fourierft", "lora")}
    found = {m: spectra(*pair) for m, pair in loaded.items()}
    # FourierFT starts from c ~ N(0, 1) (the paper, PEFT), so its ΔW is not zero before training: show that too.
    scaling = loaded["fourierft"][0].scaling
    run = resolve_run(args.task, preset="glue", overrides={"scaling": scaling})
    initial, adapter = prepare_params(base, run, jax.random.key(0))
    found["fourierft at init (seed 0)"] = spectra(adapter, initial)
    lines = [
        "# Effective rank of trained ΔW: FourierFT vs LoRA",
        "",
        f"Produced by `.venv/bin/python experiments/studies/low_rank.py --task {args.task}` from the seed-0 adapters that "  # noqa: E501
        "`experiments/paper/glue_table.py` trained (MiniLM-L6, query/value 384x384 kernels; see glue_table.md), "
        "and FourierFT's ΔW at initialisation (seed 0, the same entries and scaling). "
        "Median over the 12 adapted kernels.",
        "",
        "| method | entropy effective rank | # σ > 1% σ_max | numerical rank | ‖ΔW‖_F (median) |",
        "|---|---|---|---|---|",
    ]
    figure, axis = plt.subplots(figsize=(6, 4))
    for method, by_module in found.items():
        values = list(by_module.values())
        tol = [s[0] * 384 * np.finfo(np.float32).eps for s in values]
        stats = (
            statistics.median(effective_rank(s) for s in values),
            statistics.median(int((s > 0.01 * s[0]).sum()) for s in values),
            statistics.median(int((s > t).sum()) for s, t in zip(values, tol, strict=True)),
            statistics.median(float(np.sqrt((s**2).sum())) for s in values),
        )
        lines.append(f"| {method} | {stats[0]:.1f} | {stats[1]:.0f} | {stats[2]:.0f} | {stats[3]:.3g} |")
        for i, s in enumerate(values):
            axis.semilogy(
                s / s[0],
                color={"fourierft": "C0", "lora": "C1"}.get(method, "C2"),
                alpha=0.5,
                label=method if i == 0 else None,
            )
    axis.set(xlabel="index", ylabel="σ_i / σ_max", title=f"ΔW singular values, MiniLM-L6 {args.task} (12 kernels each)")
    axis.set_ylim(1e-8, 2)
    axis.legend()
    figure.tight_layout()
    figure.savefig(RESULTS / "low_rank.png", dpi=120)
    (RESULTS / "low_rank.md").write_text("\n".join([*lines, "", "![singular values](low_rank.png)", ""]))
    print("\n".join(lines))


if __name__ == "__main__":
    main()
