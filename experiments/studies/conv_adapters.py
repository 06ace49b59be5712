"""Adapters on convolutions: FourierFT, FLoRA and LoRA fine-tuning a small CNN pretrained on other classes.

Command::

  .venv/bin/python experiments/studies/conv_adapters.py        # ~10 min on this 2-core CPU (shared); resumable

A 3-conv CNN (3x3 convs of 32, 64 and 64 channels, the last one grouped in 4, then global pooling and a linear head)
is pretrained on real Fashion-MNIST classes 0-4 (30,000 images, 3 epochs, Adam 1e-3; cached in
``runs/conv_adapters/pretrained``). Each method then adapts it to classes 5-9: the three convs are adapted, a fresh
5-way head trains with it, everything else is frozen; 2 epochs of the 30,000 class-5-9 training images, batch 128,
Adam, linear decay; accuracy on the 5,000 class-5-9 test images. Seeds 0-2 (head, adapter init, data order).

* FourierFT: n = 500 per conv (100 on conv1, whose view is 9x32) on the (kh·kw·in, out) view, scaling 20, lr 0.1.
* FLoRA: ranks r = 8 on in/out and 2 on the 3x3 window (``conv=True``), s = 4 (the reference's conv example), lr 3e-3.
* LoRA: r = 4 on the same (kh·kw·in, out) view, lr 3e-3.
* head only: lr 3e-3 (the floor); full fine-tuning of every conv: lr 1e-3 (the ceiling).

Each finished run appends a record to ``experiments/results/conv_adapters_runs.jsonl``; the table (median, min,
max over seeds, trainable parameters without the head) goes to ``experiments/results/conv_adapters.md``.
"""

from __future__ import annotations

import pathlib
import sys
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp

import fourier_flax as ff
from fourier_flax.data import load_fashion_mnist
from fourier_flax.finetune.records import append_record, finished_keys, read_records
from fourier_flax.partition import merge_params, split_params

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))  # experiments/: experiment_paths
from experiment_paths import RESULTS, RUNS  # noqa: E402

PRETRAINED = RUNS / "conv_adapters" / "pretrained"
CONVS = ("conv1", "conv2", "conv3")
SEEDS = (0, 1, 2)


class SmallCNN(nn.Module):
    classes: int = 5

    @nn.compact
    def __call__(self, x):  # x (B, 28, 28, 1)
        x = nn.relu(nn.Conv(32, (3, 3), name="conv1")(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Conv(64, (3, 3), name="conv2")(x))
        x = nn.max_pool(x, (2, 2), (2, 2))
        x = nn.relu(nn.Conv(64, (3, 3), feature_group_count=4, name="conv3")(x))
        return nn.Dense(self.classes, name="head")(x.mean((1, 2)))


def subset(images, labels, classes):
    keep = np.isin(labels, classes)
    x = (images[keep].astype(np.float32) / 255.0 - 0.286) / 0.353
    return x[..., None], (labels[keep] - classes[0]).astype(np.int32)


def batches(x, y, size, seed, epoch):
    order = np.random.default_rng([seed, epoch]).permutation(len(y))
    for start in range(0, len(y) - size + 1, size):
        rows = order[start : start + size]
        yield x[rows], y[rows]


def train(apply, trainable, frozen, x, y, lr, epochs, seed, batch=128):
    steps = epochs * (len(y) // batch)
    tx = optax.adam(optax.linear_schedule(lr, 0.0, steps))
    state = tx.init(trainable)

    @jax.jit
    def step(trainable, state, xb, yb):
        def loss(trainable):
            logits = apply(merge_params(trainable, frozen), xb)
            return optax.softmax_cross_entropy_with_integer_labels(logits, yb).mean()

        value, grads = jax.value_and_grad(loss)(trainable)
        updates, state = tx.update(grads, state, trainable)
        return optax.apply_updates(trainable, updates), state, value

    for epoch in range(epochs):
        for xb, yb in batches(x, y, batch, seed, epoch):
            trainable, state, _ = step(trainable, state, xb, yb)
    return trainable


def accuracy(apply, params, x, y):
    predict = jax.jit(lambda p, xb: jnp.argmax(apply(p, xb), -1))
    hits = sum(
        int((np.asarray(predict(params, x[i : i + 500])) == y[i : i + 500]).sum()) for i in range(0, len(y), 500)
    )
    return hits / len(y)


def pretrained(train_x, train_y) -> dict:
    """The CNN trained on classes 0-4 (cached)."""
    model = SmallCNN()
    target = jax.tree.map(np.asarray, model.init(jax.random.key(0), train_x[:2]))
    if PRETRAINED.exists():
        with ocp.StandardCheckpointer() as checkpointer:
            return checkpointer.restore(PRETRAINED, target)
    params = target["params"]
    trained = train(lambda p, xb: model.apply({"params": p}, xb), params, {}, train_x, train_y, 1e-3, 3, seed=0)
    variables = {"params": jax.tree.map(np.asarray, trained)}
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(PRETRAINED, variables)
    return variables


def config_for(method: str):
    common = {"target_modules": list(CONVS), "modules_to_save": ["head"]}
    views = {name: 3 for name in CONVS}
    if method == "fourierft":
        sizes = {"n_frequency": 500, "n_frequency_pattern": {"conv1": 100}}  # conv1's view is only 9 x 32
        return ff.FourierFTConfig(scaling=20.0, kernel_in_axes=views, **sizes, **common), 0.1
    if method == "flora":
        return ff.FloraConfig(
            r=8, spatial_r=2, conv=True, scale=4.0, mode_ranks={"conv1": (2, 2, 1, 8)}, **common
        ), 3e-3
    if method == "lora":
        return ff.LoraConfig(r=4, kernel_in_axes=views, **common), 3e-3
    return None, {"head": 3e-3, "full": 1e-3}[method]


def run(method: str, seed: int, base: dict, data) -> dict:
    (train_x, train_y), (test_x, test_y) = data
    model = SmallCNN()
    head = model.init(jax.random.key(seed), train_x[:2])["params"]["head"]
    variables = {"params": {**base["params"], "head": head}}
    config, lr = config_for(method)
    if config is not None:
        variables = ff.init_adapter(variables, config, jax.random.key(seed))
        mask = ff.trainable_mask(variables, config)
    else:
        mask = jax.tree_util.tree_map_with_path(
            lambda path, _: path[1].key == "head" or (method == "full" and path[1].key in CONVS), variables
        )

    def apply(params, xb):
        if config is None:
            return model.apply(params, xb)
        with ff.intercept(config):
            return model.apply(params, xb)

    trainable, frozen = split_params(variables, mask)
    start = time.perf_counter()
    trained = train(apply, trainable, frozen, train_x, train_y, lr, 2, seed)
    params = merge_params(trained, frozen)
    head_size = sum(x.size for x in jax.tree.leaves(head))
    count = ff.trainable_parameter_summary(variables, mask)[0]
    return {
        "method": method,
        "seed": seed,
        "test_accuracy": 100 * accuracy(apply, params, test_x, test_y),
        "test_examples": len(test_y),
        "trainable_params_without_head": count - head_size,
        "lr": lr,
        "wall_s": time.perf_counter() - start,
    }


def render() -> None:
    records = read_records(RESULTS / "conv_adapters_runs.jsonl")
    lines = [
        "# Adapters on convolutions (written by experiments/studies/conv_adapters.py)",
        "",
        "Small CNN pretrained on Fashion-MNIST classes 0-4, adapted to classes 5-9 (5,000 test images).",
        "Test accuracy x100, median [min, max] over seeds; parameters without the 5-way head.",
        "",
        "| method | params | accuracy | seeds |",
        "|---|---|---|---|",
    ]
    for method in ("head", "lora", "fourierft", "flora", "full"):
        runs = [r for r in records if r["method"] == method]
        if runs:
            acc = np.array([r["test_accuracy"] for r in runs])
            lines.append(
                f"| {method} | {runs[0]['trainable_params_without_head']:,d} | {np.median(acc):.1f} "
                f"[{acc.min():.1f}, {acc.max():.1f}] | {len(acc)} |"
            )
    (RESULTS / "conv_adapters.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> int:
    images, labels = load_fashion_mnist(split="train")
    test_images, test_labels = load_fashion_mnist(split="test")
    base = pretrained(*subset(images, labels, np.arange(5)))
    data = (subset(images, labels, np.arange(5, 10)), subset(test_images, test_labels, np.arange(5, 10)))
    path = RESULTS / "conv_adapters_runs.jsonl"
    for seed in SEEDS:
        for method in ("head", "lora", "fourierft", "flora", "full"):
            if (method, seed) in finished_keys(path, ("method", "seed")):
                continue
            record = run(method, seed, base, data)
            append_record(path, record)
            print(f"{method} seed {seed}: {record['test_accuracy']:.2f}% in {record['wall_s']:.0f} s", flush=True)
    render()
    return 0


if __name__ == "__main__":
    sys.exit(main())
