"""Seed sweeps as one compiled program: a whole training run is a pure function of its seed, vmapped over seeds.

:func:`make_seed_run` builds ``run_seed(seed, lr, head_lr, scaling) -> (trainable, losses)``: the seed draws the
head and the adapter (spectrum or LoRA A) and the data order of every epoch (``jax.random.permutation``), the
training steps are one ``lax.scan``. Every argument is traced (FourierFT's scaling through ``intercept(config,
scaling=...)``), so :func:`sweep` jits ``jax.vmap(run_seed)`` over a grid of seeds × learning rates × scalings: the
whole grid compiles once and runs as one batched program; :func:`sequential` runs the same function seed by seed,
which is the reference the sweep must equal.

The data order here is drawn in JAX, so it differs from :func:`fourier_flax.data.batches` (grain) used by
:func:`fourier_flax.finetune.train_run`; both are deterministic in the seed.

Example::

  run_seed = make_seed_run(model, base_params, run, train_arrays)
  trained, losses = sweep(run_seed, [0, 1, 2], [(run.lr, run.head_lr, run.scaling)])  # leaves (3, ...)
  scores = evaluate_seeds(model, base_params, run, trained, dev_arrays)   # one dev metric per seed
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from fourier_flax.data import batches, get_task, glue_metric
from fourier_flax.finetune.classifier import with_label_mean_bias
from fourier_flax.finetune.loop import loss_for
from fourier_flax.finetune.method_setup import make_apply_fn, method_mask, optimizer_labels, prepare_params
from fourier_flax.finetune.presets import RunConfig
from fourier_flax.finetune.training import make_eval_step, make_optimizer
from fourier_flax.partition import merge_params, split_params, trainable_parameter_summary

SeedRun = Callable[[jax.Array, jax.Array, jax.Array, jax.Array], tuple[Any, jax.Array]]
Rates = tuple[float, float, float]  # (lr, head_lr, scaling); scaling is ignored by methods without one
_INPUTS = ("input_ids", "attention_mask", "token_type_ids", "labels")


def total_steps(run: RunConfig, num_examples: int) -> int:
    """Optimizer steps of ``run`` on ``num_examples`` training rows (full batches only, ``max_steps`` cap)."""
    steps = run.epochs * (num_examples // run.batch_size)
    return steps if run.max_steps is None else min(steps, run.max_steps)


def _split_for(base: Mapping[str, Any], run: RunConfig, seed: jax.Array, labels: np.ndarray | None = None):
    params, adapter = prepare_params(base, run, jax.random.key(seed))
    if labels is not None:
        params = with_label_mean_bias(params, labels)
    return split_params(params, method_mask(params, run, adapter)), adapter


def make_seed_run(
    model: Any,
    base: Mapping[str, Any],
    run: RunConfig,
    train: Mapping[str, np.ndarray],
    *,
    batch_axis: str | None = None,
) -> SeedRun:
    """``run_seed(seed, lr, head_lr, scaling) -> (trainable, losses (steps,))``: one whole training run, traceable.

    Args:
      model: a :class:`fourier_flax.finetune.SequenceClassifier`.
      base: its params (the head is re-drawn per seed).
      run: the settings; ``run.lr``/``run.head_lr``/``run.scaling`` are ignored (the arguments give them).
      train: tokenized training arrays ``(N, L)`` and labels ``(N,)``.
      batch_axis: a mesh axis to split every batch over (data parallelism inside each run; use with
        :func:`sweep`'s ``mesh``, which maps the grid over another axis).
    """
    data = {k: jnp.asarray(train[k]) for k in _INPUTS}
    n, batch_size = len(train["labels"]), run.batch_size
    per_epoch = n // batch_size
    steps = total_steps(run, n)
    (_, frozen), adapter = _split_for(base, run, jnp.uint32(0))
    apply_fn = make_apply_fn(model, adapter)
    loss_fn = loss_for(run.task)

    scaled = adapter is not None and hasattr(adapter, "scaling")  # methods whose config has a traced scaling
    hparams = (lambda scaling: {"scaling": scaling}) if scaled else (lambda scaling: {})

    labels = np.asarray(train["labels"])

    def run_seed(seed, lr, head_lr, scaling):
        (trainable, _), _ = _split_for(base, run, seed, labels)
        key = jax.random.key(seed)
        order_key, dropout_key = jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)
        epochs = -(-steps // per_epoch)
        order = jnp.concatenate(
            [
                jax.random.permutation(jax.random.fold_in(order_key, e), n)[: per_epoch * batch_size]
                for e in range(epochs)
            ]
        )[: steps * batch_size].reshape(steps, batch_size)
        optimizer = make_optimizer(
            spectrum_lr=lr,
            head_lr=head_lr,
            total_steps=steps,
            weight_decay=run.weight_decay,
            warmup_ratio=run.warmup_ratio,
            labels=optimizer_labels,
        )

        def step(carry, inputs):
            trainable, opt_state = carry
            index, rows = inputs
            batch = {k: v[rows] for k, v in data.items()}
            if batch_axis is not None:
                batch = jax.lax.with_sharding_constraint(batch, P(batch_axis))

            def objective(trainable):
                rng = jax.random.fold_in(dropout_key, index)
                logits = apply_fn(merge_params(trainable, frozen), batch, rng, True, **hparams(scaling))
                return loss_fn(logits, batch["labels"])

            loss, grads = jax.value_and_grad(objective)(trainable)
            updates, opt_state = optimizer.update(grads, opt_state, trainable)
            trainable = optax.apply_updates(trainable, updates)
            return (trainable, opt_state), loss

        (trainable, _), losses = jax.lax.scan(step, (trainable, optimizer.init(trainable)), (jnp.arange(steps), order))
        return trainable, losses

    return run_seed


def seed_grid(seeds: Sequence[int], rates: Sequence[Rates]) -> tuple[jax.Array, ...]:
    """``(seed, lr, head_lr, scaling)`` arrays of every run: rate triples outer, seeds inner."""
    rows = [(s, *r) for r in rates for s in seeds]
    seed, lr, head, scaling = zip(*rows, strict=True)
    return (jnp.asarray(seed, jnp.uint32), *(jnp.asarray(v, jnp.float32) for v in (lr, head, scaling)))


def sweep(
    run_seed: SeedRun,
    seeds: Sequence[int],
    rates: Sequence[Rates],
    *,
    mesh: Mesh | None = None,
    grid_axis: str = "data",
) -> tuple[Any, jax.Array]:
    """All ``rates × seeds`` runs in one jitted, vmapped program.

    With ``mesh``, the runs are split over the mesh axis ``grid_axis`` (``jax.vmap(spmd_axis_name=...)``): each
    device, or each group of devices along the other axes, trains its slice of the grid; a run's batches may
    be split over another axis too (``make_seed_run(batch_axis=...)``). The grid is padded to a multiple of
    the axis size with copies of its last run, which are dropped from the result.

    Returns:
      ``(trainable, losses)`` with a leading axis of ``len(rates) · len(seeds)`` (rates outer, seeds inner);
      with ``mesh``, laid out over ``grid_axis``.

    Example::

      mesh = jax.make_mesh((4, 2), ("data", "model"))
      run_seed = make_seed_run(model, base, run, train, batch_axis="model")
      trained, losses = sweep(run_seed, range(4), [(0.1, 1e-2, 12.0)], mesh=mesh)  # one run per data slice
    """
    grid = seed_grid(seeds, rates)
    if mesh is None:
        return jax.jit(jax.vmap(run_seed))(*grid)
    count = len(grid[0])
    pad = -count % mesh.shape[grid_axis]
    grid = tuple(jnp.concatenate([column, jnp.repeat(column[-1:], pad)]) for column in grid)
    placed = NamedSharding(mesh, P(grid_axis))
    with jax.set_mesh(mesh):
        mapped = jax.jit(jax.vmap(run_seed, spmd_axis_name=grid_axis), out_shardings=placed)
        trained, losses = mapped(*jax.device_put(grid, placed))
    return jax.tree.map(lambda x: x[:count], (trained, losses)) if pad else (trained, losses)


def sequential(run_seed: SeedRun, seeds: Sequence[int], rates: Sequence[Rates]) -> tuple[Any, jax.Array]:
    """The same runs as :func:`sweep`, one jitted call per run (compiled once), stacked in the same order."""
    compiled = jax.jit(run_seed)
    outputs = [compiled(*args) for args in zip(*seed_grid(seeds, rates), strict=True)]
    return jax.tree.map(lambda *xs: jnp.stack(xs), *outputs)


def evaluate_seeds(
    model: Any, base: Mapping[str, Any], run: RunConfig, trainable: Any, dev: Mapping[str, np.ndarray]
) -> list[dict[str, float]]:
    """Dev metrics (:func:`fourier_flax.finetune.evaluate`) of every run of a stacked ``trainable``."""
    (_, frozen), adapter = _split_for(base, run, jnp.uint32(0))
    eval_step = make_eval_step(make_apply_fn(model, adapter), loss_for(run.task))
    count = jax.tree.leaves(trainable)[0].shape[0]
    scores = []
    for i in range(count):
        one = jax.tree.map(lambda x, i=i: x[i], trainable)
        logits = [
            np.asarray(eval_step(one, frozen, batch)["logits"])[batch["mask"]]
            for batch in batches(dev, run.batch_size, shuffle=False)
        ]
        scores.append(glue_metric(run.task, np.concatenate(logits), dev["labels"]))
    return scores


def trainable_count(base: Mapping[str, Any], run: RunConfig) -> int:
    """Trained parameters of ``run.method`` on ``base`` (adapter + head, biases, or everything)."""
    params, adapter = prepare_params(base, run, jax.random.key(0))
    mask = method_mask(params, run, adapter)
    return trainable_parameter_summary(params, mask)[0]


def seed_scores(
    model: Any,
    base: Mapping[str, Any],
    run: RunConfig,
    data: tuple[Mapping[str, np.ndarray], Mapping[str, np.ndarray]],
    seeds: Sequence[int],
    *,
    vmap: bool = False,
) -> tuple[list[float], Any]:
    """The headline dev metric of ``run`` for every seed, and the stacked trained leaves.

    ``vmap`` runs the seeds as one vmapped program (:func:`sweep`), else one compiled program in a loop
    (:func:`sequential`); both give the same numbers.
    """
    train, dev = data
    run_seed = make_seed_run(model, base, run, train)
    trained, _ = (sweep if vmap else sequential)(run_seed, seeds, [(run.lr, run.head_lr, run.scaling)])
    metric = get_task(run.task).metric
    return [s[metric] for s in evaluate_seeds(model, base, run, trained, dev)], trained
