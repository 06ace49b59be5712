"""The ``train`` command (``fourier-flax train`` and ``experiments/paper/glue.py``): flags, runs, printed summary.

Several methods given as ``--method fourierft,head`` train on the same data and the same loaded model, one after
the other, each in ``OUT/<method>``; the last lines compare them.

Example::

  $ fourier-flax train --task sst2 --preset quick --method fourierft,head --out runs/sst2_quick
  $ fourier-flax train --task rte --preset paper --method fourierft --lr 0.09 --head-lr 0.011 --out runs/rte
"""

from __future__ import annotations

import argparse
import json
import pathlib
from collections.abc import Sequence

from fourier_flax.finetune.classifier import load_classifier
from fourier_flax.finetune.loop import RunResult, Trainer, default_data_dir, load_task_data, load_tokenizer, train_run
from fourier_flax.finetune.presets import PAPER_PRESETS, PRESETS, TRAINING_METHODS, RunConfig, resolve_run

# Flag -> RunConfig field for the numeric overrides.
_OVERRIDES = {
    "lr": float,
    "head_lr": float,
    "scaling": float,
    "n_frequency": int,
    "lora_r": int,
    "lora_alpha": float,
    "epochs": int,
    "batch_size": int,
    "max_length": int,
    "warmup_ratio": float,
    "weight_decay": float,
    "max_train_examples": int,
    "max_eval_examples": int,
    "max_steps": int,
    "num_layers": int,
    "seed": int,
    "random_loc_seed": int,
}


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags of the train command; every :class:`RunConfig` field can be overridden."""
    parser.add_argument("--task", default="sst2", choices=sorted(PAPER_PRESETS), help="GLUE task (%(default)s)")
    parser.add_argument(
        "--method",
        default="fourierft,lora,head",
        help=f"comma-separated methods from {', '.join(TRAINING_METHODS)} (default %(default)s)",
    )
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS), help="%(default)s; 'paper' = Table 8")
    parser.add_argument("--out", default=None, help="run directory (default runs/<task>_<preset>)")
    parser.add_argument(
        "--data-dir", default=None, help="GLUE root with <TASK>/{train,dev}.tsv (default ../shared/data/glue)"
    )
    parser.add_argument("--official-tfds", action="store_true", help="use TFDS's official glue builder instead")
    parser.add_argument(
        "--model", default=None, help="local Hugging Face Flax BERT/RoBERTa folder (default: all-MiniLM-L6-v2)"
    )
    parser.add_argument("--pooling", default=None, choices=("mean", "cls"), help="head input (default mean)")
    parser.add_argument(
        "--backbone",
        default=None,
        choices=("nnx", "hf-flax"),
        help="encoder implementation: our NNX BERT (default) or transformers' Flax classes (also RoBERTa)",
    )
    parser.add_argument(
        "--remat", action="store_true", help="recompute encoder layers in the backward pass (less memory)"
    )
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    for name, kind in _OVERRIDES.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help="override the preset")


def runs_from_args(args: argparse.Namespace) -> list[RunConfig]:
    """One :class:`RunConfig` per ``--method``, from the preset and the flags given."""
    overrides = {name: getattr(args, name) for name in _OVERRIDES}
    overrides.update(model_dir=args.model, pooling=args.pooling, backbone=args.backbone, remat=args.remat or None)
    methods = [m.strip() for m in args.method.split(",") if m.strip()]
    return [resolve_run(args.task, preset=args.preset, method=m, overrides=overrides) for m in methods]


def _data_dir(args: argparse.Namespace) -> pathlib.Path | None:
    if args.official_tfds:
        return None
    if args.data_dir is not None:
        return pathlib.Path(args.data_dir)
    found = default_data_dir()
    if found is None:
        print("no ../shared/data/glue found: using the official TFDS glue builder")
    return found


def summary_table(results: Sequence[RunResult]) -> str:
    """A small Markdown table: method, dev metric at the stopping epoch, trainable params, bytes, seconds."""
    first = results[0]
    lines = [
        f"| {first.run.task} | dev {first.metric_name} (full dev set) | stopping epoch | trainable params | "
        "bytes on disk | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r.run.method} | {100 * r.dev_metric:.1f} | {r.stopping_epoch} | {r.trainable_parameters:,d} | "
            f"{r.adapter_bytes:,d} | {r.seconds:.0f} |"
        )
    return "\n".join(lines)


def run_train(args: argparse.Namespace) -> int:
    """Trains every requested method on the same data and model; prints a table of the results."""
    from fourier_flax.data import get_task

    runs = runs_from_args(args)
    out = pathlib.Path(args.out or f"runs/{args.task}_{args.preset}")
    data_dir = _data_dir(args)
    first = runs[0]
    shared = (
        "max_length",
        "max_train_examples",
        "max_eval_examples",
        "model_dir",
        "backbone",
        "remat",
        "pooling",
        "num_layers",
    )
    if any(getattr(run, f) != getattr(first, f) for run in runs for f in shared):
        raise ValueError(f"every --method of one command shares the data and model settings {shared}.")
    data = load_task_data(first, data_dir, load_tokenizer(first.model_dir))
    sizes = ", ".join(f"{len(getattr(data, s)['labels'])} {s}" for s in ("train", "selection", "dev"))
    print(f"{args.task}: {sizes} examples; max length {first.max_length}, buckets {list(data.buckets)}")
    model, base = load_classifier(
        first.model_dir,
        num_labels=get_task(args.task).num_labels,
        pooling=first.pooling,
        num_layers=first.num_layers,
        backbone=first.backbone,
        remat=first.remat,
    )
    results = []
    for run in runs:
        trainer = Trainer(model, base, run, data)
        result = train_run(run, out / run.method, data_dir=data_dir, trainer=trainer, progress=not args.no_progress)
        results.append(result)
    (out / "results.json").write_text(json.dumps([r.summary() for r in results], indent=2) + "\n")
    print(summary_table(results))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python experiments/paper/glue.py [flags]``."""
    parser = argparse.ArgumentParser(description="Fine-tune all-MiniLM-L6-v2 on a GLUE task (FourierFT and baselines).")
    add_train_arguments(parser)
    return run_train(parser.parse_args(argv))
