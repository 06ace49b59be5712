"""GLUE fine-tuning of MiniLM with FourierFT and its baselines: presets, methods, the training loop, seed sweeps.

Example::

  >>> from fourier_flax.finetune import resolve_run, train_run
  >>> result = train_run(resolve_run("sst2", preset="quick"), "runs/sst2", data_dir="../shared/data/glue")
"""

from fourier_flax.finetune.loop import RunResult, default_data_dir, evaluate, train_run
from fourier_flax.finetune.methods import adapter_config, make_apply_fn, method_mask, prepare_params
from fourier_flax.finetune.presets import METHODS, PAPER_PRESETS, PRESETS, RunConfig, resolve_run

__all__ = [
    "METHODS",
    "PAPER_PRESETS",
    "PRESETS",
    "RunConfig",
    "RunResult",
    "adapter_config",
    "default_data_dir",
    "evaluate",
    "make_apply_fn",
    "method_mask",
    "prepare_params",
    "resolve_run",
    "train_run",
]
