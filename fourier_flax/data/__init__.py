"""Data for FourierFT fine-tuning: GLUE (local TSVs through TFDS + grain) and Fashion-MNIST.

Usage::

    from fourier_flax.data import GLUE_TASKS, batches, glue_metric, load_glue_split, tokenize_split

    task = GLUE_TASKS["rte"]
    train = tokenize_split(load_glue_split(task, "train", glue_dir), task, tokenizer, 128)
    for batch in batches(train, 32, shuffle=True, seed=0, epoch=0, drop_remainder=True):
        ...
    glue_metric(task, logits, labels)[task.metric]
"""

from fourier_flax.data.fashion_mnist import CLASS_NAMES as FASHION_MNIST_CLASSES
from fourier_flax.data.fashion_mnist import DEFAULT_FASHION_MNIST_DIR, load_fashion_mnist
from fourier_flax.data.glue import (
    GLUE_TASKS,
    GlueFormatError,
    GlueTask,
    batches,
    get_task,
    load_glue_split,
    load_official_glue_split,
    num_batches,
    subsample,
    tokenize_split,
)
from fourier_flax.data.metrics import glue_metric

__all__ = [
    "DEFAULT_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "GLUE_TASKS",
    "GlueFormatError",
    "GlueTask",
    "batches",
    "get_task",
    "glue_metric",
    "load_fashion_mnist",
    "load_glue_split",
    "load_official_glue_split",
    "num_batches",
    "subsample",
    "tokenize_split",
]
