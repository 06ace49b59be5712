"""Training recipes: train/eval steps, losses and schedules, and GLUE fine-tuning of a Flax encoder with FourierFT
and its baselines (presets, methods, the training loop with a held-out selection slice, rate/scaling grids).

Example::

  from fourier_flax.finetune import resolve_run, train_run
  result = train_run(resolve_run("mrpc", preset="glue"), "runs/mrpc", data_dir="../shared/data/glue")
  result.dev_metric, result.stopping_epoch
"""

from fourier_flax.finetune.classifier import SequenceClassifier, load_classifier
from fourier_flax.finetune.compare import (
    PairedDifference,
    holm_adjust,
    metric_by_seed,
    paired_by_seed,
    paired_difference,
    shared_seeds,
)
from fourier_flax.finetune.loop import (
    RunResult,
    TaskData,
    Trainer,
    default_data_dir,
    load_task_data,
    load_tokenizer,
    train_run,
)
from fourier_flax.finetune.method_setup import adapter_config, make_apply_fn, method_mask, prepare_params
from fourier_flax.finetune.presets import (
    PAPER_PRESETS,
    PRESETS,
    TASK_MAX_LENGTH,
    TRAINING_METHODS,
    RunConfig,
    resolve_run,
)
from fourier_flax.finetune.training import (
    classification_loss,
    linear_warmup_decay,
    make_eval_step,
    make_optimizer,
    make_train_step,
    regression_loss,
)

__all__ = [
    "classification_loss",
    "linear_warmup_decay",
    "make_eval_step",
    "make_optimizer",
    "make_train_step",
    "regression_loss",
    "TRAINING_METHODS",
    "PAPER_PRESETS",
    "PRESETS",
    "PairedDifference",
    "TASK_MAX_LENGTH",
    "RunConfig",
    "RunResult",
    "SequenceClassifier",
    "TaskData",
    "Trainer",
    "adapter_config",
    "default_data_dir",
    "holm_adjust",
    "load_classifier",
    "load_task_data",
    "load_tokenizer",
    "make_apply_fn",
    "method_mask",
    "metric_by_seed",
    "paired_by_seed",
    "paired_difference",
    "prepare_params",
    "resolve_run",
    "shared_seeds",
    "train_run",
]
