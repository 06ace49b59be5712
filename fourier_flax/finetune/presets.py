"""Run settings for GLUE fine-tuning: the paper's RoBERTa-base presets, CPU-sized quick presets, overrides.

:func:`resolve_run` merges three layers, later ones winning: the task's paper preset (Gao et al., 2024, Table 8:
AdamW, linear schedule with 6% warm-up, batch 32, n = 1000, max length 512), the named preset's changes
(``"quick"`` shrinks the run so it finishes on a 2-core CPU) and explicit overrides (the command line).

Example::

  run = resolve_run("sst2", preset="glue", method="fourierft", overrides={"epochs": 2})
  run.lr, run.head_lr, run.scaling, run.max_length
  # (0.05, 0.006, 140.0, 64)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, Literal

Method = Literal["fourierft", "lora", "dora", "vera", "flora", "svft", "bitfit", "head", "full"]
TRAINING_METHODS: tuple[str, ...] = ("fourierft", "lora", "dora", "vera", "flora", "svft", "bitfit", "head", "full")


@dataclasses.dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Everything one fine-tuning run depends on (written to ``config.json`` in the run directory).

    Attributes:
      task: GLUE task (``"sst2"``, ``"mrpc"``, ``"cola"``, ``"qnli"``, ``"rte"``, ``"stsb"``).
      method: ``"fourierft"``, ``"lora"``, ``"bitfit"`` (biases + head), ``"head"`` (head only) or ``"full"``.
      lr: peak rate of the method's own leaves (spectra, LoRA factors, biases, or every encoder weight).
      head_lr: peak rate of the classifier head.
      scaling: FourierFT's ``alpha``.
      n_frequency: FourierFT's ``n`` per adapted layer.
      lora_r / lora_alpha: LoRA (and DoRA) rank and scale numerator.
      vera_r: VeRA's shared rank. flora_r / flora_scale: FLoRA's core rank and scale ``s``.
      svft_pattern / svft_off_diag: SVFT's sparsity pattern and its band half-width.
      entry_sampling / center_frequency / bandwidth: FourierFT's entry rule ("peft", "uniform" or
        "frequency_bias" with ``f_c`` and ``W``; :class:`fourier_flax.FourierFTConfig`).
      epochs / batch_size: the schedule.
      max_length: tokens kept per example; the default is the task's :data:`TASK_MAX_LENGTH`.
      pooling: the head's input, ``"mean"`` (masked mean of the last hidden states; the default, right for
        sentence-transformer backbones such as all-MiniLM-L6-v2) or ``"cls"`` (the pooler output).
      model_dir: a local Hugging Face BERT/RoBERTa folder; None is the offline all-MiniLM-L6-v2.
      backbone: ``"nnx"`` (our NNX BERT; the default) or ``"hf-flax"`` (transformers' Flax classes; also
        RoBERTa); see :func:`fourier_flax.finetune.classifier.load_classifier`.
      remat: recompute each encoder layer in the backward pass (less activation memory, one more forward).
      max_train_examples / max_eval_examples: deterministic subsamples (None keeps every row).
      max_steps: stop after this many optimizer steps in total (None: ``epochs`` full epochs).
      num_layers: keep only the first MiniLM layers (None: all 6).
      seed: initialisation of the spectrum/LoRA/head, dropout and data order.
      random_loc_seed: seed of the FourierFT entry set ``E`` (PEFT's default 777).
    """

    task: str
    method: str = "fourierft"
    lr: float
    head_lr: float
    scaling: float
    n_frequency: int = 1000
    lora_r: int = 8
    lora_alpha: float = 8.0
    vera_r: int = 256
    flora_r: int = 8
    flora_scale: float = 4.0
    svft_pattern: str = "banded"
    svft_off_diag: int = 2
    entry_sampling: str = "peft"
    center_frequency: float | None = None
    bandwidth: float | None = None
    epochs: int
    batch_size: int = 32
    max_length: int = 512
    pooling: str = "mean"
    model_dir: str | None = None
    backbone: str = "nnx"
    remat: bool = False
    warmup_ratio: float = 0.06
    weight_decay: float = 0.0
    max_train_examples: int | None = None
    max_eval_examples: int | None = None
    max_steps: int | None = None
    num_layers: int | None = None
    target_modules: tuple[str, ...] = ("query", "value")
    seed: int = 0
    random_loc_seed: int = 777

    def __post_init__(self):
        if self.method not in TRAINING_METHODS:
            raise ValueError(f"method must be one of {TRAINING_METHODS}, got {self.method!r}.")
        if self.task not in PAPER_PRESETS:
            raise ValueError(f"task must be one of {sorted(PAPER_PRESETS)}, got {self.task!r}.")
        if self.pooling not in ("mean", "cls"):
            raise ValueError(f"pooling must be 'mean' or 'cls', got {self.pooling!r}.")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))
        for name in ("epochs", "batch_size", "max_length", "n_frequency", "lora_r"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}.")


# Gao et al. (2024), Table 8, RoBERTa-base: spectrum lr, head lr, scaling alpha, epochs (batch 32, n = 1000).
PAPER_PRESETS: Mapping[str, Mapping[str, Any]] = {
    "sst2": {"lr": 0.05, "head_lr": 0.006, "scaling": 140.0, "epochs": 40},
    "mrpc": {"lr": 0.05, "head_lr": 0.006, "scaling": 141.0, "epochs": 30},
    "cola": {"lr": 0.12, "head_lr": 0.008, "scaling": 49.0, "epochs": 100},
    "qnli": {"lr": 0.1, "head_lr": 0.001, "scaling": 29.0, "epochs": 40},
    "rte": {"lr": 0.09, "head_lr": 0.011, "scaling": 110.0, "epochs": 90},
    "stsb": {"lr": 0.09, "head_lr": 0.009, "scaling": 84.0, "epochs": 60},
}

# Tokens kept per task: with the MiniLM (BERT uncased) tokenizer, >= 99% of train and dev examples fit whole
# (p99 train/dev: SST-2 44/51, CoLA 25/29, MRPC 83/80, STS-B 74/71, RTE 197/191; measured by
# tests/test_glue_data.py::test_task_max_lengths_keep_99_percent). Bucketing makes the long tail cheap.
TASK_MAX_LENGTH: Mapping[str, int] = {"sst2": 64, "cola": 48, "mrpc": 128, "stsb": 128, "rte": 256, "qnli": 256}

# The other methods' own rate (FourierFT's comes from PAPER_PRESETS): LoRA's RoBERTa-base rates (Hu et al.,
# 2021, 4e-4 to 5e-4, also used for DoRA and FLoRA), VeRA's 4e-3 (Kopiczko et al., 2024), an SVFT rate in its
# paper's 1e-3-1e-2 range, BitFit's 1e-3 range (Ben Zaken et al., 2022) and the usual 2e-5 for full fine-tuning.
# Starting points only: experiments/paper/glue_table.py sweeps every method's rate.
METHOD_LR: Mapping[str, float] = {
    "lora": 5e-4,
    "dora": 5e-4,
    "vera": 4e-3,
    "flora": 5e-4,
    "svft": 5e-3,
    "bitfit": 1e-3,
    "full": 2e-5,
}

QUICK_HEAD_LR = 3e-2  # head-only's rate from the sweep (results/glue_sweep.md)

# Changes a named preset makes to the paper's protocol; "method_overrides" holds per-method values.
PRESETS: Mapping[str, Mapping[str, Any]] = {
    "paper": {},
    # The GLUE table's budget on a 2-core CPU (experiments/paper/glue_table.py): the same for every method.
    "glue": {"epochs": 3, "batch_size": 32, "max_train_examples": 2000},
    # Minutes on a 2-core CPU (~3 s per MiniLM-L6 step at 32x32): a 1,024-example subsample, 3 epochs of 32 steps.
    # The main job (experiments/paper/glue.py): 2 epochs of 2,000 rows, with the rates and scaling that
    # experiments/paper/glue_table.py's sweep chose on the STS-B selection slice (results/glue_sweep.md); the classifier
    # rate is the table's 1e-2.
    "quick": {
        "epochs": 2,
        "max_train_examples": 2000,
        "head_lr": 1e-2,
        "method_overrides": {
            "fourierft": {"lr": 1.0, "scaling": 12.0},
            "lora": {"lr": 1e-2},
            "head": {"head_lr": QUICK_HEAD_LR},
        },
    },
    # Seconds: for tests and smoke runs (2 layers, a few steps).
    "tiny": {
        "max_length": 16,
        "epochs": 1,
        "batch_size": 8,
        "max_train_examples": 64,
        "max_eval_examples": 32,
        "num_layers": 2,
        "n_frequency": 100,
    },
}


def resolve_run(
    task: str, *, preset: str = "paper", method: str = "fourierft", overrides: Mapping[str, Any] | None = None
) -> RunConfig:
    """The :class:`RunConfig` of ``task`` under ``preset`` with ``overrides`` applied (None values ignored).

    Raises:
      ValueError: unknown task, preset, method or override name.
    """
    if task not in PAPER_PRESETS:
        raise ValueError(f"unknown task {task!r}; choose from {sorted(PAPER_PRESETS)}.")
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; choose from {sorted(PRESETS)}.")
    fields = {f.name for f in dataclasses.fields(RunConfig)}
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(given) - fields)
    if unknown:
        raise ValueError(f"unknown run settings {unknown}; known: {sorted(fields)}.")
    preset_values = dict(PRESETS[preset])
    per_method = preset_values.pop("method_overrides", {})
    values = {**PAPER_PRESETS[task], "max_length": TASK_MAX_LENGTH[task], **preset_values}
    if method in METHOD_LR:
        values["lr"] = METHOD_LR[method]
    values.update(per_method.get(method, {}))
    return RunConfig(task=task, method=method, **{**values, **given})


def run_to_dict(run: RunConfig) -> dict[str, Any]:
    """``run`` as JSON-ready values."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(run).items()}
