"""The ``train`` command (``fourier-flax train`` and ``experiments/glue.py``): flags, runs, printed summary.

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

from fourier_flax.finetune.loop import RunResult, default_data_dir, load_split, load_tokenizer, train_run
from fourier_flax.finetune.presets import METHODS, PAPER_PRESETS, PRESETS, RunConfig, resolve_run

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
        default="fourierft,head",
        help=f"comma-separated methods from {', '.join(METHODS)} (default %(default)s)",
    )
    parser.add_argument("--preset", default="quick", choices=sorted(PRESETS), help="%(default)s; 'paper' = Table 8")
    parser.add_argument("--out", default=None, help="run directory (default runs/<task>_<preset>)")
    parser.add_argument(
        "--data-dir", default=None, help="GLUE root with <TASK>/{train,dev}.tsv (default ../shared/data/glue)"
    )
    parser.add_argument("--official-tfds", action="store_true", help="use TFDS's official glue builder instead")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    for name, kind in _OVERRIDES.items():
        parser.add_argument("--" + name.replace("_", "-"), type=kind, default=None, help="override the preset")


def runs_from_args(args: argparse.Namespace) -> list[RunConfig]:
    """One :class:`RunConfig` per ``--method``, from the preset and the flags given."""
    overrides = {name: getattr(args, name) for name in _OVERRIDES}
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


def summary_line(result: RunResult) -> str:
    """``sst2 fourierft: dev accuracy 0.8125 (epoch 2) | 12,290 trainable | 58,123 bytes | 301 s``."""
    return (
        f"{result.run.task} {result.run.method}: dev {result.metric_name} {result.best_metric:.4f} "
        f"(best epoch {result.best_epoch}) | {result.trainable_parameters:,d} trainable params | "
        f"{result.adapter_bytes:,d} bytes on disk ({result.adapter_path}) | {result.seconds:.0f} s"
    )


def run_train(args: argparse.Namespace) -> int:
    """Trains every requested method and prints one summary line per method."""
    from fourier_flax.data import get_task
    from fourier_flax.hf_models import load_minilm

    runs = runs_from_args(args)
    out = pathlib.Path(args.out or f"runs/{args.task}_{args.preset}")
    data_dir = _data_dir(args)
    first = runs[0]
    tokenizer = load_tokenizer()
    data = (load_split(first, "train", data_dir, tokenizer), load_split(first, "dev", data_dir, tokenizer))
    sizes = f"{len(data[0]['labels'])} train / {len(data[1]['labels'])} dev examples"
    print(f"{args.task}: {sizes}, max length {first.max_length}")
    model = load_minilm(num_labels=get_task(args.task).num_labels, num_hidden_layers=first.num_layers)
    results = []
    for run in runs:
        if (run.max_length, run.max_train_examples, run.max_eval_examples) != (
            first.max_length,
            first.max_train_examples,
            first.max_eval_examples,
        ):
            raise ValueError("every --method of one command shares the data settings.")
        results.append(
            train_run(
                run,
                out / run.method,
                data_dir=data_dir,
                model_and_params=model,
                data=data,
                progress=not args.no_progress,
            )
        )
    (out / "results.json").write_text(json.dumps([r.summary() for r in results], indent=2) + "\n")
    for result in results:
        print(summary_line(result))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """``python experiments/glue.py [flags]``."""
    parser = argparse.ArgumentParser(description="Fine-tune all-MiniLM-L6-v2 on a GLUE task (FourierFT and baselines).")
    add_train_arguments(parser)
    return run_train(parser.parse_args(argv))
