"""One GLUE fine-tuning run: data with a held-out selection slice, bucketed batches, jitted steps, epochs.

Protocol. The training split is cut once (seed 0, the same for every method and seed) into a *selection slice*
(10%, at most 1,000 rows) and the rows that train. After every epoch the model is scored on the selection slice
and on the full dev set; the *stopping epoch* is the one with the best selection score, and the reported number
is the dev metric at that epoch. The best dev epoch (the paper's protocol, optimistic) is recorded beside it,
labelled as such.

Batches are length-bucketed (:mod:`fourier_flax.data.bucketing`): a run compiles its train step once per bucket
that occurs and its eval step once per bucket, at most ``2 · len(buckets)`` programs. A :class:`Trainer` keeps
those compiled steps for any number of runs: seeds, learning rates and FourierFT's scaling are traced values
(``make_sweepable_optimizer``, ``intercept(config, scaling=...)``), so a whole grid compiles once.

A run directory holds::

  out/
    config.json    # the resolved RunConfig, plus data dir, buckets and the model's layer count
    metrics.json   # one record per epoch: step, mean train loss, selection and dev metrics, seconds
    adapter/       # the stopping epoch (fourierft/lora): fourier_flax.save_adapter / load_adapter
    trainable/     # the stopping epoch (bitfit/head/full): the trained leaves, orbax
    summary.json   # stopping epoch, its dev metric, best dev epoch, trainable parameters, bytes, wall time

Example::

  run = resolve_run("mrpc", preset="glue")
  result = train_run(run, "runs/mrpc", data_dir="../shared/data/glue")
  result.dev_metric, result.stopping_epoch
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import time
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from fourier_flax.checkpoint import save_adapter
from fourier_flax.data import (
    get_task,
    glue_metric,
    load_glue_split,
    load_official_glue_split,
    subsample,
    tokenize_split,
)
from fourier_flax.data.bucketing import bucket_lengths, bucketed_batch_count, bucketed_batches
from fourier_flax.finetune.classifier import SequenceClassifier, load_classifier, with_label_mean_bias
from fourier_flax.finetune.method_setup import make_apply_fn, method_mask, optimizer_labels, prepare_params
from fourier_flax.finetune.presets import RunConfig, run_to_dict
from fourier_flax.finetune.training import (
    classification_loss,
    make_eval_step,
    make_sweepable_optimizer,
    make_train_step,
    regression_loss,
    with_learning_rates,
)
from fourier_flax.methods.fourierft import FourierFTConfig
from fourier_flax.partition import merge_params, split_params, trainable_parameter_summary

Arrays = dict[str, np.ndarray]
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
TFDS_DIR = pathlib.Path("~/tensorflow_datasets").expanduser()
SELECTION_FRACTION, SELECTION_MAX = 0.1, 1000


def default_data_dir() -> pathlib.Path | None:
    """``../shared/data/glue`` next to the repository when it exists, else None (the official TFDS builder)."""
    local = (REPO_ROOT / ".." / "shared" / "data" / "glue").resolve()
    return local if local.is_dir() else None


def load_tokenizer(model_dir: str | pathlib.Path | None = None) -> Any:
    """The tokenizer of ``model_dir`` (a local Hugging Face folder), default all-MiniLM-L6-v2's (offline)."""
    import transformers

    from fourier_flax.models.hf import minilm_path

    return transformers.AutoTokenizer.from_pretrained(str(model_dir or minilm_path()))


@dataclasses.dataclass(frozen=True)
class TaskData:
    """Tokenized arrays of one task: ``train`` (rows that train), ``selection`` (held out of train), ``dev``."""

    train: Arrays
    selection: Arrays
    dev: Arrays
    buckets: tuple[int, ...]


def split_selection(arrays: Arrays, seed: int = 0) -> tuple[Arrays, Arrays]:
    """``(train, selection)``: a seeded ``SELECTION_FRACTION`` (≤ ``SELECTION_MAX`` rows) held out of ``arrays``."""
    n = len(arrays["labels"])
    size = min(SELECTION_MAX, max(1, int(SELECTION_FRACTION * n)))
    held = np.zeros(n, bool)
    held[np.random.default_rng(seed).choice(n, size=size, replace=False)] = True
    return {k: v[~held] for k, v in arrays.items()}, {k: v[held] for k, v in arrays.items()}


def _examples(run: RunConfig, split: str, data_dir: pathlib.Path | None) -> Mapping[str, np.ndarray]:
    if data_dir is None:
        return load_official_glue_split(run.task, split, TFDS_DIR, download=True)
    return load_glue_split(run.task, split, data_dir)


def load_task_data(run: RunConfig, data_dir: pathlib.Path | None, tokenizer: Any) -> TaskData:
    """The task's full dev set, the selection slice, and the training rows (``max_train_examples`` caps them).

    ``data_dir`` None uses the official TFDS ``glue`` builder (downloads into ``~/tensorflow_datasets``).
    """
    train_all = tokenize_split(_examples(run, "train", data_dir), run.task, tokenizer, run.max_length)
    train, selection = split_selection(train_all)
    train = subsample(train, run.max_train_examples, seed=0)
    selection = subsample(selection, run.max_eval_examples, seed=0)
    dev = tokenize_split(_examples(run, "dev", data_dir), run.task, tokenizer, run.max_length)
    dev = subsample(dev, run.max_eval_examples, seed=0)
    return TaskData(train, selection, dev, bucket_lengths(run.max_length))


def loss_for(task: str):
    """``regression_loss`` for STS-B, ``classification_loss`` otherwise."""
    return regression_loss if get_task(task).is_regression else classification_loss


def directory_bytes(path: pathlib.Path) -> int:
    """Total size of the regular files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def save_trained(out: pathlib.Path, params: Mapping[str, Any], trainable: Mapping[str, Any], adapter) -> pathlib.Path:
    """Saves the trained leaves: ``out/adapter`` via save_adapter, or ``out/trainable`` (orbax) without adapter.

    ``out/trainable`` is replaced only once the new checkpoint is complete: it is written to
    ``out/trainable.partial`` first, so a save that dies leaves the previous epoch's checkpoint in place.
    """
    if adapter is not None:
        return save_adapter(out / "adapter", params, adapter)
    path = (out / "trainable").absolute()
    staging, previous = path.with_name("trainable.partial"), path.with_name("trainable.previous")
    for stale in (staging, previous):
        if stale.exists():
            shutil.rmtree(stale)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(staging, jax.tree.map(np.asarray, trainable))
    if path.exists():
        path.rename(previous)
    staging.rename(path)
    if previous.exists():
        shutil.rmtree(previous)
    return path


class Trainer:
    """Compiled train/eval steps of one (model, task, method, budget), reused by every run of a grid.

    ``fit(seed, lr=..., head_lr=..., scaling=...)`` trains one run; the learning rates and the scaling are
    traced, so new values reuse the compiled steps (``compiled_shapes`` counts them).

    Args:
      model: the classifier (:func:`fourier_flax.finetune.classifier.load_classifier`).
      base: its params (the head is re-drawn per seed).
      run: the settings; ``run.lr``/``run.head_lr``/``run.scaling`` are the defaults of ``fit``.
      data: the task's arrays.
    """

    def __init__(self, model: SequenceClassifier, base: Mapping[str, Any], run: RunConfig, data: TaskData):
        self.model, self.base, self.run, self.data = model, base, run, data
        params, self.adapter = prepare_params(base, run, jax.random.key(0))
        self.mask = method_mask(params, run, self.adapter)
        _, self.frozen = split_params(params, self.mask)
        self.trainable_parameters = trainable_parameter_summary(params, self.mask)[0]
        per_epoch = bucketed_batch_count(data.train, run.batch_size)
        self.total_steps = (
            run.epochs * per_epoch if run.max_steps is None else min(run.max_steps, run.epochs * per_epoch)
        )
        if self.total_steps < 1:
            raise ValueError(f"{len(data.train['labels'])} training rows make no batch of {run.batch_size}.")
        self.optimizer = make_sweepable_optimizer(
            spectrum_lr=run.lr,
            head_lr=run.head_lr,
            total_steps=self.total_steps,
            weight_decay=run.weight_decay,
            warmup_ratio=run.warmup_ratio,
            labels=optimizer_labels,
        )
        apply_fn = make_apply_fn(model, self.adapter)
        self.train_step = make_train_step(apply_fn, loss_for(run.task), self.optimizer)
        self.eval_step = make_eval_step(apply_fn, loss_for(run.task))
        self.shapes: set[tuple[str, tuple[int, ...]]] = set()

    @property
    def compiled_shapes(self) -> int:
        """Distinct (step, input shape) pairs run so far: each compiled once."""
        return len(self.shapes)

    def _hparams(self, scaling: float | None) -> dict[str, jax.Array]:
        if not isinstance(self.adapter, FourierFTConfig):
            return {}
        return {"scaling": jnp.float32(self.run.scaling if scaling is None else scaling)}

    def evaluate(self, trainable, arrays: Arrays, scaling: float | None = None) -> dict[str, float]:
        """GLUE metrics of ``trainable`` on every row of ``arrays`` (padding rows dropped), plus mean ``loss``."""
        hparams = self._hparams(scaling)
        logits, labels, loss = [], [], 0.0
        for batch in bucketed_batches(arrays, self.run.batch_size, self.data.buckets, shuffle=False):
            self.shapes.add(("eval", batch["input_ids"].shape))
            inputs = {k: v for k, v in batch.items() if k != "index"}
            out = self.eval_step(trainable, self.frozen, inputs, hparams)
            keep = batch["mask"]
            logits.append(np.asarray(out["logits"])[keep])
            labels.append(batch["labels"][keep])
            loss += float(out["loss"]) * keep.sum()  # padding rows are zeros with label 0: only an estimate
        metrics = glue_metric(self.run.task, np.concatenate(logits), np.concatenate(labels))
        return {**metrics, "loss": loss / len(arrays["labels"])}

    def fit(
        self,
        seed: int,
        *,
        lr: float | None = None,
        head_lr: float | None = None,
        scaling: float | None = None,
        epochs: int | None = None,
        evaluate_on: tuple[str, ...] = ("selection", "dev"),
        on_epoch: Callable[[dict[str, Any], Any], None] | None = None,
        progress: bool = False,
    ) -> list[dict[str, Any]]:
        """Trains one run; returns one record per epoch (``step``, ``train_loss``, a metrics dict per split).

        ``on_epoch(record, trainable)`` is called after each epoch's evaluation (e.g. to save the adapter).
        """
        run = self.run
        params, _ = prepare_params(self.base, run, jax.random.key(seed))
        trainable, _ = split_params(with_label_mean_bias(params, self.data.train["labels"]), self.mask)
        opt_state = with_learning_rates(
            self.optimizer.init(trainable), run.lr if lr is None else lr, run.head_lr if head_lr is None else head_lr
        )
        hparams = self._hparams(scaling)
        dropout = jax.random.fold_in(jax.random.key(seed), 1)
        records, step = [], 0
        bar = tqdm(total=self.total_steps, desc=f"{run.task}/{run.method}", disable=not progress, dynamic_ncols=True)
        for epoch in range(run.epochs if epochs is None else epochs):
            if step >= self.total_steps:
                break
            start, losses = time.perf_counter(), []
            batches = bucketed_batches(
                self.data.train,
                run.batch_size,
                self.data.buckets,
                shuffle=True,
                seed=seed,
                epoch=epoch,
                drop_remainder=True,
            )
            for batch in batches:
                if step >= self.total_steps:
                    break
                self.shapes.add(("train", batch["input_ids"].shape))
                inputs = {k: v for k, v in batch.items() if k not in ("index", "mask")}
                trainable, opt_state, metrics = self.train_step(
                    trainable, opt_state, self.frozen, inputs, jax.random.fold_in(dropout, step), hparams
                )
                losses.append(float(metrics["loss"]))
                step += 1
                bar.update()
                bar.set_postfix(loss=f"{losses[-1]:.4f}")
            if not np.all(np.isfinite(losses)):
                raise FloatingPointError(f"{run.task}/{run.method} seed {seed}: the training loss became non-finite.")
            record = {"epoch": epoch, "step": step, "train_loss": float(np.mean(losses))}
            for split in evaluate_on:
                record[split] = self.evaluate(trainable, getattr(self.data, split), scaling)
            record["seconds"] = time.perf_counter() - start
            records.append(record)
            if on_epoch is not None:
                on_epoch(record, trainable)
        bar.close()
        return records


def stopping_epoch(records: list[dict[str, Any]], metric: str, split: str = "selection") -> int:
    """Index of the epoch with the best ``split`` score (the earliest among ties)."""
    scores = [r[split][metric] for r in records]
    return int(np.nanargmax(scores)) if np.isfinite(scores).any() else len(records) - 1


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What :func:`train_run` reports (also written to ``summary.json``)."""

    run: RunConfig
    metric_name: str
    stopping_epoch: int
    selection_metric: float
    dev_metric: float
    best_dev_epoch: int
    best_dev_metric: float
    epochs: list[dict[str, Any]]
    trainable_parameters: int
    adapter_bytes: int
    adapter_path: str
    steps: int
    compiled_shapes: int
    seconds: float

    def summary(self) -> dict[str, Any]:
        skip = {"run", "epochs"}
        return {
            "task": self.run.task,
            "method": self.run.method,
            **{f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in skip},
        }


def _write_json(path: pathlib.Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def train_run(
    run: RunConfig,
    out: str | pathlib.Path,
    *,
    data_dir: str | pathlib.Path | None,
    model_and_params: tuple[SequenceClassifier, Any] | None = None,
    data: TaskData | None = None,
    trainer: Trainer | None = None,
    progress: bool = True,
) -> RunResult:
    """Fine-tunes on ``run.task`` with ``run.method``; saves the stopping epoch's adapter in ``out``.

    Args:
      run: the settings (:func:`fourier_flax.finetune.resolve_run`).
      out: the run directory (created; files in it are overwritten).
      data_dir: GLUE root holding ``<TASK>/{train,dev}.tsv``, or None for the official TFDS builder.
      model_and_params: a loaded ``(SequenceClassifier, params)`` to reuse; None loads ``run.model_dir``.
      data: the task's arrays to reuse; None loads them.
      trainer: a :class:`Trainer` of the same settings to reuse (its compiled steps); None builds one.
      progress: show a tqdm bar.
    """
    start = time.perf_counter()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task = get_task(run.task)
    if trainer is None:
        if model_and_params is None:
            model_and_params = load_classifier(
                run.model_dir,
                num_labels=task.num_labels,
                pooling=run.pooling,
                num_layers=run.num_layers,
                backbone=run.backbone,
                remat=run.remat,
            )
        if data is None:
            data = load_task_data(
                run, None if data_dir is None else pathlib.Path(data_dir), load_tokenizer(run.model_dir)
            )
        trainer = Trainer(*model_and_params, run, data)
    config = {
        **run_to_dict(run),
        "data_dir": str(data_dir),
        "buckets": list(trainer.data.buckets),
        "model_layers": trainer.model.config.num_hidden_layers,
    }
    _write_json(out / "config.json", config)
    saved: dict[str, Any] = {}
    records_so_far: list[dict[str, Any]] = []

    def keep_best(record, trainable):  # the adapter first, so metrics.json never lists an unsaved best epoch
        score = record["selection"][task.metric]
        if "score" not in saved or score > saved["score"]:
            params = merge_params(trainable, trainer.frozen)
            saved.update(score=score, path=save_trained(out, params, trainable, trainer.adapter))
        records_so_far.append(record)
        _write_json(out / "metrics.json", records_so_far)

    records = trainer.fit(run.seed, on_epoch=keep_best, progress=progress)
    stop = stopping_epoch(records, task.metric)
    best_dev = stopping_epoch(records, task.metric, split="dev")
    result = RunResult(
        run=run,
        metric_name=task.metric,
        stopping_epoch=stop,
        selection_metric=records[stop]["selection"][task.metric],
        dev_metric=records[stop]["dev"][task.metric],
        best_dev_epoch=best_dev,
        best_dev_metric=records[best_dev]["dev"][task.metric],
        epochs=records,
        trainable_parameters=trainer.trainable_parameters,
        adapter_bytes=directory_bytes(saved["path"]),
        adapter_path=str(saved["path"]),
        steps=records[-1]["step"],
        compiled_shapes=trainer.compiled_shapes,
        seconds=time.perf_counter() - start,
    )
    _write_json(out / "summary.json", result.summary())
    return result
