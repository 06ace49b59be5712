"""How far one Adam step moves ΔW under each adapter method: the scale that centres each method's rate grid.

Command::

  .venv/bin/python experiments/studies/first_step_effect.py    # a few seconds

Adam's first update is ``lr · sign(g)`` on every trained leaf, whatever the gradient's size, so the rate a method
needs is set by how much a unit step of its leaves moves ΔW. For one 384×384 kernel (MiniLM's query/value shape, W0
drawn N(0, 0.05²)) and each method at the GLUE table's configuration, this perturbs every trained leaf by
``ε · s`` with random signs s (ε = 1e-3, where ΔW is linear to ~1e-3 relative), and reports the RMS change of ΔW per
unit step, and that RMS relative to LoRA's. A method whose unit step moves ΔW k times as far as LoRA's needs about
1/k of LoRA's rate. Beside the prediction (LoRA's swept rate / k) stands each method's rate as swept on STS-B
(``glue_sweep.jsonl`` of ``experiments/paper/glue_table.py sweep``), which says where the rule holds. Writes
``experiments/results/first_step_effect.md``.
"""

from __future__ import annotations

import dataclasses
import pathlib
import sys

import jax
import jax.numpy as jnp
import numpy as np

from fourier_flax import init_adapter
from fourier_flax.adapted_modules import module_delta_w
from fourier_flax.finetune import adapter_config
from fourier_flax.methods import AdapterConfig
from fourier_flax.partition import trainable_mask

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # experiments/: experiment_paths
from experiment_paths import RESULTS  # noqa: E402
from glue_table import SWEEP_TASK, chosen, table_run_config  # noqa: E402  (the table's protocol and rates)

EPSILON = 1e-3
TARGET = ("query",)
METHODS = ("fourierft", "lora", "dora", "vera", "flora", "svft")


def table_configs(picks: dict[str, tuple[float, float | None]]) -> dict[str, AdapterConfig]:
    """Each adapter method's config exactly as the GLUE table runs it (``picks``: its chosen (lr, scaling)),
    aimed at the one kernel ``TARGET`` and without the classifier head."""
    return {
        method: dataclasses.replace(
            adapter_config(table_run_config(SWEEP_TASK, method, 0, *picks[method])),
            target_modules=TARGET,
            modules_to_save=(),
        )
        for method in METHODS
    }


def unit_step_rms(config, kernel: jax.Array, seed: int = 0) -> tuple[float, list[str]]:
    """RMS change of ΔW per unit sign step of every trained leaf of ``config`` on ``kernel``, and those leaves."""
    params = init_adapter({"query": {"kernel": kernel, "bias": jnp.zeros(kernel.shape[1])}}, config, jax.random.key(0))
    trained = [name for name, flag in trainable_mask(params, config)["query"].items() if flag is True]
    leaves = params["query"]
    signs = np.random.default_rng(seed)
    stepped = {
        name: leaf + EPSILON * jnp.asarray(signs.choice([-1.0, 1.0], size=leaf.shape), leaf.dtype)
        if name in trained
        else leaf
        for name, leaf in leaves.items()
    }
    change = np.asarray(module_delta_w(config, TARGET, stepped) - module_delta_w(config, TARGET, leaves), np.float64)
    return float(np.sqrt(np.mean(change**2)) / EPSILON), trained


def main() -> int:
    kernel = 0.05 * jax.random.normal(jax.random.key(1), (384, 384))
    picks = chosen(RESULTS)
    configs = table_configs(picks)
    effects = {name: unit_step_rms(config, kernel) for name, config in configs.items()}
    lora = effects["lora"][0]
    swept = {name: picks[name][0] for name in METHODS}
    lines = [
        "# One Adam step's effect on ΔW (written by experiments/studies/first_step_effect.py)",
        "",
        "384×384 kernel, the GLUE table's configurations; RMS of ΔW's change per unit sign step of every trained",
        f"leaf (linearised at ε = {EPSILON:g}, at initialisation). Predicted rate = LoRA's swept rate / (× LoRA);",
        "swept rate: the best of the method's grid on the STS-B selection slice (glue_sweep.md; FourierFT at",
        f"scaling {configs['fourierft'].scaling:g}).",
        "",
        "| method | trained leaves | RMS ΔW change per unit step | × LoRA | predicted rate | swept rate |",
        "|---|---|---|---|---|---|",
    ]
    for name, (rms, trained) in effects.items():
        predicted = f"{swept['lora'] * lora / rms:.2g}"
        lines.append(f"| {name} | {', '.join(trained)} | {rms:.3g} | {rms / lora:.3g} | {predicted} | {swept[name]} |")
    (RESULTS / "first_step_effect.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
