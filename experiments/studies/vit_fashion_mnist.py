"""Pipeline check: the FourierFT training pipeline on images, a tiny random-init ViT on Fashion-MNIST.

Command::

  .venv/bin/python experiments/studies/vit_fashion_mnist.py     # ~3-6 min on the shared 2-core CPU

Not a reproduction of the paper's ViT results: no pretrained ViT weights are available offline, so the backbone
is a Hugging Face ``FlaxViTForImageClassification`` with random weights (2 layers, hidden 64, patch 7 on 28x28
grey images). It checks that the same adapter, optimizer and train/eval steps run on another model family and
modality. FourierFT on a random frozen backbone can only re-weight random features, so the interesting numbers
are the ones beside it: head-only (the same frozen random features, linear probe) and full training.
Data: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` (/usr/share/datasets/fashion-mnist), 8,192-image train
subsample, the full 10,000-image test set; batch 64, 3 epochs (384 steps), AdamW with the paper's linear schedule.
Writes ``experiments/results/vit_fashion_mnist.md``.
"""

import pathlib
import time

import jax
import jax.numpy as jnp
import numpy as np
import transformers

from fourier_flax import (
    FourierFTConfig,
    init_adapter,
    intercept,
    split_params,
    trainable_mask,
    trainable_parameter_summary,
)
from fourier_flax.data import load_fashion_mnist, subsample
from fourier_flax.finetune.method_setup import HEAD, optimizer_labels
from fourier_flax.finetune.training import classification_loss, make_eval_step, make_optimizer, make_train_step

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results" / "vit_fashion_mnist.md"
VIT = {
    "image_size": 28,
    "patch_size": 7,
    "num_channels": 1,
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "num_labels": 10,
}
# method -> (adapter/backbone lr, head lr)
METHODS = {"fourierft": (0.05, 5e-3), "head": (0.0, 5e-3), "full": (1e-3, 5e-3)}
ADAPTER = FourierFTConfig(target_modules=["query", "value"], n_frequency=200, scaling=10.0, modules_to_save=[HEAD])
BATCH, EPOCHS, TRAIN_EXAMPLES = 64, 3, 8192


def images(split: str, limit: int | None) -> dict[str, np.ndarray]:
    x, y = load_fashion_mnist(split=split)
    arrays = subsample({"pixel_values": x, "labels": y}, limit, seed=0)
    scaled = (arrays["pixel_values"].astype(np.float32) / 255.0 - 0.286) / 0.353  # Fashion-MNIST mean / std
    return {"pixel_values": scaled[:, None], "labels": arrays["labels"]}  # NCHW, as HF's ViT takes


def vit_apply_fn(model, adapter):
    """``apply_fn(params, batch, rng, train)`` on ``pixel_values`` (the GLUE one takes token ids)."""

    def call(params, batch, rng, train):
        return model(batch["pixel_values"], params=params, dropout_rng=rng, train=train).logits

    if adapter is None:
        return call

    def adapted(params, batch, rng, train):
        with intercept(adapter):
            return call(params, batch, rng, train)

    return adapted


def train_method(method, model, base, train, test):
    lr, head_lr = METHODS[method]
    params = dict(base)
    if method == "fourierft":
        params = init_adapter(params, ADAPTER, jax.random.key(0))
        mask = trainable_mask(params, ADAPTER)
    else:
        mask = jax.tree_util.tree_map_with_path(lambda p, _: method == "full" or p[0].key == HEAD, params)
    trainable, frozen = split_params(params, mask)
    steps = EPOCHS * (len(train["labels"]) // BATCH)
    optimizer = make_optimizer(spectrum_lr=lr, head_lr=head_lr, total_steps=steps, labels=optimizer_labels)
    apply_fn = vit_apply_fn(model, ADAPTER if method == "fourierft" else None)
    step = make_train_step(apply_fn, classification_loss, optimizer)
    evaluate = make_eval_step(apply_fn, classification_loss)
    opt_state, rng, start = optimizer.init(trainable), np.random.default_rng(0), time.perf_counter()
    for epoch in range(EPOCHS):
        order = rng.permutation(len(train["labels"]))
        for i in range(len(order) // BATCH):
            rows = order[i * BATCH : (i + 1) * BATCH]
            batch = {k: jnp.asarray(v[rows]) for k, v in train.items()}
            trainable, opt_state, metrics = step(
                trainable, opt_state, frozen, batch, jax.random.key(epoch * 10_000 + i)
            )
    correct = 0
    for i in range(0, len(test["labels"]), 500):
        batch = {k: jnp.asarray(v[i : i + 500]) for k, v in test.items()}
        correct += int((np.asarray(evaluate(trainable, frozen, batch)["logits"]).argmax(-1) == batch["labels"]).sum())
    count = trainable_parameter_summary(params, mask)[0]
    return correct / len(test["labels"]), float(metrics["loss"]), count, time.perf_counter() - start


def main() -> None:
    train, test = images("train", TRAIN_EXAMPLES), images("test", None)
    model = transformers.FlaxViTForImageClassification(transformers.ViTConfig(**VIT), seed=0)
    rows = []
    for method in METHODS:
        accuracy, loss, count, seconds = train_method(method, model, model.params, train, test)
        rows.append(f"| {method} | {count:,d} | {loss:.3f} | {100 * accuracy:.1f} | {seconds:.0f} |")
        print(rows[-1], flush=True)
    lines = [
        "# Pipeline check: tiny random-init ViT on Fashion-MNIST",
        "",
        "Produced by `.venv/bin/python experiments/studies/vit_fashion_mnist.py`. **A pipeline check, not a reproduction**: "  # noqa: E501
        "the ViT has random weights (no pretrained ViT offline), 2 layers, hidden 64, patch 7. FourierFT "
        f"(n={ADAPTER.n_frequency}, scaling {ADAPTER.scaling} on query/value, + head) adapts a *random* frozen "
        f"backbone. Train: {TRAIN_EXAMPLES:,d}-image subsample, batch {BATCH}, {EPOCHS} epochs; test: all 10,000 "
        "images. Shared 2-core CPU.",
        "",
        "| method | trainable params | last train loss | test accuracy (%) | train s |",
        "|---|---|---|---|---|",
        *rows,
        "",
    ]
    RESULTS.write_text("\n".join(lines))


if __name__ == "__main__":
    main()
