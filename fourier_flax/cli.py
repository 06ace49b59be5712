"""The ``fourier-flax`` console script: inspect and convert adapter files.

Two formats are recognised by their contents: a fourier_flax checkpoint (an orbax directory of numbered steps,
written by :func:`fourier_flax.save_adapter`) and a Hugging Face PEFT adapter directory (``adapter_config.json`` +
``adapter_model.safetensors``).

Commands::

  fourier-flax inspect ADAPTER [--json]
      modules, n per module, trainable parameters, bytes on disk and the config.
  fourier-flax convert SRC DST --to peft [--module-prefix base_model.model.]
      orbax -> PEFT needs no model: the checkpoint records everything PEFT's files hold.
  fourier-flax convert SRC DST --to orbax --base HF_MODEL_DIR [--base-class FlaxBertModel]
                       [--base-kwarg num_hidden_layers=2 ...] [--module-map bert= ...]
      PEFT -> orbax needs the base model: PEFT's files do not record kernel shapes, which a fourier_flax
      checkpoint checks on load. ``--base`` is a Hugging Face model directory loaded with the Flax twin of the
      class PEFT recorded (``auto_mapping``; ``--base-class`` overrides, default ``FlaxAutoModel``).
  fourier-flax train [--task sst2] [--method fourierft,head] [--preset quick|paper|tiny] [--out DIR] [--lr ...]
      fine-tune MiniLM on a GLUE task; flags as experiments/paper/glue.py (fourier_flax.finetune.command).

Each command is a small ``add_<command>(subparsers)`` function; :data:`COMMANDS` lists them, so a new command
(e.g. ``train``) is one more function there.

Example::

  $ fourier-flax inspect runs/sst2_adapter
  $ fourier-flax convert runs/sst2_adapter runs/sst2_peft --to peft
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import re
import sys
from collections.abc import Callable, Sequence
from typing import Any

from fourier_flax import checkpoint, peft_interop
from fourier_flax.methods.fourierft import SPECTRUM

Subparsers = Any  # argparse's private _SubParsersAction


def adapter_format(path: str | pathlib.Path) -> str:
    """``"peft"`` or ``"orbax"``, from what the directory holds.

    Raises:
      FileNotFoundError: neither kind of adapter is at ``path``.
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such file or directory.")
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is a file; an adapter is a directory (orbax checkpoint or PEFT adapter).")
    if (path / peft_interop.CONFIG_FILE).is_file():
        return "peft"
    checkpoint.latest_step_directory(path)  # raises with a precise message when there is no complete step
    return "orbax"


def _natural(name: str) -> list:
    """Sort key putting ``layer.2`` before ``layer.10``."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def directory_bytes(path: pathlib.Path) -> int:
    """Total size of the regular files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def describe(path: str | pathlib.Path) -> dict[str, Any]:
    """What ``fourier-flax inspect`` reports, as a JSON-ready dict."""
    path = pathlib.Path(path)
    if adapter_format(path) == "peft":
        peft_config, tensors = peft_interop.read_peft(path)
        modules = {
            key[len(peft_interop.PEFT_PREFIX) : -len(SPECTRUM) - 1]: {"n": int(value.shape[-1])}
            for key, value in tensors.items()
            if key.endswith("." + SPECTRUM)
        }
        files = [path / peft_interop.CONFIG_FILE, path / peft_interop.WEIGHTS_FILE]
        return {
            "format": "peft",
            "path": str(path),
            "modules": {name: modules[name] for name in sorted(modules, key=_natural)},
            "trainable_parameters": sum(int(v.size) for k, v in tensors.items() if peft_interop.is_trained_key(k)),
            "bytes_on_disk": sum(f.stat().st_size for f in files),
            "config": peft_config,
        }
    metadata = checkpoint.read_metadata(path)
    step_dir = checkpoint.latest_step_directory(path)
    modules = {
        name: {k: metadata["modules"][name][k] for k in ("n", "r", "kernel_shape") if k in metadata["modules"][name]}
        for name in sorted(metadata["modules"], key=_natural)
    }
    return {
        "format": "orbax",
        "path": str(step_dir),
        "library_version": metadata["library_version"],
        "modules": modules,
        "trainable_parameters": sum(math.prod(leaf["shape"]) for leaf in metadata["leaves"].values()),
        "bytes_on_disk": directory_bytes(step_dir),
        "config": metadata["config"],
    }


def _print_report(report: dict[str, Any]) -> None:
    print(f"{report['format']} adapter at {report['path']}")
    print(f"modules ({len(report['modules'])}):")
    width = max(map(len, report["modules"]), default=0)
    for name, record in report["modules"].items():
        sizes = "  ".join(f"{k}={tuple(v) if isinstance(v, list) else v}" for k, v in record.items())
        print(f"  {name:<{width}}  {sizes}")
    print(f"trainable parameters: {report['trainable_parameters']:,d}")
    print(f"bytes on disk: {report['bytes_on_disk']:,d}")
    print("config:")
    print(json.dumps(report["config"], indent=2, sort_keys=True))


def run_inspect(args: argparse.Namespace) -> int:
    report = describe(args.adapter)
    if args.json:
        print(json.dumps(report, indent=2, sort_keys=True))
    else:
        _print_report(report)
    return 0


def add_inspect(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("inspect", help="show an adapter's modules, sizes and config (orbax or PEFT)")
    parser.add_argument("adapter", help="a fourier_flax checkpoint directory or a PEFT adapter directory")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of text")
    parser.set_defaults(run=run_inspect)


def _key_value(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, got {text!r}")
    return key, value


def load_base_params(base: str, base_class: str | None, kwargs: dict[str, Any]):
    """The params of the Hugging Face Flax model ``base_class`` loaded from directory ``base``."""
    import transformers

    model_class = getattr(transformers, base_class, None)
    if model_class is None or not hasattr(model_class, "from_pretrained"):
        raise ValueError(f"transformers has no Flax model class {base_class!r} (e.g. FlaxBertModel).")
    return model_class.from_pretrained(base, **kwargs).params


def _base_class(args: argparse.Namespace) -> str:
    if args.base_class:
        return args.base_class
    recorded = json.loads((pathlib.Path(args.src) / peft_interop.CONFIG_FILE).read_text()).get("auto_mapping") or {}
    torch_class = recorded.get("base_model_class")
    return f"Flax{torch_class}" if torch_class else "FlaxAutoModel"


def run_convert(args: argparse.Namespace) -> int:
    source = adapter_format(args.src)
    if source == args.to:
        raise ValueError(f"{args.src} is already a {source} adapter; copy the directory instead.")
    if args.to == "peft":
        metadata = checkpoint.read_metadata(args.src)
        config = checkpoint.config_from_dict(metadata["config"])
        leaves = checkpoint.read_leaves(args.src, metadata)
        peft_interop.write_peft(
            args.dst, leaves, config, module_prefix=args.module_prefix, kernel_modules=tuple(metadata["modules"])
        )
    else:
        if not args.base:
            raise ValueError(
                "converting a PEFT adapter to orbax needs --base HF_MODEL_DIR: PEFT's files do not record the "
                "kernel shapes a fourier_flax checkpoint checks on load."
            )
        base_kwargs = {key: json.loads(value) for key, value in args.base_kwarg}
        base = load_base_params(args.base, _base_class(args), base_kwargs)
        config, params = peft_interop.import_peft(args.src, base, module_map=dict(args.module_map) or None)
        checkpoint.save_adapter(args.dst, params, config)
    print(f"wrote {args.to} adapter to {args.dst}")
    return 0


def add_convert(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser("convert", help="convert between fourier_flax (orbax) and PEFT adapter files")
    parser.add_argument("src", help="the adapter to read (format detected)")
    parser.add_argument("dst", help="the directory to write")
    parser.add_argument("--to", required=True, choices=("peft", "orbax"), help="format to write")
    parser.add_argument(
        "--module-prefix",
        default=peft_interop.PEFT_PREFIX,
        help="--to peft: prefix of PEFT's tensor keys (default %(default)s)",
    )
    parser.add_argument("--base", help="--to orbax: Hugging Face model directory of the base model")
    parser.add_argument(
        "--base-class", help="--to orbax: transformers Flax class (default: twin of PEFT's recorded class)"
    )
    parser.add_argument(
        "--base-kwarg",
        type=_key_value,
        action="append",
        default=[],
        metavar="KEY=JSON",
        help="--to orbax: keyword for from_pretrained, e.g. num_hidden_layers=2 (repeatable)",
    )
    parser.add_argument(
        "--module-map",
        type=_key_value,
        action="append",
        default=[],
        metavar="PEFT_PREFIX=OURS",
        help="--to orbax: replace a PEFT module-key prefix, e.g. bert= (repeatable)",
    )
    parser.set_defaults(run=run_convert)


def add_train(subparsers: Subparsers) -> None:
    from fourier_flax.finetune.command import add_train_arguments, run_train

    parser = subparsers.add_parser(
        "train",
        help="fine-tune MiniLM on a GLUE task (fourierft, lora, bitfit, head, full); see experiments/paper/glue.py",
    )
    add_train_arguments(parser)
    parser.set_defaults(run=run_train)


def run_e2e_score(args: argparse.Namespace) -> int:
    from fourier_flax.data.e2e_metrics import METRICS, score_files

    scores = score_files(args.refs, args.outputs)
    if args.json:
        print(json.dumps(scores))
    else:
        print("\n".join(f"{name}: {scores[name]:.4f}" for name in METRICS))
    return 0


def add_e2e_score(subparsers: Subparsers) -> None:
    parser = subparsers.add_parser(
        "e2e-score",
        help="the E2E NLG Challenge's BLEU, NIST, METEOR, ROUGE_L and CIDEr, as its measure_scores.py computes them",
    )
    parser.add_argument("refs", type=pathlib.Path, help="references CSV (columns mr, ref; consecutive rows per MR)")
    parser.add_argument("outputs", type=pathlib.Path, help="system outputs, one line per MR, in the CSV's MR order")
    parser.add_argument("--json", action="store_true", help="print one JSON object with the five metrics")
    parser.set_defaults(run=run_e2e_score)


COMMANDS: tuple[Callable[[Subparsers], None], ...] = (add_inspect, add_convert, add_train, add_e2e_score)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fourier-flax", description="FourierFT adapters for JAX/Flax.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for add_command in COMMANDS:
        add_command(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``fourier-flax`` console script; returns the exit status.

    Errors about the user's files (missing adapter, mismatches) print one line to stderr and return 1.
    """
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except (OSError, ValueError) as error:
        print(f"fourier-flax {args.command}: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
