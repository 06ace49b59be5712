"""Training FourierFT/LoRA adapters: the paper's optimizer, standard losses, and jitted train/eval steps.

The step works on the two halves of :func:`fourier_flax.split_params`: it differentiates only the *trainable*
tree and the optimizer holds state only for it, while the frozen tree passes through untouched.

The paper's protocol (Gao et al., 2024, GLUE with RoBERTa; the official ``experiments/GLUE/NLU_GLUE.py`` and
``*-best.sh`` of github.com/Chaos96/fourierft): AdamW (betas 0.9/0.999, eps 1e-8, weight decay 0) with two
learning rates, spectral coefficients vs classifier head —

* RoBERTa-base: CoLA 0.12 / 8e-3, SST-2 0.05 / 6e-3, MRPC 0.05 / 6e-3, QNLI 0.1 / 1e-3, RTE 0.09 / 1.1e-2,
  STS-B 0.09 / 9e-3 (scaling 49, 140, 151, 29, 110, 84);
* RoBERTa-large: spectra 0.043–0.1, head 1e-3–1.1e-2 (scaling 90–121);

with a linear schedule: warm-up over the first 6% of the steps, then linear decay to zero (Hugging Face's
``get_linear_schedule_with_warmup``). Batch 32, n = 1000. The official script puts every non-head trained
leaf (spectra, and biases when they train) in the spectral group; here trained biases take ``head_lr``.

Example::

  mask = fourier_flax.trainable_mask(params, config)
  trainable, frozen = fourier_flax.split_params(params, mask)
  optimizer = make_optimizer(spectrum_lr=0.05, head_lr=6e-3, total_steps=10_000)
  opt_state = optimizer.init(trainable)
  def apply_fn(params, batch, rng, train):
      with fourier_flax.intercept(config):
          return model(batch["input_ids"], batch["attention_mask"], params=params,
                       dropout_rng=rng, train=train).logits
  step = make_train_step(apply_fn, classification_loss, optimizer)
  trainable, opt_state, metrics = step(trainable, opt_state, frozen, batch, rng)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import optax

from fourier_flax.methods import ADAPTER_LEAVES
from fourier_flax.partition import merge_params

ApplyFn = Callable[[Mapping[str, Any], Mapping[str, Any], jax.Array | None, bool], jax.Array]
LossFn = Callable[[jax.Array, jax.Array], jax.Array]
Batch = Mapping[str, Any]


def linear_warmup_decay(peak_lr: float, total_steps: int, warmup_ratio: float = 0.06) -> optax.Schedule:
    """Hugging Face's ``get_linear_schedule_with_warmup``: 0 → ``peak_lr`` over ``w = warmup_ratio ·
    total_steps`` steps, then linearly to 0 at ``total_steps`` (and 0 after).

    ``lr(s) = peak_lr · s / w`` for ``s < w``, else ``peak_lr · max(0, (T - s) / (T - w))``; like the paper's
    code, ``w`` is not rounded, and step 0 has learning rate 0 when ``w > 0``.

    Example::

      schedule = linear_warmup_decay(0.1, total_steps=100)  # w = 6
      float(schedule(3)), float(schedule(53))
      # (0.05, 0.05)
    """
    if not isinstance(total_steps, int) or total_steps < 1:
        raise ValueError(f"total_steps must be a positive int, got {total_steps!r}.")
    if not 0.0 <= warmup_ratio < 1.0:
        raise ValueError(f"warmup_ratio must be in [0, 1), got {warmup_ratio}.")
    warmup = warmup_ratio * total_steps
    decay = optax.linear_schedule(peak_lr, 0.0, transition_steps=total_steps - warmup)
    if warmup == 0:
        return decay
    rise = optax.linear_schedule(0.0, peak_lr, transition_steps=warmup)
    return optax.join_schedules([rise, decay], boundaries=[warmup])


def _label_by_leaf_name(trainable: Mapping[str, Any]) -> Any:
    """ "adapter" for adapter leaves, "head" for every other leaf (head and biases) of a trainable tree."""
    return jax.tree_util.tree_map_with_path(
        lambda path, _: "adapter" if getattr(path[-1], "key", None) in ADAPTER_LEAVES else "head",
        trainable,
    )


def make_optimizer(
    *,
    spectrum_lr: float,
    head_lr: float,
    total_steps: int,
    weight_decay: float = 0.0,
    warmup_ratio: float = 0.06,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    labels: Any | Callable[[Any], Any] | None = None,
) -> optax.GradientTransformation:
    """AdamW with one learning rate for adapter leaves and another for the head and biases.

    Both rates follow :func:`linear_warmup_decay`. Meant for the *trainable* tree of
    :func:`fourier_flax.split_params`, where each leaf is labelled by its name (adapter leaves vs the rest).
    To optimise a full params tree instead, pass ``labels=fourier_flax.param_labels(params, config)``:
    "frozen" leaves then get zero updates and no state.

    Args:
      spectrum_lr: peak rate of the adapter leaves (FourierFT spectra, or LoRA factors); the paper uses
        0.05–0.12 for RoBERTa-base.
      head_lr: peak rate of ``modules_to_save`` leaves and trained biases; the paper uses 1e-3–1.1e-2.
      total_steps: number of optimizer steps of the run (the schedule reaches 0 there).
      weight_decay: decoupled AdamW weight decay on every trained leaf (the paper: 0).
      warmup_ratio: fraction of ``total_steps`` spent warming up (the paper: 0.06).
      b1, b2, eps: Adam's constants (PyTorch's AdamW defaults).
      labels: a labels tree or a function of the params returning one ("adapter" | "head" | "frozen");
        None labels leaves by name.

    Returns:
      An ``optax.GradientTransformation`` (``update`` needs the params, for weight decay).

    Example::

      optimizer = make_optimizer(spectrum_lr=0.05, head_lr=6e-3, total_steps=4000)
      opt_state = optimizer.init(trainable)
    """

    def adamw(lr: float) -> optax.GradientTransformation:
        schedule = linear_warmup_decay(lr, total_steps, warmup_ratio)
        return optax.adamw(schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)

    return optax.partition(
        {"adapter": adamw(spectrum_lr), "head": adamw(head_lr), "frozen": optax.set_to_zero()},
        _label_by_leaf_name if labels is None else labels,
    )


def make_sweepable_optimizer(
    *, spectrum_lr: float, head_lr: float, total_steps: int, **kwargs: Any
) -> optax.GradientTransformation:
    """:func:`make_optimizer` with both peak rates held in the optimizer state (``optax.inject_hyperparams``).

    The rates are then traced values: ``with_learning_rates(opt_state, lr, head_lr)`` changes them without
    recompiling a jitted step, and a vmapped sweep can give every run its own pair.

    Example::

      optimizer = make_sweepable_optimizer(spectrum_lr=0.05, head_lr=6e-3, total_steps=400)
      opt_state = with_learning_rates(optimizer.init(trainable), 0.1, 1e-2)
    """
    static = ("total_steps", "labels", "weight_decay", "warmup_ratio", "b1", "b2", "eps")
    factory = optax.inject_hyperparams(make_optimizer, static_args=static)
    return factory(spectrum_lr=spectrum_lr, head_lr=head_lr, total_steps=total_steps, **kwargs)


def with_learning_rates(opt_state: Any, spectrum_lr: Any, head_lr: Any) -> Any:
    """A :func:`make_sweepable_optimizer` state with other peak rates (floats or traced scalars)."""
    hyperparams = {
        **opt_state.hyperparams,
        "spectrum_lr": jnp.asarray(spectrum_lr, jnp.float32),
        "head_lr": jnp.asarray(head_lr, jnp.float32),
    }
    return opt_state._replace(hyperparams=hyperparams)


def classification_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean softmax cross-entropy of ``logits (B, K)`` against integer ``labels (B,)``.

    Hugging Face's loss for ``num_labels > 1`` single-label classification.
    """
    return optax.softmax_cross_entropy_with_integer_labels(logits, labels).mean()


def regression_loss(logits: jax.Array, labels: jax.Array) -> jax.Array:
    """Mean squared error of ``logits (B, 1)`` against float ``labels (B,)`` (HF's ``num_labels == 1`` loss).

    Raises:
      ValueError: ``logits`` has more than one output per example.
    """
    if logits.shape[-1] != 1:
        raise ValueError(
            f"regression_loss needs one output per example (num_labels=1), got logits {logits.shape}; "
            "use classification_loss for several classes."
        )
    return optax.squared_error(logits[..., 0], labels.astype(logits.dtype)).mean()


def make_train_step(
    apply_fn: ApplyFn,
    loss_fn: LossFn,
    optimizer: optax.GradientTransformation,
    *,
    donate: bool = True,
) -> Callable[..., tuple[Any, Any, dict[str, jax.Array]]]:
    """A jitted ``step(trainable, opt_state, frozen, batch, rng, hparams=None) -> (trainable, opt_state, metrics)``.

    Gradients are taken with respect to ``trainable`` only; ``frozen`` is an argument (not a baked-in
    constant) and is never updated, differentiated or donated. ``hparams`` (e.g. ``{"scaling": alpha}``) are
    passed to ``apply_fn`` as keyword arguments; being traced, a grid over them reuses one compiled step.

    Args:
      apply_fn: ``apply_fn(params, batch, rng, train) -> logits`` on the full params tree (inside
        :func:`fourier_flax.intercept` for a Hugging Face model); ``rng`` drives dropout.
      loss_fn: ``loss_fn(logits, batch["labels"]) -> scalar``, e.g. :func:`classification_loss`.
      optimizer: e.g. :func:`make_optimizer`, initialised on ``trainable``.
      donate: donate ``trainable`` and ``opt_state`` to the step so their buffers are reused in place;
        the arrays passed in are then invalid after the call (use the returned ones).

    Returns:
      The jitted step; ``metrics`` holds the scalar ``loss`` and the gradients' global norm ``grad_norm``.
    """

    def step(trainable, opt_state, frozen, batch: Batch, rng: jax.Array, hparams: Mapping[str, Any] | None = None):
        def objective(trainable):
            logits = apply_fn(merge_params(trainable, frozen), batch, rng, True, **(hparams or {}))
            return loss_fn(logits, batch["labels"])

        loss, grads = jax.value_and_grad(objective)(trainable)
        updates, opt_state = optimizer.update(grads, opt_state, trainable)
        trainable = optax.apply_updates(trainable, updates)
        return trainable, opt_state, {"loss": loss, "grad_norm": optax.global_norm(grads)}

    return jax.jit(step, donate_argnums=(0, 1) if donate else ())


def make_eval_step(apply_fn: ApplyFn, loss_fn: LossFn) -> Callable[..., dict[str, jax.Array]]:
    """A jitted ``eval_step(trainable, frozen, batch, hparams=None) -> {"loss", "logits"}`` (no dropout).

    The logits let the caller compute task metrics (accuracy, Matthews correlation, Pearson).
    """

    def eval_step(trainable, frozen, batch: Batch, hparams: Mapping[str, Any] | None = None):
        logits = apply_fn(merge_params(trainable, frozen), batch, None, False, **(hparams or {}))
        return {"loss": loss_fn(logits, batch["labels"]), "logits": logits}

    return jax.jit(eval_step)
