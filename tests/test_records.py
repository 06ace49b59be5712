"""Append-only JSONL run records survive a torn last line and let a rerun skip finished runs."""

import json

from fourier_flax.finetune.records import append_record, finished_keys, read_records


def test_append_read_and_skip(tmp_path):
    path = tmp_path / "runs.jsonl"
    assert read_records(path) == [] and finished_keys(path, ("task",)) == set()
    append_record(path, {"task": "mrpc", "seed": 0, "dev_metric": 81.5})
    append_record(path, {"task": "rte", "seed": 1, "dev_metric": 60.0})
    assert [r["task"] for r in read_records(path)] == ["mrpc", "rte"]
    assert finished_keys(path, ("task", "seed")) == {("mrpc", 0), ("rte", 1)}


def test_torn_last_line_is_skipped_and_the_next_append_starts_fresh(tmp_path):
    path = tmp_path / "runs.jsonl"
    append_record(path, {"task": "mrpc", "seed": 0})
    with open(path, "a") as file:  # a writer killed mid-line
        file.write(json.dumps({"task": "cola", "seed": 0})[:12])
    assert finished_keys(path, ("task", "seed")) == {("mrpc", 0)}
    append_record(path, {"task": "cola", "seed": 0})
    assert finished_keys(path, ("task", "seed")) == {("mrpc", 0), ("cola", 0)}
    assert len(path.read_text().splitlines()) == 3


def test_committed_records_hold_no_machine_paths():
    """Results must rebuild on a fresh clone: no record names an absolute path of the machine that ran it."""
    import json
    import pathlib

    results = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "results"
    absolute = [
        f"{path.name}:{number}"
        for path in sorted(results.glob("*.jsonl"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if any(isinstance(v, str) and v.startswith("/") for v in json.loads(line).values())
    ]
    assert absolute == []
