"""experiments/paper/glue_fair.py: which grid point each task gets, which table runs are re-run (synthetic records)."""

from __future__ import annotations

import pytest
from experiment_scripts import load_experiment

from fourier_flax.finetune.records import append_record, read_records


def record(task, method, lr, knob, score):
    return {"task": task, "method": method, "lr": lr, "knob": knob, "selection_metric": score}


def test_swept_tasks_use_their_own_best_and_the_others_the_best_mean(tmp_path):
    fair = load_experiment("glue_fair")
    path = tmp_path / "glue_fair_sweep.jsonl"
    rows = [
        record("stsb", "lora", 1e-3, 4.0, 80.0),
        record("stsb", "lora", 1e-2, 4.0, 84.0),  # STS-B's best
        record("sst2", "lora", 1e-3, 4.0, 83.0),  # SST-2's best
        record("sst2", "lora", 1e-2, 4.0, 70.0),
        record("stsb", "lora", 3e-3, 16.0, 83.0),  # second on both: the best mean (83 + 82) / 2
        record("sst2", "lora", 3e-3, 16.0, 82.0),
        record("stsb", "lora", 2e-2, 64.0, float("nan")),  # diverged: never chosen
        record("stsb", "head", 1e-2, None, 40.0),  # swept on STS-B only: no mean for other tasks
    ]
    for row in rows:
        append_record(path, row)
    assert fair.chosen(tmp_path, "stsb")["lora"] == fair.GridPoint(1e-2, 4.0)
    assert fair.chosen(tmp_path, "sst2")["lora"] == fair.GridPoint(1e-3, 4.0)
    assert fair.chosen(tmp_path, "mrpc")["lora"] == fair.GridPoint(3e-3, 16.0)
    assert fair.chosen(tmp_path, "stsb")["head"] == fair.GridPoint(1e-2, None)
    assert "head" not in fair.chosen(tmp_path, "mrpc")


def test_grids_are_as_dense_for_lora_as_for_fourierft():
    fair = load_experiment("glue_fair")
    assert len(fair.GRIDS["lora"]) == len(fair.GRIDS["fourierft"]) == 15
    assert len({p.knob for p in fair.GRIDS["lora"]}) == 3  # rate x lora_alpha, not the rate alone
    run = fair.point_run("stsb", "lora", 0, fair.GRIDS["lora"][-1])
    assert (run.lora_alpha, run.lora_r, run.epochs) == (64.0, 8, 3)
    assert fair.GRIDS["dora"] == fair.GRIDS["lora"]  # DoRA, when swept, on LoRA's grid
    run = fair.point_run("stsb", "dora", 0, fair.GRIDS["dora"][0])
    assert (run.method, run.lora_alpha, run.lora_r, run.lr) == ("dora", 4.0, 8, 3e-4)


def old_table_record(method, seed, hyperparameters, dev=71.5):
    """A glue_runs.jsonl record as glue_table.py writes it (only the fields the reuse rule and render read)."""
    return {
        "task": "stsb",
        "method": method,
        "seed": seed,
        "backbone": "hf-flax",
        "hyperparameters": hyperparameters,
        "budget": {"epochs": 3, "batch_size": 32},
        "dev_metric": dev,
    }


def test_table_copies_only_runs_whose_config_is_unchanged(tmp_path, monkeypatch):
    fair = load_experiment("glue_fair")
    for row in (record("stsb", "bitfit", 3e-3, None, 80.0), record("stsb", "lora", 1e-2, 4.0, 84.0)):
        append_record(tmp_path / "glue_fair_sweep.jsonl", row)
    append_record(tmp_path / "glue_runs.jsonl", old_table_record("bitfit", 0, {"head_lr": 0.01, "lr": 0.003}))
    # the old LoRA run used lora_alpha 8; the fair pick is alpha 4, so it must be trained again
    lora_old = {"head_lr": 0.01, "lora_alpha": 8.0, "lr": 0.01, "r": 8}
    append_record(tmp_path / "glue_runs.jsonl", old_table_record("lora", 0, lora_old))
    # the first records carry no backbone: read without failing, never taken for a new run
    first = old_table_record("bitfit", 1, {"head_lr": 0.01, "lr": 0.003})
    append_record(tmp_path / "glue_runs.jsonl", {k: v for k, v in first.items() if k != "backbone"})
    trained = []

    def no_training(run, *args, **kwargs):
        trained.append((run.method, run.lora_alpha))
        raise RuntimeError("would train")

    monkeypatch.setattr(fair.glue_table, "load_classifier", lambda **kw: (None, None))
    monkeypatch.setattr(fair.glue_table, "load_task_data", lambda run, *a: None)
    monkeypatch.setattr(fair.glue_table, "load_tokenizer", lambda: "tokenizer")
    monkeypatch.setattr(fair.glue_table, "Trainer", lambda *a: None)
    monkeypatch.setattr(fair.glue_table, "train_run", no_training)
    fair.table(["bitfit"], [0], ["stsb"], tmp_path)
    copied = read_records(tmp_path / "glue_fair_runs.jsonl")
    assert [(r["method"], r["dev_metric"], r["reused_from"]) for r in copied] == [("bitfit", 71.5, "glue_runs.jsonl")]
    fair.table(["bitfit"], [0], ["stsb"], tmp_path)  # resumable: nothing appended twice
    assert len(read_records(tmp_path / "glue_fair_runs.jsonl")) == 1
    with pytest.raises(RuntimeError, match="would train"):
        fair.table(["lora"], [0], ["stsb"], tmp_path)
    assert trained == [("lora", 4.0)]


def test_table_refuses_methods_never_swept(tmp_path):
    fair = load_experiment("glue_fair")
    append_record(tmp_path / "glue_fair_sweep.jsonl", record("stsb", "bitfit", 3e-3, None, 80.0))
    with pytest.raises(SystemExit, match="glue_fair.py sweep --methods full"):
        fair.table(["bitfit", "full"], [0], ["stsb"], tmp_path)


def table_record(task, method, seed, dev, hyperparameters, reused=False):
    """A glue_fair_runs.jsonl record with the fields the table's render reads."""
    record = {
        **old_table_record(method, seed, hyperparameters, dev),
        "task": task,
        "trainable_params_without_head": {"fourierft": 12000, "lora": 147456}[method],
        "best_dev_metric": dev + 1,
        "wall_s": 100.0,
    }
    return {**record, "reused_from": "glue_runs.jsonl"} if reused else record


def test_render_states_per_task_points_reuse_and_the_gap(tmp_path):
    fair = load_experiment("glue_fair")
    fourier = {"stsb": {"lr": 0.4, "scaling": 35.0}, "sst2": {"lr": 1.0, "scaling": 12.0}}
    lora = {"lr": 0.01, "lora_alpha": 4.0, "r": 8}
    dev = {("stsb", "fourierft"): (80.0, 82.0), ("stsb", "lora"): (84.0, 83.0)}
    dev |= {("sst2", "fourierft"): (90.0, 91.0), ("sst2", "lora"): (89.0, 88.0)}
    for (task, method), values in dev.items():
        for seed, value in enumerate(values):
            hyper = fourier[task] if method == "fourierft" else lora
            row = table_record(task, method, seed, value, hyper, reused=method == "lora" and task == "sst2")
            append_record(tmp_path / "glue_fair_runs.jsonl", row)
    fair.render_table(tmp_path)
    text = (tmp_path / "glue_fair_table.md").read_text()
    assert "2 of 8 runs are copied from glue_runs.jsonl" in text
    assert 'fourierft sst2 {"lr": 1.0, "scaling": 12.0}, stsb {"lr": 0.4, "scaling": 35.0}' in text
    assert 'lora {"lora_alpha": 4.0, "lr": 0.01, "r": 8}' in text
    # medians: FourierFT (81 + 90.5) / 2 = 85.75, LoRA (83.5 + 88.5) / 2 = 86.0
    assert "FourierFT 2-task average minus LoRA's: -0.25 points." in text
    assert (tmp_path / "glue_fair_table.png").stat().st_size > 0
