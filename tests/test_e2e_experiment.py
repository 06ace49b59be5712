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


def test_e2e_runner_smoke(tmp_path):
    pytest.importorskip("gguf")
    e2e = load_experiment("e2e")
    if not (e2e.DATA / "devset.csv").is_file():
        pytest.skip("E2E data not found")
    args = ["--smoke", "--results", str(tmp_path), "--rows", "zero-shot,fourierft-n1000", "--seeds", "0"]
    e2e.main([*args[:-4], "--sweep", "--rows", "fourierft-n1000"])
    sweep = [json.loads(line) for line in (tmp_path / "e2e_sweep.jsonl").read_text().splitlines()]
    assert [(r["row"], r["rate"], r["knob"]) for r in sweep] == [("fourierft-n1000", 3e-3, 25.0)]
    trace = sweep[0]["selection_trace"]  # step 0, then every step (the smoke run evaluates each of its 2)
    assert [step for step, _ in trace] == [0, 1, 2]
    assert min(loss for _, loss in trace) == sweep[0]["selection_loss"]
    assert dict(trace)[sweep[0]["best_step"]] == sweep[0]["selection_loss"]
    e2e.main(args)
    runs = [json.loads(line) for line in (tmp_path / "e2e_runs.jsonl").read_text().splitlines()]
    assert [(r["row"], r["seed"]) for r in runs] == [("zero-shot", 0), ("fourierft-n1000", 0)]
    trained = runs[1]
    assert trained["trainable_params"] == 2 * 2 * 1000  # q and v of 2 layers, n = 1000
    assert set(trained["test"]) == {"BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr"}
    assert not trained["outputs"].startswith("/")
    assert len((tmp_path / "e2e_outputs" / "fourierft-n1000-seed0.txt").read_text().splitlines()) == 3
    e2e.main(args)  # resumes: nothing left to do
    assert len((tmp_path / "e2e_runs.jsonl").read_text().splitlines()) == 2
