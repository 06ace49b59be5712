"""experiments/glue_fair.py: which grid point each task gets, from synthetic sweep records."""

from __future__ import annotations

from experiment_scripts import load_experiment

from fourier_flax.finetune.records import append_record


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
