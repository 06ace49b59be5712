"""Figure 4's scaling rule (``experiments/paper/glue_figure4.py``): what it claims about ΔW, and how its records render.

The rule keeps the size of an Adam step on ΔW (and FourierFT's initial ΔW) at the GLUE table's n = 1000 / r = 8:
checked on the library's own ΔW and a real optax.adam step, against float64 closed forms.
"""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from experiment_scripts import load_experiment

from fourier_flax.methods import fourierft
from fourier_flax.methods.lora import init_lora_leaves, lora_delta_w

SHAPE = (384, 384)  # MiniLM's query/value kernels
TABLE_ALPHA = 12.0


@pytest.fixture(scope="module")
def figure4():
    return load_experiment("glue_figure4")


def expected_squared_norm(entries: np.ndarray, alpha: float) -> float:
    """E‖ΔW‖_F² over c ~ N(0, I), float64: each coefficient's cosine has mean square 1/2 over the grid (1 if its
    frequency is its own conjugate), distinct frequencies are orthogonal, so E‖ΔW‖² = α²·Σ_l w_l/(d1·d2)."""
    d1, d2 = SHAPE
    rows, cols = entries.astype(np.int64)
    self_conjugate = ((2 * rows) % d1 == 0) & ((2 * cols) % d2 == 0)
    weights = np.where(self_conjugate, 1.0, 0.5)
    return float(alpha**2 * weights.sum() / (d1 * d2))


PICKS = {"fourierft": (1.0, TABLE_ALPHA), "lora": (1e-2, None)}


def fourierft_alpha(figure4, n: int) -> float:
    run = figure4.figure4_run("stsb", "fourierft", n, 0, PICKS)
    assert (run.n_frequency, run.lr) == (n, 1.0)
    return run.scaling


def lora_alpha(figure4, r: int) -> float:
    run = figure4.figure4_run("stsb", "lora", r, 0, PICKS)
    assert (run.lora_r, run.lr) == (r, 1e-2)
    return run.lora_alpha


@pytest.mark.parametrize("n", [50, 200, 6144])
def test_rule_keeps_initial_delta_w_norm_of_n_1000(figure4, n):
    reference = expected_squared_norm(fourierft.peft_entries(SHAPE, 1000, seed=777), TABLE_ALPHA)
    entries = fourierft.peft_entries(SHAPE, n, seed=777)
    alpha = fourierft_alpha(figure4, n)
    expected = expected_squared_norm(entries, alpha)
    assert expected == pytest.approx(reference, rel=1e-3)
    # the library's ΔW at that alpha, averaged over N(0, 1) draws, has that expected norm (relative sd of the
    # mean of 256 draws is sqrt(2/(256·n)) <= 0.013 here, so 6% is > 4 sd)
    draws = jax.random.normal(jax.random.key(n), (256, n))
    norms = jax.vmap(lambda c: jnp.sum(fourierft.delta_w(c, entries, SHAPE, alpha) ** 2))(draws)
    assert float(jnp.mean(norms)) == pytest.approx(expected, rel=0.06)


def test_a_fixed_alpha_would_grow_the_initial_norm_with_n():
    small = expected_squared_norm(fourierft.peft_entries(SHAPE, 50, seed=777), TABLE_ALPHA)
    large = expected_squared_norm(fourierft.peft_entries(SHAPE, 6144, seed=777), TABLE_ALPHA)
    assert large / small == pytest.approx(6144 / 50, rel=1e-2)


def first_adam_step_norm(delta_w, params, seed: int) -> float:
    """‖ΔW after one optax.adam step − ΔW before‖_F for the loss sum(G ⊙ ΔW), G ~ N(0, 1)."""
    target = jax.random.normal(jax.random.key(seed), SHAPE)
    grads = jax.grad(lambda p: jnp.sum(target * delta_w(p)))(params)
    optimizer = optax.adam(1e-2)
    updates, _ = optimizer.update(grads, optimizer.init(params), params)
    return float(jnp.linalg.norm(delta_w(optax.apply_updates(params, updates)) - delta_w(params)))


def fourierft_step(alpha: float, n: int, seed: int) -> float:
    entries = fourierft.peft_entries(SHAPE, n, seed=777)
    coefficients = jax.random.normal(jax.random.key(100 + seed), (n,))
    return first_adam_step_norm(lambda c: fourierft.delta_w(c, entries, SHAPE, alpha), coefficients, seed)


def lora_step(lora_alpha: float, r: int, seed: int) -> float:
    lora_a, lora_b = init_lora_leaves(jax.random.key(100 + seed), SHAPE, r=r, in_features=SHAPE[0])
    return first_adam_step_norm(lambda p: lora_delta_w(p[0], p[1], scale=lora_alpha / r), (lora_a, lora_b), seed)


@pytest.mark.parametrize("n", [50, 6144])
def test_rule_keeps_fourierft_adam_step_of_n_1000(figure4, n):
    reference = np.mean([fourierft_step(TABLE_ALPHA, 1000, seed) for seed in range(3)])
    step = np.mean([fourierft_step(fourierft_alpha(figure4, n), n, seed) for seed in range(3)])
    assert step == pytest.approx(reference, rel=0.05)
    fixed = np.mean([fourierft_step(TABLE_ALPHA, n, seed) for seed in range(3)])
    assert fixed / reference == pytest.approx(np.sqrt(n / 1000), rel=0.05)


@pytest.mark.parametrize("r", [1, 2, 16])
def test_rule_keeps_lora_adam_step_of_r_8(figure4, r):
    """B = 0 at init, so the first step is lora_alpha/r · A·ΔB with ΔB = ±lr: its norm grows as lora_alpha/sqrt(r)."""
    reference = np.mean([lora_step(8.0, 8, seed) for seed in range(3)])
    step = np.mean([lora_step(lora_alpha(figure4, r), r, seed) for seed in range(3)])
    assert step == pytest.approx(reference, rel=0.1)
    fixed = np.mean([lora_step(8.0, r, seed) for seed in range(3)])
    assert fixed / reference == pytest.approx(np.sqrt(8 / r), rel=0.1)


def test_table_points_are_the_table_runs(figure4):
    for method, setting, field in (("fourierft", 1000, "n_frequency"), ("lora", 8, "lora_r")):
        run = figure4.figure4_run("stsb", method, setting, 0, PICKS)
        table = figure4.table_run_config("stsb", method, 0, *PICKS[method])
        assert getattr(table, field) == setting
        assert run == table


def _record(method: str, setting: int, seed: int, rule: str, dev: float, hp: dict) -> dict:
    return {
        "task": "stsb",
        "method": method,
        "setting": setting,
        "seed": seed,
        "scaling_rule": rule,
        "dev_metric": dev,
        "trainable_params_without_head": setting * 12,
        "hyperparameters": hp,
    }


def test_render_plots_only_the_current_rule_and_lists_the_rest_apart(figure4, tmp_path):
    sweep = [
        {"task": "stsb", "method": "fourierft", "lr": 1.0, "scaling": TABLE_ALPHA, "selection_metric": 80.0},
        {"task": "stsb", "method": "lora", "lr": 1e-2, "scaling": None, "selection_metric": 75.0},
    ]
    rule = figure4.SCALING_RULE["fourierft"]
    records = [
        _record("fourierft", 6144, 0, "alpha fixed", 31.2, {"lr": 1.0, "scaling": 12.0}),
        *(_record("fourierft", 6144, s, rule, 78.0 + s, {"lr": 1.0, "scaling": 4.84}) for s in range(3)),
        *(
            _record("lora", 8, s, figure4.SCALING_RULE["lora"], 75.0 + s, {"lr": 1e-2, "lora_alpha": 8.0, "r": 8})
            for s in range(3)
        ),
    ]
    for name, rows in (("glue_sweep.jsonl", sweep), ("figure4_runs.jsonl", records)):
        (tmp_path / name).write_text("".join(json.dumps(r) + "\n" for r in rows))
    figure4.render_figure4(tmp_path)
    text = (tmp_path / "figure4.md").read_text()
    current, superseded = text.split("## Runs under a superseded rule")
    assert "| stsb | fourierft | n_frequency=6144 | alpha 4.84 | 73,728 | 79.0 [78.0, 80.0] | 3 |" in current
    assert "| stsb | lora | lora_r=8 | 8.00/8 | 96 | 76.0 [75.0, 77.0] | 3 |" in current
    assert "31.2" not in current
    assert "| stsb | fourierft | 6144 | alpha fixed | alpha 12.00 | 0 | 31.2 |" in superseded
    assert (tmp_path / "figure4.png").stat().st_size > 0
