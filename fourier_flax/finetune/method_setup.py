"""What trains under each fine-tuning method, and the model call that runs it.

``fourierft``, ``lora``, ``dora``, ``vera``, ``flora`` and ``svft`` add adapter leaves
(:func:`fourier_flax.init_adapter`) to the query/value kernels and train them with the classifier head; ``bitfit``
trains every bias and the head; ``head`` only the head; ``full`` every leaf. Optimizer labels are the same for all:
the ``classifier`` subtree is "head" (``head_lr``), every other trained leaf "adapter" (``lr``).

Example::

  model, params = load_classifier(num_labels=2)
  params, adapter = prepare_params(params, run, jax.random.key(run.seed))
  mask = method_mask(params, run, adapter)
  trainable, frozen = fourier_flax.split_params(params, mask)
  logits = make_apply_fn(model, adapter)(merge_params(trainable, frozen), batch, None, False)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax

from fourier_flax.adapter import init_adapter
from fourier_flax.finetune.classifier import HEAD, SequenceClassifier, init_head
from fourier_flax.finetune.presets import RunConfig
from fourier_flax.interceptor import intercept
from fourier_flax.methods import AdapterConfig, DoraConfig, FloraConfig, SvftConfig, VeraConfig
from fourier_flax.methods.fourierft import FourierFTConfig
from fourier_flax.methods.lora import LoraConfig
from fourier_flax.partition import trainable_mask

# How each adapter method's config is built from a run's settings (the classifier is modules_to_save).
ADAPTER_BUILDERS: dict[str, Callable[[RunConfig, dict], AdapterConfig]] = {
    "fourierft": lambda run, common: FourierFTConfig(
        n_frequency=run.n_frequency,
        scaling=run.scaling,
        random_loc_seed=run.random_loc_seed,
        entry_sampling=run.entry_sampling,
        center_frequency=run.center_frequency,
        bandwidth=run.bandwidth,
        **common,
    ),
    "lora": lambda run, common: LoraConfig(r=run.lora_r, lora_alpha=run.lora_alpha, **common),
    "dora": lambda run, common: DoraConfig(r=run.lora_r, lora_alpha=run.lora_alpha, **common),
    "vera": lambda run, common: VeraConfig(r=run.vera_r, **common),
    "flora": lambda run, common: FloraConfig(r=run.flora_r, scale=run.flora_scale, **common),
    "svft": lambda run, common: SvftConfig(pattern=run.svft_pattern, off_diag=run.svft_off_diag, **common),
}


def adapter_config(run: RunConfig) -> AdapterConfig | None:
    """The adapter ``run.method`` adds (with the classifier as ``modules_to_save``), or None (bitfit/head/full)."""
    builder = ADAPTER_BUILDERS.get(run.method)
    if builder is None:
        return None
    return builder(run, {"target_modules": run.target_modules, "modules_to_save": (HEAD,)})


def prepare_params(
    params: Mapping[str, Any], run: RunConfig, rng: jax.Array
) -> tuple[dict[str, Any], AdapterConfig | None]:
    """Pretrained ``params`` with a fresh head (and the adapter of ``run.method``), plus that adapter's config."""
    head_rng, adapter_rng = jax.random.split(rng)
    params = init_head(params, head_rng)
    config = adapter_config(run)
    if config is not None:
        params = init_adapter(params, config, adapter_rng)
    return params, config


def method_mask(params: Mapping[str, Any], run: RunConfig, adapter: AdapterConfig | None) -> Any:
    """The bool tree of trained leaves under ``run.method``."""
    if adapter is not None:
        return trainable_mask(params, adapter)

    def trained(path, _) -> bool:
        keys = [getattr(k, "key", None) for k in path]
        return run.method == "full" or keys[0] == HEAD or (run.method == "bitfit" and keys[-1] == "bias")

    return jax.tree_util.tree_map_with_path(trained, params)


def optimizer_labels(trainable: Mapping[str, Any]) -> Any:
    """ "head" for the classifier's leaves, "adapter" for every other trained leaf (see ``make_optimizer``)."""
    return {k: jax.tree.map(lambda _, k=k: "head" if k == HEAD else "adapter", v) for k, v in trainable.items()}


def make_apply_fn(model: SequenceClassifier, adapter: AdapterConfig | None) -> Callable[..., jax.Array]:
    """``apply_fn(params, batch, rng, train, scaling=None) -> logits`` running ``adapter`` inside ``model``.

    ``scaling`` (FourierFT) may be a traced scalar standing in for ``adapter.scaling``, so one compiled step
    serves a whole scaling grid.
    """

    def apply_fn(params, batch, rng, train, scaling=None):
        if adapter is None:
            return model(params, batch, rng, train)
        with intercept(adapter, scaling=scaling if hasattr(adapter, "scaling") else None):
            return model(params, batch, rng, train)

    return apply_fn
