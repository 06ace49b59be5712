"""The E2E table (the paper's Table 3 on SmolLM2-135M-Instruct) from the runs of ``experiments/paper/e2e.py``.

Command (reads e2e_runs.jsonl, e2e_sweep.jsonl and the test outputs they name; writes e2e_table.md, .png and
e2e_sweep.png)::

    .venv/bin/python experiments/paper/e2e_table.py

What it shows:

* per row, the five official test metrics as median [min, max] over seeds (BLEU, METEOR and ROUGE-L x100 and
  NIST, CIDEr as they come, the way the paper's Table 3 prints them), the trainable parameters, the chosen rate and
  scaling knob, the selection loss;
* FourierFT against LoRA and VeRA paired by seed (one seed = one initialisation and data order per row): the mean
  difference on BLEU and METEOR with its paired-t interval and p-value, Holm-adjusted over every comparison and
  metric of that family; the issue's goal (FourierFT n = 500 within 1 point of LoRA r = 4 on BLEU and METEOR)
  read off the same differences;
* the 4-bit base against the float base for FourierFT and LoRA, paired by seed;
* five test MRs (evenly spaced through the test set) with the first reference and every row's seed-0 output;
* the mean length of every run's test outputs (words), beside the first references';
* each swept row's grid: every point's selection loss by step, its best, the chosen point (once the grid is
  complete) and whether it lies on the grid's edge; e2e_sweep.png draws every row's points on log rate × log knob
  axes, coloured and labelled by selection loss;
* the compute: wall time of the table runs and of the sweeps.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # experiments/: experiment_paths
from experiment_paths import REPO, RESULTS  # noqa: E402

# isort: split
import e2e  # noqa: E402  (experiments/paper/e2e.py: the rows and their grids)

from fourier_flax.data.e2e_metrics import read_outputs  # noqa: E402
from fourier_flax.data.metrics import pearson  # noqa: E402
from fourier_flax.finetune.compare import PairedDifference, holm_adjust, metric_by_seed, paired_by_seed  # noqa: E402
from fourier_flax.finetune.records import read_records  # noqa: E402

ROW_ORDER = (
    "zero-shot",
    "fourierft-n500",
    "fourierft-n1000",
    "lora-r4",
    "lora-r8",
    "vera",
    "fourierft-n500-4bit",
    "lora-r4-4bit",
)
METRICS = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")
PERCENT = ("BLEU", "METEOR", "ROUGE_L")  # printed x100, as the paper's Table 3 prints them
# FourierFT against its baselines: the family the Holm adjustment covers (with COMPARED_METRICS).
COMPARISONS = (
    ("fourierft-n500", "lora-r4"),
    ("fourierft-n1000", "lora-r4"),
    ("fourierft-n1000", "lora-r8"),
    ("fourierft-n1000", "vera"),
)
COMPARED_METRICS = ("BLEU", "METEOR")
GOAL = ("fourierft-n500", "lora-r4", 1.0)  # within 1 point (x100) on BLEU and METEOR
EXAMPLES = 5


def shown(metric: str, value: float) -> float:
    """A metric on the table's scale (x100 for BLEU, METEOR, ROUGE-L)."""
    return 100 * value if metric in PERCENT else value


def flat_records(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One record per run with each test metric, on the table's scale, as a top-level field."""
    return [{**r, **{m: shown(m, r["test"][m]) for m in METRICS}} for r in runs]


def _cell(values: Sequence[float], metric: str) -> str:
    digits = 2 if metric in ("NIST", "CIDEr") else 1
    if len(values) == 1:
        return f"{values[0]:.{digits}f} (n=1)"
    return f"{np.median(values):.{digits}f} [{min(values):.{digits}f}, {max(values):.{digits}f}] (n={len(values)})"


def _interval(diff: PairedDifference) -> str:
    if diff.pairs < 2:
        return f"{diff.mean:+.2f} (1 pair)"
    half = diff.half_width()
    return f"{diff.mean:+.2f} [{diff.mean - half:+.2f}, {diff.mean + half:+.2f}] ({diff.pairs} pairs)"


def table_lines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The main table: one line per row present, in :data:`ROW_ORDER`."""
    lines = [
        "| row | base | trainable params | rate | knob | " + " | ".join(METRICS) + " |",
        "|---" * (5 + len(METRICS)) + "|",
    ]
    for row in [r for r in ROW_ORDER if any(x["row"] == r for x in records)]:
        runs = [x for x in records if x["row"] == row]
        first = runs[0]
        knob = f"{first['knob_name']} {first['knob']:g}" if "knob" in first else "-"
        rate = f"{first['rate']:g}" if "rate" in first else "-"
        cells = [_cell([x[m] for x in runs], m) for m in METRICS]
        lines.append(
            f"| {row} | {first['base']} | {first['trainable_params']:,d} | {rate} | {knob} | "
            + " | ".join(cells)
            + " |"
        )
    return lines


def comparison_lines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """FourierFT minus each baseline, paired by seed, Holm-adjusted over the family; then the goal."""
    family = []
    for ours, theirs in COMPARISONS:
        for metric in COMPARED_METRICS:
            diff = paired_by_seed(
                metric_by_seed(records, metric, row=ours), metric_by_seed(records, metric, row=theirs)
            )
            if diff is not None:
                family.append((ours, theirs, metric, diff))
    if not family:
        return []
    adjusted = holm_adjust([d.p_value for *_, d in family])
    tested = sum(not np.isnan(d.p_value) for *_, d in family)  # Holm's family: a single pair has no p yet
    untested = len(family) - tested
    lines = [
        "",
        "FourierFT minus its baselines, paired by seed: mean difference (points, the table's scale) with its paired-t "
        "95% interval,",
        f"the paired t-test p and the same p Holm-adjusted over these {tested} comparisons"
        + (f" ({untested} more with one pair have no p yet)." if untested else "."),
        "",
        "| FourierFT row | minus | metric | difference [95% interval] | p | p (Holm) |",
        "|---|---|---|---|---|---|",
    ]
    for (ours, theirs, metric, diff), p_holm in zip(family, adjusted, strict=True):
        p = "-" if np.isnan(diff.p_value) else f"{diff.p_value:.2g}"
        holm = "-" if np.isnan(p_holm) else f"{p_holm:.2g}"
        lines.append(f"| {ours} | {theirs} | {metric} | {_interval(diff)} | {p} | {holm} |")
    ours, theirs, margin = GOAL
    verdicts = []
    for metric in COMPARED_METRICS:
        diff = next((d for o, t, m, d in family if (o, t, m) == (ours, theirs, metric)), None)
        if diff is not None:
            within = "within" if diff.mean >= -margin else "not within"
            verdicts.append(f"{metric} {diff.mean:+.2f} ({within} {margin:g} point)")
    if verdicts:
        lines += [
            "",
            f"Goal ({ours} within {margin:g} point of {theirs}, mean paired difference): " + "; ".join(verdicts),
        ]
    return lines


def quantized_lines(records: Sequence[Mapping[str, Any]]) -> list[str]:
    """The 4-bit base minus the float base, per method, paired by seed, every metric."""
    lines = []
    twins = [(name, row.sweep_row) for name, row in e2e.table_rows().items() if row.base == "4bit"]
    for four_bit, float_row in twins:
        diffs = {
            m: paired_by_seed(metric_by_seed(records, m, row=four_bit), metric_by_seed(records, m, row=float_row))
            for m in METRICS
        }
        if all(d is None for d in diffs.values()):
            continue
        if not lines:
            lines = ["", "4-bit base minus float base, paired by seed (mean [95% interval]):", ""]
            lines += ["| rows | " + " | ".join(METRICS) + " |", "|---" * (1 + len(METRICS)) + "|"]
        cells = ["-" if d is None else _interval(d) for d in diffs.values()]
        lines.append(f"| {four_bit} − {float_row} | " + " | ".join(cells) + " |")
    return lines


def run_outputs(records: Sequence[Mapping[str, Any]], repo: pathlib.Path) -> dict[tuple[str, int], list[str]]:
    """Each run's test outputs by (row, seed), read as the scorer reads them; runs without their file are left out."""
    return {
        (r["row"], r["seed"]): read_outputs(repo / r["outputs"]) for r in records if (repo / r["outputs"]).is_file()
    }


def example_lines(outputs: Mapping[tuple[str, int], Sequence[str]], test_refs: Sequence[tuple[str, str]]) -> list[str]:
    """Five test MRs with the first reference and each row's seed-0 output (``outputs``: :func:`run_outputs`)."""
    seed0 = {row: lines for (row, seed), lines in outputs.items() if seed == 0}
    if not seed0 or not test_refs:
        return []
    lines = ["", f"{EXAMPLES} test MRs (evenly spaced), the first reference and each row's seed-0 output:"]
    for index in np.linspace(0, len(test_refs) - 1, EXAMPLES).astype(int):
        mr, ref = test_refs[index]
        lines += ["", f"**MR {index}**: {mr}", "", f"- reference: {ref}"]
        for row in [r for r in ROW_ORDER if r in seed0]:
            text = seed0[row][index] if index < len(seed0[row]) else "(missing)"
            lines.append(f"- {row}: {text}")
    return lines


def length_lines(
    records: Sequence[Mapping[str, Any]],
    outputs: Mapping[tuple[str, int], Sequence[str]],
    test_refs: Sequence[tuple[str, str]],
) -> list[str]:
    """Mean words (whitespace-separated) per test output, per row and seed (``outputs``: :func:`run_outputs`):
    BLEU's brevity penalty and NIST reward length, so a seed that writes shorter sentences shows here first."""
    lengths = {run: np.mean([len(line.split()) for line in lines]) for run, lines in outputs.items()}
    if not lengths:
        return []
    seeds = sorted({r["seed"] for r in records})
    lines = ["", "Mean words per test output, by seed:", ""]
    lines += ["| row | " + " | ".join(f"seed {s}" for s in seeds) + " |", "|---" * (1 + len(seeds)) + "|"]
    for row in [r for r in ROW_ORDER if any(run[0] == r for run in lengths)]:
        cells = [f"{lengths[row, s]:.1f}" if (row, s) in lengths else "-" for s in seeds]
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    if test_refs:
        lines += ["", f"The first references: {np.mean([len(ref.split()) for _, ref in test_refs]):.1f} words."]
    # trained runs only ("rate"), and a 4-bit run repeats its float twin here
    trained = [r for r in records if (r["row"], r["seed"]) in lengths and "rate" in r and r["base"] == "float"]
    if len(trained) >= 3:
        words = [lengths[r["row"], r["seed"]] for r in trained]
        correlations = ", ".join(f"{m} {_signed(pearson(words, [r[m] for r in trained]))}" for m in METRICS)
        lines += ["", f"Pearson correlation of mean words with each metric over the {len(trained)} trained float-base "
                  f"runs: {correlations}."]  # fmt: skip
    return lines


def _signed(r: float) -> str:
    """A correlation with its sign, or "-" where it is undefined (nan: a constant sample)."""
    return "-" if np.isnan(r) else f"{r:+.2f}"


def sweep_lines(sweep: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each swept row's points: a line per point (selection loss by step, best, wall), the chosen point marked once
    every point :func:`e2e.sweep_points` asks for is in, with a note when it lies at the limit of the sweep's reach
    (the optimum may lie beyond)."""
    rows = e2e.table_rows()
    lines = []
    for name in [r for r in ROW_ORDER if any(x["row"] == r for x in sweep)]:
        row, points = rows[name], sorted((x for x in sweep if x["row"] == name), key=lambda x: (x["rate"], x["knob"]))
        losses = {(x["rate"], x["knob"]): x["selection_loss"] for x in points}
        wanted, choice = e2e.sweep_points(row, losses), e2e.sweep_choice(row, losses)
        status = "complete" if choice else f"{sum(p in losses for p in wanted)} of {len(wanted)} points so far"
        rates, knobs = sorted({x["rate"] for x in points}), sorted({x["knob"] for x in points})
        lines += [
            "",
            f"**{name}** ({status}; {len(points)} points run, rate {', '.join(f'{a:g}' for a in rates)} × {row.knob} "
            f"{', '.join(f'{k:g}' for k in knobs)}; seed 0, {points[0]['steps']} steps)",
            "",
            "| rate | knob | selection loss by step | best (step) | wall s | chosen |",
            "|---|---|---|---|---|---|",
        ]
        for x in points:
            trace = ", ".join(f"{step}: {loss:.3f}" for step, loss in x.get("selection_trace", [])) or "-"
            mark = ""
            if (x["rate"], x["knob"]) == choice:
                mark = "yes, at the sweep's reach" if e2e.at_reach(row, (x["rate"], x["knob"])) else "yes"
            lines.append(
                f"| {x['rate']:g} | {x['knob']:g} | {trace} | {x['selection_loss']:.3f} ({x['best_step']}) | "
                f"{x['wall_s']:.0f} | {mark} |"
            )
    if lines:
        rule = (
            f"each row's own 3 × 3 grid, then the grid neighbours of its best point until that point beats all its "
            f"neighbours or lies {e2e.REACH} values past an end of an axis; the same rule for every method"
        )
        lines = ["", f"Sweeps (e2e_sweep.jsonl; {rule}): the response loss on the selection slice, lower is better.",
                 *lines]  # fmt: skip
    return lines


def budget(runs: Sequence[Mapping[str, Any]], sweep: Sequence[Mapping[str, Any]]) -> str:
    """The training budget the records share (each distinct step count is named if they differ)."""
    steps = sorted({r["steps"] for r in [*runs, *sweep] if r.get("steps")})
    if not steps:
        return "no trained runs yet"
    shown_steps = " or ".join(f"{s:,d}" for s in steps) + (" (the records differ!)" if len(steps) > 1 else "")
    return (
        f"{shown_steps} AdamW steps of batch {e2e.BATCH} (linear warmup 10%, linear decay), the adapter of the step "
        "with the lowest selection loss kept"
    )


def render(results: pathlib.Path, test_refs: Sequence[tuple[str, str]], repo: pathlib.Path = REPO) -> str:
    """e2e_table.md (returned too), e2e_table.png and e2e_sweep.png from the JSONL files in ``results``."""
    runs = read_records(results / "e2e_runs.jsonl")
    sweep = read_records(results / "e2e_sweep.jsonl")
    records = flat_records(runs)
    outputs = run_outputs(records, repo)
    hours = sum(r["wall_s"] for r in runs) / 3600
    sweep_hours = sum(r["wall_s"] for r in sweep) / 3600
    first = runs[0] if runs else {}
    lines = [
        "# E2E on SmolLM2-135M-Instruct (written by experiments/paper/e2e_table.py from e2e_runs.jsonl)",
        "",
        "Trained on the E2E dev set minus a 10% selection slice of whole MRs; the full test set (630 MRs, official "
        "metrics);",
        "stopping step and hyperparameters chosen on the selection slice (e2e_sweep.jsonl). Cells: median [min, max] "
        "over seeds;",
        "BLEU, METEOR, ROUGE-L x100. Decoding: " + str(first.get("decoding", "-")) + ".",
        f"Budget, the same for every trained row and sweep point: {budget(runs, sweep)}.",
        "Not a row: full fine-tuning (the issue's 'if the budget allows'; this 2-core CPU's hours go to the adapter "
        "rows' sweeps and seeds first).",
        "",
        *table_lines(records),
        *comparison_lines(records),
        *quantized_lines(records),
        *example_lines(outputs, test_refs),
        *length_lines(records, outputs, test_refs),
        *sweep_lines(sweep),
        "",
        f"Compute on the 2-core CPU: {len(runs)} table runs, {hours:.1f} h; {len(sweep)} sweep points, "
        f"{sweep_hours:.1f} h.",
    ]
    text = "\n".join(lines) + "\n"
    (results / "e2e_table.md").write_text(text)
    _plot(records, results / "e2e_table.png")
    _plot_sweeps(sweep, results / "e2e_sweep.png")
    return text


def _plot(records: Sequence[Mapping[str, Any]], out: pathlib.Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in ROW_ORDER if any(x["row"] == r for x in records)]
    fig, axes = plt.subplots(1, len(METRICS), figsize=(3.0 * len(METRICS), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], METRICS, strict=True):
        for i, row in enumerate(rows):
            values = [x[metric] for x in records if x["row"] == row]
            median = float(np.median(values))
            ax.bar(i, median, color="C0" if row.startswith("fourierft") else "C1" if row != "zero-shot" else "C7")
            ax.errorbar(i, median, yerr=[[median - min(values)], [max(values) - median]], color="k", capsize=2)
        ax.set_xticks(range(len(rows)), rows, rotation=70, fontsize=7)
        ax.set_title(metric + (" x100" if metric in PERCENT else ""))
    fig.suptitle("E2E test set, SmolLM2-135M-Instruct: median and min-max over seeds", fontsize=9)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _plot_sweeps(sweep: Sequence[Mapping[str, Any]], out: pathlib.Path) -> None:
    """One panel per swept row: its points on log rate × log knob axes, coloured and labelled by selection loss
    (one colour scale for all panels), the chosen point ringed once the walk has ended (each panel's title says
    whether it has)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [r for r in ROW_ORDER if any(x["row"] == r for x in sweep)]
    if not names:
        return
    rows, losses = e2e.table_rows(), [x["selection_loss"] for x in sweep]
    norm = matplotlib.colors.Normalize(min(losses), max(losses))
    fig, axes = plt.subplots(1, len(names), figsize=(4.6 * len(names), 3.8), squeeze=False)
    fig.subplots_adjust(wspace=0.35)
    for ax, name in zip(axes[0], names, strict=True):
        points = {(x["rate"], x["knob"]): x["selection_loss"] for x in sweep if x["row"] == name}
        (rates, knobs), values = zip(*points, strict=True), list(points.values())
        ax.scatter(rates, knobs, c=values, cmap="viridis_r", norm=norm, s=160)
        for (rate, knob), loss in points.items():
            ax.annotate(f"{loss:.3f}", (rate, knob), textcoords="offset points", xytext=(0, 9), ha="center", fontsize=7)
        choice = e2e.sweep_choice(rows[name], points)
        if choice is not None:
            ax.scatter(*choice, s=420, facecolors="none", edgecolors="r", linewidths=1.5)
        status = "complete" if choice is not None else "under way"
        ax.set(xscale="log", yscale="log", xlabel="rate", ylabel=rows[name].knob, title=f"{name} ({status})")
        for axis, ticks in ((ax.xaxis, sorted(set(rates))), (ax.yaxis, sorted(set(knobs)))):
            axis.set_ticks(ticks, [f"{t:g}" for t in ticks], fontsize=7)
            axis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.margins(0.15)
    fig.colorbar(matplotlib.cm.ScalarMappable(norm=norm, cmap="viridis_r"), ax=axes[0].tolist(), label="selection loss")
    fig.suptitle(
        f"E2E sweeps: best selection loss in {sweep[0]['steps']} steps (seed 0); red ring: the chosen point", fontsize=9
    )
    fig.savefig(out, dpi=110, bbox_inches="tight")
    plt.close(fig)


def test_references(path: pathlib.Path) -> list[tuple[str, str]]:
    """(MR, first reference) of every test MR, in the order the outputs files keep."""
    from fourier_flax.data.e2e import read_e2e

    return [(m.mr, m.refs[0]) for m in read_e2e(path)] if path.is_file() else []


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=pathlib.Path, default=RESULTS)
    data = REPO.parent / "shared" / "data" / "e2e" / "original" / "testset_w_refs.csv"
    parser.add_argument("--test", type=pathlib.Path, default=data)
    args = parser.parse_args(argv)
    print(render(args.results, test_references(args.test)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
