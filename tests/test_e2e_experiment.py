"""experiments/paper/e2e.py end to end at a tiny size (2 real layers, 6 training MRs, 2 steps, 3 test MRs): the sweep
records its point, the table run picks it, trains, decodes, scores with the official metrics and records a
resumable line with repository-relative paths; a rerun does nothing."""

from __future__ import annotations

import json
import shutil

import pytest
from experiment_scripts import load_experiment

pytestmark = [
    pytest.mark.skipif(shutil.which("java") is None, reason="the E2E metrics need java"),
    pytest.mark.torch,
]


def test_e2e_runner_smoke(tmp_path, monkeypatch, capsys):
    pytest.importorskip("gguf")
    e2e = load_experiment("e2e")
    if not (e2e.DATA / "devset.csv").is_file():
        pytest.skip("E2E data not found")
    from fourier_flax.finetune.causal_lm import CausalLMTrainer

    state = tmp_path / "state"
    args = ["--smoke", "--results", str(tmp_path), "--state-dir", str(state), "--rows", "zero-shot,fourierft-n1000"]
    steps_run = []
    real_step = CausalLMTrainer.step

    def step(trainer, batch, kill_at=None):
        if trainer.steps_taken == kill_at:
            raise KeyboardInterrupt("killed")
        steps_run.append(trainer.steps_taken)
        return real_step(trainer, batch)

    # the sweep point is killed before its second step: its state after step 1 is on disk, and the rerun resumes
    monkeypatch.setattr(CausalLMTrainer, "step", lambda trainer, batch: step(trainer, batch, kill_at=1))
    with pytest.raises(KeyboardInterrupt):
        e2e.main([*args[:-2], "--sweep", "--rows", "fourierft-n1000"])
    assert [p.name for p in state.iterdir()] == ["fourierft-n1000-rate0.003-knob25-seed0-steps2-every1"]
    monkeypatch.setattr(CausalLMTrainer, "step", step)
    e2e.main([*args[:-2], "--sweep", "--rows", "fourierft-n1000"])
    assert steps_run == [0, 1] and "resumed at step 1" in capsys.readouterr().out
    sweep = [json.loads(line) for line in (tmp_path / "e2e_sweep.jsonl").read_text().splitlines()]
    assert [(r["row"], r["rate"], r["knob"]) for r in sweep] == [("fourierft-n1000", 3e-3, 25.0)]
    trace = sweep[0]["selection_trace"]  # step 0, then every step (the smoke run evaluates each of its 2)
    assert [step for step, _ in trace] == [0, 1, 2]
    assert min(loss for _, loss in trace) == sweep[0]["selection_loss"]
    assert dict(trace)[sweep[0]["best_step"]] == sweep[0]["selection_loss"]
    # the sweep's chosen point keeps its state: the table's seed-0 run decodes that adapter, training nothing
    assert [p.name for p in state.iterdir()] == ["fourierft-n1000-rate0.003-knob25-seed0-steps2-every1"]
    steps_run.clear()
    e2e.main([*args, "--seeds", "0"])
    assert steps_run == [] and list(state.iterdir()) == []
    # seed 1 is killed while decoding: the rerun decodes its saved best adapter without training again
    real_decode = e2e.Experiment.decode_test
    monkeypatch.setattr(e2e.Experiment, "decode_test", lambda exp, model: (_ for _ in ()).throw(KeyboardInterrupt))
    with pytest.raises(KeyboardInterrupt):
        e2e.main([*args[:-1], "fourierft-n1000", "--seeds", "1"])
    assert steps_run == [0, 1]
    monkeypatch.setattr(e2e.Experiment, "decode_test", real_decode)
    e2e.main([*args[:-1], "fourierft-n1000", "--seeds", "1"])
    assert steps_run == [0, 1] and list(state.iterdir()) == []
    runs = [json.loads(line) for line in (tmp_path / "e2e_runs.jsonl").read_text().splitlines()]
    assert [(r["row"], r["seed"]) for r in runs] == [("zero-shot", 0), ("fourierft-n1000", 0), ("fourierft-n1000", 1)]
    reused, trained = runs[1], runs[2]
    assert reused["reused_from"] == "e2e_sweep.jsonl" and "reused_from" not in trained
    assert reused["selection_trace"] == sweep[0]["selection_trace"]  # the sweep's own run
    assert [step for step, _ in trained["selection_trace"]] == [0, 1, 2]  # kept from the killed process
    assert trained["trainable_params"] == 2 * 2 * 1000  # q and v of 2 layers, n = 1000
    assert set(trained["test"]) == {"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"}
    assert not trained["outputs"].startswith("/")
    assert len((tmp_path / "e2e_outputs" / "fourierft-n1000-seed1.txt").read_text().splitlines()) == 3
    e2e.main([*args, "--seeds", "0,1"])  # resumes: nothing left to do
    assert len((tmp_path / "e2e_runs.jsonl").read_text().splitlines()) == 3


def test_every_method_row_sweeps_and_runs_at_smoke_size(tmp_path):
    """Each method's row trains its first grid point with its own knob (LoRA's traced alpha / r, VeRA's config
    field), and its table run, as the 4-bit LoRA row's at its float twin's point, trains, decodes and scores: the
    runs of one row cannot break the others hours into the table."""
    pytest.importorskip("gguf")
    e2e = load_experiment("e2e")
    if not (e2e.DATA / "devset.csv").is_file():
        pytest.skip("E2E data not found")
    args = ["--smoke", "--results", str(tmp_path), "--state-dir", str(tmp_path / "state")]
    e2e.main([*args, "--sweep", "--rows", "lora-r4,vera"])
    sweep = [json.loads(line) for line in (tmp_path / "e2e_sweep.jsonl").read_text().splitlines()]
    assert [(r["row"], r["knob_name"], r["knob"]) for r in sweep] == [
        ("lora-r4", "lora_alpha", 4.0),
        ("vera", "d_initial", 0.05),
    ]
    assert all(r["selection_loss"] < r["selection_trace"][0][1] for r in sweep)  # both trained
    e2e.main([*args, "--rows", "lora-r4-4bit,vera", "--seeds", "1"])
    runs = [json.loads(line) for line in (tmp_path / "e2e_runs.jsonl").read_text().splitlines()]
    assert [(r["row"], r["base"], r["knob"]) for r in runs] == [("lora-r4-4bit", "4bit", 4.0), ("vera", "float", 0.05)]
    assert runs[0]["trainable_params"] == 2 * 4 * (576 + 576) + 2 * 4 * (576 + 192)  # q, v of 2 layers, r = 4
    assert all(set(r["test"]) == {"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"} for r in runs)


def test_the_run_all_script_names_only_known_rows():
    import re
    import subprocess

    e2e = load_experiment("e2e")
    script = e2e.REPO / "experiments" / "paper" / "e2e_all.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    named = {row for arg in re.findall(r"--rows (\S+)", text) for row in arg.strip('"').split(",")}
    named.discard("$1")
    swept = set(re.findall(r"^swept (\S+)$", text, re.MULTILINE))  # a sweep, then its seed-0 run at once
    assert swept | named == set(e2e.table_rows())  # every row of the table, each a known one
    assert swept == {name for name, row in e2e.table_rows().items() if row.config and not row.sweep_row}


def test_the_reach_probe_script_walks_a_known_row_past_the_table_s_reach_in_its_own_results():
    import re
    import subprocess

    e2e = load_experiment("e2e")
    script = e2e.REPO / "experiments" / "paper" / "e2e_reach.sh"
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0
    text = script.read_text()
    assert set(re.findall(r"--rows (\S+)", text)) <= set(e2e.table_rows())
    assert int(re.search(r"--reach (\d+)", text)[1]) > e2e.REACH
    results = re.search(r"--results (\S+)", text)[1]
    assert results != "experiments/results" and results.startswith("experiments/results/")
