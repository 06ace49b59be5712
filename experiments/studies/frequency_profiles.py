"""What trained updates look like in frequency: radial DFT energy of trained ΔW, and which FourierFT entries grew.

Command (after ``experiments/paper/glue_table.py table``, whose adapters it reads from ``runs/glue_table/``)::

  .venv/bin/python experiments/studies/frequency_profiles.py [--tasks sst2,mrpc] [--seeds 0,1,2]    # ~20 s

For every saved adapter (LoRA, FourierFT) and full fine-tuning run of the GLUE table and every 384×384 query/value
kernel of all-MiniLM-L6-v2 (the kernels the adapters target), the learned update is taken in the FourierFT paper's
frequency picture: the 2-D DFT of ΔW, shifted so that the zero frequency sits at the centre, and its energy |·|²
averaged over the cells at each distance D from the centre (integer bins; mean energy *per cell*, so that a white —
frequency-blind — update gives a flat profile). For FourierFT the learned part is the change of ΔW from its N(0, 1)
start (ΔW_trained − ΔW_init, the same entries), and the entries' growth |c_trained − c_init| is binned by the same
D. FourierFT's energy per band is roughly the band's entry density (one fixed draw of n entries: ~22 of 1000 fall in
D < 32 on average, ± 5) times the mean squared growth of its entries, so the density is reported beside it and the
growth is the row that shows a preference. For full fine-tuning it is W_trained − W0 of the same kernels (read from
the run's ``trainable/`` checkpoint). A profile falling with D means the fine-tuning signal sits at low frequencies
— the evidence a frequency bias would need.

Writes ``experiments/results/frequency_profiles.md`` (per method and task: energy per cell in D bands, relative
to the band average) and ``frequency_profiles.json`` (the same runs' radial profiles at every integer D, median
over kernels, for ``notebooks/frequency_bias.ipynb``).
"""

from __future__ import annotations

import argparse
import functools
import json
import pathlib
import sys

import jax
import numpy as np
import orbax.checkpoint as ocp

from fourier_flax import adapter_module_paths, load_adapter
from fourier_flax.adapted_modules import module_delta_w
from fourier_flax.data import get_task
from fourier_flax.finetune import load_classifier, prepare_params, resolve_run
from fourier_flax.methods.fourierft import spectral_entries
from fourier_flax.module_paths import get_module

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # experiments/: experiment_paths
import experiment_paths  # noqa: E402

RESULTS = experiment_paths.RESULTS
RUNS = experiment_paths.RUNS / "glue_table"
BANDS = ((0, 32), (32, 64), (64, 128), (128, 192), (192, 272))  # D from 0 to the corner (√2·192 ≈ 271.5)


def centred_distance(shape: tuple[int, int]) -> np.ndarray:
    """Distance of every cell of the fftshift-ed spectrum to its centre, ``(d1, d2)``."""
    rows = np.arange(shape[0]) - shape[0] // 2
    cols = np.arange(shape[1]) - shape[1] // 2
    return np.sqrt(rows[:, None] ** 2 + cols[None, :] ** 2)


def radial_energy(update: np.ndarray) -> np.ndarray:
    """Mean |DFT|² per cell at each integer distance D from the centre (0 .. max), divided by the overall mean."""
    energy = np.abs(np.fft.fftshift(np.fft.fft2(update))) ** 2
    bins = np.rint(centred_distance(update.shape)).astype(int).ravel()
    totals = np.bincount(bins, weights=energy.ravel())
    counts = np.bincount(bins)
    return totals / np.maximum(counts, 1) / energy.mean()


def band_masks(distance: np.ndarray) -> list[np.ndarray]:
    """One boolean mask per band of :data:`BANDS`: where ``lo <= distance < hi`` (any shape of ``distance``)."""
    return [(distance >= lo) & (distance < hi) for lo, hi in BANDS]


def band_energy(update: np.ndarray) -> np.ndarray:
    """Mean |DFT|² per cell in each of :data:`BANDS`, divided by the mean over all cells."""
    energy = np.abs(np.fft.fftshift(np.fft.fft2(update))) ** 2
    per_band = np.array([energy[mask].mean() for mask in band_masks(centred_distance(update.shape))])
    return per_band / energy.mean()


def entry_distance(entries: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Distance to the centre of each entry ``(u, v)`` after fftshift."""
    u = (entries[0] + shape[0] // 2) % shape[0] - shape[0] // 2
    v = (entries[1] + shape[1] // 2) % shape[1] - shape[1] // 2
    return np.sqrt(u.astype(float) ** 2 + v.astype(float) ** 2)


def entry_density(distance: np.ndarray, shape: tuple[int, int]) -> list[float]:
    """Share of the entries in each of :data:`BANDS` over the share of the grid's cells there (1 = uniform)."""
    cell_masks = band_masks(centred_distance(shape))
    return [np.mean(entry) / np.mean(cell) for entry, cell in zip(band_masks(distance), cell_masks, strict=True)]


def query_value_kernels(params) -> dict[tuple, np.ndarray]:
    """Every ``…/query/kernel`` and ``…/value/kernel`` leaf of a parameter tree, by key path, in float64."""
    found = {}
    for key_path, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
        names = [getattr(k, "key", getattr(k, "name", None)) for k in key_path]
        if names[-1] == "kernel" and names[-2] in ("query", "value"):
            found[key_path] = np.asarray(leaf, np.float64)
    return found


def full_finetuning_updates(path: pathlib.Path, base) -> list[np.ndarray]:
    """``W_trained − W0`` of every query/value kernel in a full fine-tuning run's ``trainable/`` checkpoint."""
    with ocp.StandardCheckpointer() as checkpointer:
        trained = query_value_kernels(checkpointer.restore(path.absolute()))
    if not trained:
        raise ValueError(f"{path} holds no query/value kernels: is it a full fine-tuning run's trainable/?")
    pretrained = query_value_kernels(base)
    return [kernel - pretrained[key_path] for key_path, kernel in trained.items()]


@functools.cache
def pretrained_params(num_labels: int):
    """The pretrained classifier's parameters (the base differs between tasks only by its head's size)."""
    return load_classifier(num_labels=num_labels)[1]


def profiles(task: str, seed: int) -> dict[str, dict[str, np.ndarray]]:
    """Per method: the band energies of every adapted kernel (and FourierFT's entry growth per band)."""
    base = pretrained_params(get_task(task).num_labels)
    found: dict[str, dict[str, np.ndarray]] = {}
    full_path = RUNS / task / "full" / f"seed{seed}" / "trainable"
    for method in ("lora", "fourierft"):
        path = RUNS / task / method / f"seed{seed}" / "adapter"
        if not path.exists():
            continue
        config, trained = load_adapter(path, base)
        energies, growth, density, radial = [], [], [], []
        if method == "fourierft":
            run = resolve_run(task, preset="glue", overrides={"scaling": config.scaling, "seed": seed})
            initial, _ = prepare_params(base, run, jax.random.key(seed))
        for module in adapter_module_paths(trained):
            leaves = get_module(trained, module)
            update = np.asarray(module_delta_w(config, module, leaves), np.float64)
            if method == "fourierft":
                start = get_module(initial, module)
                update = update - np.asarray(module_delta_w(config, module, start), np.float64)
                change = np.abs(np.asarray(leaves["fourierft_spectrum"]) - np.asarray(start["fourierft_spectrum"]))
                distance = entry_distance(spectral_entries(config, update.shape, change.size), update.shape)
                growth.append([change[mask].mean() / change.mean() for mask in band_masks(distance)])
                density.append(entry_density(distance, update.shape))
            energies.append(band_energy(update))
            radial.append(radial_energy(update))
        found[method] = {"energy": np.array(energies), "radial": np.array(radial)}
        if growth:
            found[method]["growth"] = np.array(growth)
            found[method]["entry density"] = np.array(density)
    if full_path.exists():
        updates = full_finetuning_updates(full_path, base)
        found["full"] = {
            "energy": np.array([band_energy(u) for u in updates]),
            "radial": np.array([radial_energy(u) for u in updates]),
        }
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="sst2,mrpc,cola,stsb,rte")
    parser.add_argument("--seeds", default="0,1,2")
    args = parser.parse_args(argv)
    header = " | ".join(f"D {lo}-{hi}" for lo, hi in BANDS)
    lines = [
        "# Trained updates in frequency (written by experiments/studies/frequency_profiles.py)",
        "",
        "Reads the GLUE table's saved adapters under runs/glue_table/ (not versioned): on a fresh clone, recreate them",
        "with `.venv/bin/python experiments/paper/glue_table.py table` (~9 h on the 2-core CPU), then rerun this script.",  # noqa: E501
        "",
        "Mean |DFT2(ΔW)|² per cell in bands of distance D to the centre of the shifted spectrum, relative to the mean",
        "over all cells (1.0 everywhere = frequency-blind). FourierFT: the learned change ΔW_trained − ΔW_init; full",
        "fine-tuning: W_trained − W0.",
        "Median over the adapted 384×384 query/value kernels (12 per run). Reference row: the pretrained W0 of the",
        "same kernels (not an update) — a transformer's hidden units have no order (permuting them leaves the",
        "function unchanged), and its weights are as flat in this picture as noise.",
        "",
        f"| task | seed | method | quantity | {header} |",
        "|---" * (len(BANDS) + 4) + "|",
    ]
    pretrained = list(query_value_kernels(pretrained_params(2)).values())
    cells = " | ".join(f"{x:.2f}" for x in np.median([band_energy(w) for w in pretrained], axis=0))
    lines.append(f"| - | - | pretrained W0 | energy | {cells} |")
    summary: dict[tuple[str, str], list[np.ndarray]] = {}
    curves = [
        {
            "task": "-",
            "seed": None,
            "method": "pretrained",
            "radial": np.median([radial_energy(w) for w in pretrained], 0).tolist(),
        }
    ]
    for task in [t for t in args.tasks.split(",") if t]:
        for seed in [int(s) for s in args.seeds.split(",") if s]:
            for method, values in profiles(task, seed).items():
                curves.append(
                    {
                        "task": task,
                        "seed": seed,
                        "method": method,
                        "radial": np.median(values.pop("radial"), 0).tolist(),
                    }
                )
                for quantity, table in values.items():
                    cells = " | ".join(f"{x:.2f}" for x in np.median(table, axis=0))
                    lines.append(f"| {task} | {seed} | {method} | {quantity} | {cells} |")
                    summary.setdefault((method, quantity), []).append(np.median(table, axis=0))
    lines += [
        "",
        "Summary: per method and quantity, the median over every (task, seed) row above, and in brackets the",
        "smallest and largest row value per band.",
        "",
        f"| method | quantity | rows | {header} |",
        "|---" * (len(BANDS) + 3) + "|",
    ]
    for (method, quantity), rows in summary.items():
        rows = np.array(rows)
        spread = zip(np.median(rows, 0), rows.min(0), rows.max(0), strict=True)
        cells = " | ".join(f"{m:.2f} [{lo:.2f}, {hi:.2f}]" for m, lo, hi in spread)
        lines.append(f"| {method} | {quantity} | {len(rows)} | {cells} |")
    (RESULTS / "frequency_profiles.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "frequency_profiles.json").write_text(json.dumps({"bands": BANDS, "profiles": curves}) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
