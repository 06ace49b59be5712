"""experiments/paper/e2e_table.py on synthetic runs (cells, paired differences with Holm, the goal, examples), and
which sweep chooses each E2E row's point."""

from __future__ import annotations

import re

import numpy as np
from experiment_scripts import EXPERIMENTS, load_experiment
from scipy import stats

from fourier_flax.finetune.records import append_record, read_records

BLEU = {  # official scale (0-1), per row and seed
    "fourierft-n500": [0.600, 0.610, 0.580],
    "lora-r4": [0.620, 0.605, 0.600],
    "fourierft-n1000": [0.640, 0.630, 0.650],
}


def run(row, seed, bleu, tmp_path):
    outputs = tmp_path / f"{row}-seed{seed}.txt"
    outputs.write_text("\n".join(f"{row} says {i}" for i in range(7)) + "\n")
    test = {"BLEU": bleu, "NIST": 8.0 + bleu, "METEOR": bleu / 2, "ROUGE_L": 0.7, "CIDEr": 2.0}
    return {
        "row": row, "method": row.split("-")[0], "seed": seed, "base": "float", "test": test, "rate": 1e-2,
        "knob_name": "scaling", "knob": 50.0, "trainable_params": 30000, "steps": 300, "outputs": outputs.name,
        "wall_s": 1800.0, "decoding": {"num_beams": 10},
    }  # fmt: skip


def test_the_table_pairs_by_seed_and_holm_adjusts_the_family(tmp_path):
    table = load_experiment("e2e_table")
    for row, values in BLEU.items():
        for seed, bleu in enumerate(values):
            append_record(tmp_path / "e2e_runs.jsonl", run(row, seed, bleu, tmp_path))
    append_record(tmp_path / "e2e_runs.jsonl", run("lora-r8", 0, 0.6, tmp_path))  # one pair with n1000: no p
    point = {"row": "lora-r4", "rate": 1e-3, "knob": 8.0, "steps": 300, "selection_loss": 1.5, "best_step": 300}
    append_record(tmp_path / "e2e_sweep.jsonl", {**point, "wall_s": 3600.0})
    refs = [(f"name[R{i}]", f"reference {i}") for i in range(7)]
    text = table.render(tmp_path, refs, repo=tmp_path)
    assert "| fourierft-n500 | float | 30,000 | 0.01 | scaling 50 | 60.0 [58.0, 61.0] (n=3) |" in text
    # independent: paired t-tests of x100 BLEU and METEOR for the three comparisons the rows allow, then Holm
    pairs = [("fourierft-n500", "lora-r4"), ("fourierft-n1000", "lora-r4")]
    p = {}
    for ours, theirs in pairs:
        for metric, scale in (("BLEU", 100), ("METEOR", 50)):
            a, b = scale * np.array(BLEU[ours]), scale * np.array(BLEU[theirs])
            p[(ours, metric)] = stats.ttest_rel(a, b).pvalue
    order = sorted(p, key=p.get)
    holm, running = {}, 0.0
    for rank, key in enumerate(order):
        running = max(running, min(1.0, (len(order) - rank) * p[key]))
        holm[key] = running
    mean = 100 * np.mean(np.subtract(BLEU["fourierft-n500"], BLEU["lora-r4"]))
    half = stats.t.isf(0.025, 2) * 100 * stats.sem(np.subtract(BLEU["fourierft-n500"], BLEU["lora-r4"]))
    line = f"| fourierft-n500 | lora-r4 | BLEU | {mean:+.2f} [{mean - half:+.2f}, {mean + half:+.2f}] (3 pairs) |"
    assert line + f" {p[('fourierft-n500', 'BLEU')]:.2g} | {holm[('fourierft-n500', 'BLEU')]:.2g} |" in text
    assert f"over these {len(p)} comparisons (2 more with one pair have no p yet)." in text
    assert "| fourierft-n1000 | lora-r8 | BLEU | +4.00 (1 pair) | - | - |" in text
    # BLEU: -1.17 points (not within 1); METEOR is half of it: -0.58 (within)
    assert "BLEU -1.17 (not within 1 point); METEOR -0.58 (within 1 point)" in text
    assert "**MR 6**: name[R6]" in text and "- fourierft-n1000: fourierft-n1000 says 6" in text
    assert "10 table runs, 5.0 h; 1 sweep points, 1.0 h" in text
    assert "every trained row and sweep point: 300 AdamW steps of batch 8" in text
    assert "Not a row: full fine-tuning" in text
    assert (tmp_path / "e2e_table.png").stat().st_size > 0
    assert (tmp_path / "e2e_sweep.png").stat().st_size > 0  # the one lora-r4 point


def test_output_lengths_are_mean_words_per_line_by_row_and_seed(tmp_path):
    table = load_experiment("e2e_table")
    records = []
    for seed, words in enumerate([(1, 2), (4, 5)]):  # seed 0: lines of 1 and 2 words; seed 1: 4 and 5
        record = run("lora-r4", seed, 0.5, tmp_path)
        (tmp_path / record["outputs"]).write_text("\n".join(" ".join(["w"] * n) for n in words) + "\n")
        records.append(record)
    missing = {**run("fourierft-n500", 1, 0.5, tmp_path), "outputs": "not-there.txt"}
    with_missing = records + [missing]
    lines = table.length_lines(with_missing, table.run_outputs(with_missing, tmp_path), [("mr", "a b c"), ("mr", "a")])
    assert "| row | seed 0 | seed 1 |" in lines
    assert "| lora-r4 | 1.5 | 4.5 |" in lines
    assert not any(line.startswith("| fourierft-n500") for line in lines)  # its outputs file is absent
    assert "The first references: 2.0 words." in lines
    assert not any("correlation" in line for line in lines)  # two trained runs: too few to correlate
    records.append(run("lora-r4", 2, 0.5, tmp_path))  # the helper's outputs: 3 words per line
    words = [1.5, 4.5, 3.0]
    metrics = {"BLEU": [0.2, 0.1, 0.3], "NIST": [7.0, 8.0, 9.0], "METEOR": [1.0, 3.0, 2.0],
               "ROUGE_L": [5.0, 4.0, 3.0], "CIDEr": [0.0, 1.0, 0.0]}  # fmt: skip
    for k, record in enumerate(records):
        record.update({metric: values[k] for metric, values in metrics.items()})
    line = table.length_lines(records, table.run_outputs(records, tmp_path), [])[-1]
    expected = ", ".join(f"{m} {np.corrcoef(words, v)[0, 1]:+.2f}" for m, v in metrics.items())
    assert line == f"Pearson correlation of mean words with each metric over the 3 trained float-base runs: {expected}."
    records[2]["CIDEr"] = records[0]["CIDEr"] = 1.0  # a constant metric: r is undefined, shown as "-"
    line = table.length_lines(records, table.run_outputs(records, tmp_path), [])[-1]
    expected = expected.rsplit(", CIDEr", 1)[0] + ", CIDEr -"
    assert line == f"Pearson correlation of mean words with each metric over the 3 trained float-base runs: {expected}."


def test_four_bit_rows_train_at_their_float_twins_chosen_point(tmp_path):
    import argparse

    e2e = load_experiment("e2e")
    rows = e2e.table_rows()
    exp = argparse.Namespace(args=argparse.Namespace(results=tmp_path, steps=300, smoke=False, reach=2))
    twin = rows["fourierft-n500"]
    points = [(rate, knob) for rate in twin.rates for knob in twin.knob_values]
    for k, (rate, knob) in enumerate(points):
        loss = 1.5 if (rate, knob) == (1e-2, 50.0) else 2.0 + k / 100
        record = {"row": "fourierft-n500", "rate": rate, "knob": knob, "steps": 300, "selection_loss": loss}
        append_record(tmp_path / "e2e_sweep.jsonl", record)
        if k == len(points) - 2:  # one point short: no choice yet, for the twin or the 4-bit row
            assert e2e.chosen_point(exp, "fourierft-n500-4bit", rows["fourierft-n500-4bit"]) is None
    assert e2e.chosen_point(exp, "fourierft-n500", twin) == (1e-2, 50.0)
    assert e2e.chosen_point(exp, "fourierft-n500-4bit", rows["fourierft-n500-4bit"]) == (1e-2, 50.0)
    assert e2e.chosen_point(exp, "lora-r4-4bit", rows["lora-r4-4bit"]) is None  # its twin lora-r4 is not swept


def sweep_point(rate, knob, loss, trace=True):
    record = {"row": "fourierft-n1000", "rate": rate, "knob": knob, "steps": 300, "selection_loss": loss,
              "best_step": 250, "wall_s": 1000.0}  # fmt: skip
    if trace:
        record["selection_trace"] = [[0, 3.0], [250, loss], [300, loss + 0.01]]
    return record


def test_the_sweep_section_marks_the_chosen_point_once_the_walk_ends():
    table = load_experiment("e2e_table")
    grid = [(rate, knob) for rate in (3e-3, 1e-2, 3e-2) for knob in (25.0, 50.0, 100.0)]
    losses = {point: 2.0 + k / 100 for k, point in enumerate(grid)}
    losses[(1e-2, 50.0)] = 1.4  # the interior point is best: its neighbourhood is the grid, the sweep is done
    points = [sweep_point(*point, losses[point], trace=k > 0) for k, point in enumerate(grid)]
    partial = "\n".join(table.sweep_lines(points[:8]))
    assert "8 of 9 points so far" in partial and "| yes" not in partial
    text = "\n".join(table.sweep_lines(points))
    assert "**fourierft-n1000** (complete; 9 points run" in text
    assert "| 0.01 | 50 | 0: 3.000, 250: 1.400, 300: 1.410 | 1.400 (250) | 1000 | yes |" in text
    assert "| 0.003 | 25 | - | 2.000 (250) | 1000 |  |" in text  # a point recorded without its trace
    losses[(3e-2, 100.0)] = 1.3  # now a corner is best: its 5 neighbours outside the grid come next
    points = [sweep_point(*point, losses[point]) for point in grid]
    text = "\n".join(table.sweep_lines(points))
    assert "9 of 14 points so far" in text and "| yes" not in text
    walk = [(1e-2, 200.0), (3e-2, 200.0), (0.09, 50.0), (0.09, 100.0), (0.09, 200.0)]
    points += [sweep_point(*point, 1.2 if point == (0.09, 200.0) else 1.9) for point in walk]
    text = "\n".join(table.sweep_lines(points))  # the best moved to (0.09, 200): its new neighbours next
    assert "14 of 19 points so far" in text and "| yes" not in text
    beyond = [(0.03, 400.0), (0.09, 400.0), (0.27, 100.0), (0.27, 200.0), (0.27, 400.0)]
    text = "\n".join(table.sweep_lines(points + [sweep_point(*point, 1.9) for point in beyond]))
    assert "**fourierft-n1000** (complete; 19 points run, rate 0.003, 0.01, 0.03, 0.09, 0.27 × scaling" in text
    assert "| 0.09 | 200 | 0: 3.000, 250: 1.200, 300: 1.210 | 1.200 (250) | 1000 | yes |" in text
    at_reach = [sweep_point(*point, 1.1 if point == (0.27, 400.0) else 1.9) for point in beyond]
    text = "\n".join(table.sweep_lines(points + at_reach))  # 0.27 and 400 are 2 values past the grid's ends
    assert "| 0.27 | 400 | 0: 3.000, 250: 1.100, 300: 1.110 | 1.100 (250) | 1000 | yes, at the sweep's reach |" in text


def test_the_sweep_walks_from_the_grid_to_a_point_better_than_its_neighbours(tmp_path):
    """The sweep loop against a stub trainer whose loss is lowest at rate 0.09, scaling 50: the 3 x 3 grid (best
    (0.03, 50)), then rate 0.09 x 25, 50, 100 (= 0.03 x 0.03 / 0.01), then the neighbours of (0.09, 50) at rate
    0.27; all worse, so the walk ends there. The table's chosen point waits for the walk."""
    import argparse
    import math

    e2e = load_experiment("e2e")
    row = e2e.table_rows()["fourierft-n500"]
    ran = []

    def loss_at(rate, knob):
        return 2.0 + abs(math.log(rate / 0.09)) - (0.1 if knob == 50.0 else 0.0)

    exp = argparse.Namespace(args=argparse.Namespace(results=tmp_path, steps=300, smoke=False, reach=2))

    def train_point(name, row, rate, knob, seed, *, role, trainer=None):
        ran.append((rate, knob))
        if len(ran) == 10:  # the first point past the grid: the table must not choose before the walk ends
            assert e2e.chosen_point(exp, "fourierft-n500", row) is None
        trace = [[0, 3.0], [300, loss_at(rate, knob)]]
        return e2e.Point("trainer", loss_at(rate, knob), 300, None, trace, 0.0, role)

    exp.train_point, exp.forget = train_point, lambda *args, **kw: None
    e2e.sweep(exp, ["fourierft-n500"])
    base = [(rate, knob) for rate in (3e-3, 1e-2, 3e-2) for knob in (25.0, 50.0, 100.0)]
    assert ran == base + [(0.09, 25.0), (0.09, 50.0), (0.09, 100.0), (0.27, 25.0), (0.27, 50.0), (0.27, 100.0)]
    assert e2e.chosen_point(exp, "fourierft-n500", row) == (0.09, 50.0)
    assert not e2e.at_reach(row, (0.09, 50.0)) and e2e.at_reach(row, (0.27, 50.0))
    assert e2e.chosen_point(exp, "fourierft-n500-4bit", e2e.table_rows()["fourierft-n500-4bit"]) == (0.09, 50.0)
    e2e.sweep(exp, ["fourierft-n500"])  # resumes: nothing left
    assert len(ran) == 15


def test_the_walk_stops_at_the_sweep_s_reach():
    """A loss that keeps falling with the rate: the walk goes 2 values past the grid's top rate and stops."""
    e2e = load_experiment("e2e")
    row = e2e.table_rows()["lora-r4"]
    losses = {}
    while missing := [p for p in e2e.sweep_points(row, losses) if p not in losses]:
        losses.update({(rate, alpha): 1.0 - rate - alpha / 1000 for rate, alpha in missing})
    assert min(losses, key=losses.get) == (0.027, 64.0)  # 3e-3 x 3 x 3 and alpha 16 x 2 x 2: both reaches
    assert e2e.at_reach(row, (0.027, 64.0))
    assert len(losses) == 9 + 5 + 5  # the grid, then two corner steps of 5 new neighbours each


def test_the_reach_sets_how_far_past_the_grid_the_walk_may_go():
    """The loss of the test above under reach 3 (one more step: rate 0.027 x 3, alpha 64 x 2) and reach 0 (the
    grid alone); a point at the table's reach is inside a longer one."""
    e2e = load_experiment("e2e")
    row = e2e.table_rows()["lora-r4"]
    for reach, best, runs in ((3, (0.081, 128.0), 9 + 5 + 5 + 5), (0, (3e-3, 16.0), 9)):
        losses = {}
        while missing := [p for p in e2e.sweep_points(row, losses, reach) if p not in losses]:
            losses.update({(rate, alpha): 1.0 - rate - alpha / 1000 for rate, alpha in missing})
        assert (min(losses, key=losses.get), len(losses)) == (best, runs)
        assert e2e.at_reach(row, best, reach) and e2e.sweep_choice(row, losses, reach) == best
    assert e2e.at_reach(row, (0.027, 64.0)) and not e2e.at_reach(row, (0.027, 64.0), reach=3)


README = EXPERIMENTS.parent / "README.md"


def committed_records() -> list[dict]:
    """The committed e2e_runs.jsonl, one flat record per table run, as e2e_table.py reads it."""
    return load_experiment("e2e_table").flat_records(read_records(EXPERIMENTS / "results" / "e2e_runs.jsonl"))


def readme_e2e_entry() -> str:
    """The README's E2E results entry (its bullet up to the next bullet or heading), whitespace collapsed."""
    lines = README.read_text().splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("- E2E (`experiments/paper/e2e.py`"))
    end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith(("- ", "#"))), len(lines))
    return " ".join(" ".join(lines[start:end]).split())


def readme_e2e_rows() -> dict[str, tuple[str, list[str]]]:
    """The README's E2E results table: row id -> (its label, [params, BLEU, NIST, METEOR, ROUGE-L, CIDEr])."""
    readme = README.read_text().splitlines()
    start = readme.index("  | row | trainable params | BLEU | NIST | METEOR | ROUGE-L | CIDEr |")
    rows = {}
    for line in readme[start + 2 :]:
        if not line.strip():
            break
        label, *cells = [c.strip() for c in line.strip().strip("|").split("|")]
        named = re.match(r"(zero-shot|VeRA|FourierFT n = (\d+)|LoRA r = (\d+))", label)
        assert named, f"README E2E row {label!r} names no table row"
        row = {"zero-shot": "zero-shot", "VeRA": "vera"}.get(named[1]) or (
            f"fourierft-n{named[2]}" if named[2] else f"lora-r{named[3]}"
        )
        rows[row] = (label, cells)
    return rows


def test_the_readme_e2e_table_quotes_the_committed_runs():
    """Every row of the README's E2E table carries the cells e2e_table.py computes from the committed
    e2e_runs.jsonl, and the rate and knob of its label are the row's chosen point."""
    computed = {}
    for line in load_experiment("e2e_table").table_lines(committed_records())[2:]:
        row, base, params, rate, knob, *cells = [c.strip() for c in line.strip("|").split("|")]
        if base == "float":
            computed[row] = (rate, knob, [params] + [re.sub(r" \(n=\d+\)$", "", c) for c in cells])
    quoted = readme_e2e_rows()
    assert {"zero-shot", "fourierft-n500", "lora-r4"} <= quoted.keys()
    for row, (label, cells) in quoted.items():
        rate, knob, expected = computed[row]
        assert [c.replace("−", "-") for c in cells] == expected, row
        if row != "zero-shot":
            stated = re.search(r"rate ([\d.e-]+), (?:scaling|alpha|d_initial) ([\d.]+)", label)
            assert stated, label
            assert float(stated[1]) == float(rate) and float(stated[2]) == float(knob.split()[-1]), (label, rate, knob)


def test_the_readme_e2e_paired_differences_are_the_computed_ones():
    """Every "difference METRIC [low, high] (p = P, Holm H" the README's E2E entry quotes is a paired difference,
    p and Holm-adjusted p that e2e_table.py computes from the committed e2e_runs.jsonl, no difference is quoted
    without its p values, and the family size it states is the computed one."""
    computed = "\n".join(load_experiment("e2e_table").comparison_lines(committed_records()))
    entry = readme_e2e_entry()
    number = r"[+−]\d+\.\d\d"
    quoted = re.findall(rf"({number}) (BLEU|METEOR) \[({number}), ({number})\]", entry)
    with_p = re.findall(
        rf"({number}) (BLEU|METEOR) \[({number}), ({number})\] \((?:paired t )?p = ([\d.e-]+), Holm ([\d.e-]+)",
        entry,
    )
    assert len(quoted) >= 4 and len(with_p) == len(quoted), "a quoted difference lacks its (p = ..., Holm ...)"
    for diff, metric, low, high, p, holm in with_p:
        interval = re.escape(f"{diff} [{low}, {high}]".replace("−", "-"))
        cell = rf"\| {metric} \| {interval} \(\d+ pairs\) \| {re.escape(p)} \| {re.escape(holm)} \|"
        assert re.search(cell, computed), cell
    family = re.search(r"over these (\d+) comparisons", computed)[1]
    stated = re.findall(r"over the table's (\d+) comparisons", entry)
    assert stated and set(stated) == {family}, (stated, family)


def test_the_readme_e2e_length_correlations_are_the_computed_ones():
    """The README's correlations of output length with the metrics are the ones e2e_table.py computes from the
    committed runs and their committed output files."""
    table, records = load_experiment("e2e_table"), committed_records()
    computed = table.length_lines(records, table.run_outputs(records, EXPERIMENTS.parent), [])[-1]
    signed = r"([+−]\d\.\d\d)"
    quoted = re.search(
        rf"over the (\d+) trained float-base runs NIST follows output length \(Pearson r {signed}; METEOR {signed}, "
        rf"BLEU {signed}, ROUGE-L {signed}\)",
        readme_e2e_entry(),
    )
    assert quoted, "the README's E2E entry no longer quotes the length correlations this test reads"
    runs, nist, meteor, bleu, rouge = [g.replace("−", "-") for g in quoted.groups()]
    assert f"over the {runs} trained float-base runs:" in computed, computed
    for metric, value in (("NIST", nist), ("METEOR", meteor), ("BLEU", bleu), ("ROUGE_L", rouge)):
        assert f"{metric} {value}" in computed, (metric, value, computed)
