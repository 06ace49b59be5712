"""Length-bucketed batches: every row once, each batch cut to the smallest bucket that holds it, few shapes."""

import numpy as np
import pytest

from fourier_flax.data.bucketing import bucket_lengths, bucketed_batch_count, bucketed_batches


def _arrays(n: int, max_length: int = 64, seed: int = 0):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, max_length + 1, n)
    mask = (np.arange(max_length)[None] < lengths[:, None]).astype(np.int32)
    ids = rng.integers(1, 1000, (n, max_length)).astype(np.int32) * mask
    return {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(mask), "labels": np.arange(n)}


def test_bucket_lengths():
    assert bucket_lengths(128) == (32, 64, 128)
    assert bucket_lengths(48) == (32, 48)
    assert bucket_lengths(16) == (16,)
    assert bucket_lengths(256, smallest=16) == (16, 32, 64, 128, 256)
    with pytest.raises(ValueError):
        bucket_lengths(0)


def test_evaluation_order_keeps_every_row_once_with_its_tokens():
    arrays = _arrays(103)
    buckets = bucket_lengths(64, smallest=16)
    seen, shapes = [], set()
    for batch in bucketed_batches(arrays, 10, buckets, shuffle=False):
        rows = batch["index"][batch["mask"]]
        seen += rows.tolist()
        width = batch["input_ids"].shape[1]
        shapes.add(width)
        longest = arrays["attention_mask"][rows].sum(1).max()
        assert width == min(b for b in buckets if b >= longest)  # the smallest bucket that holds the batch
        np.testing.assert_array_equal(batch["input_ids"][batch["mask"]], arrays["input_ids"][rows, :width])
        np.testing.assert_array_equal(batch["labels"][batch["mask"]], rows)  # labels travel with their rows
        assert not batch["attention_mask"][~batch["mask"]].any()
        assert (batch["index"][~batch["mask"]] == -1).all()
    assert sorted(seen) == list(range(103))
    assert shapes <= set(buckets)


def test_training_order_is_seeded_full_and_groups_similar_lengths():
    arrays = _arrays(1000)
    buckets = bucket_lengths(64, smallest=16)
    epoch0 = list(bucketed_batches(arrays, 8, buckets, shuffle=True, seed=3, epoch=0, drop_remainder=True))
    again = list(bucketed_batches(arrays, 8, buckets, shuffle=True, seed=3, epoch=0, drop_remainder=True))
    epoch1 = list(bucketed_batches(arrays, 8, buckets, shuffle=True, seed=3, epoch=1, drop_remainder=True))
    assert len(epoch0) == bucketed_batch_count(arrays, 8) == 125
    assert [b["index"].tolist() for b in epoch0] == [b["index"].tolist() for b in again]
    assert [b["index"].tolist() for b in epoch0] != [b["index"].tolist() for b in epoch1]
    rows = np.concatenate([b["index"] for b in epoch0])
    assert sorted(rows.tolist()) == list(range(1000)) and all(b["mask"].all() for b in epoch0)
    # Sorting within pools: the padded tokens are far fewer than with random batches cut to the same buckets.
    padded = sum(b["input_ids"].size for b in epoch0)
    rng = np.random.default_rng(0)
    random_batches = rng.permutation(1000).reshape(125, 8)
    lengths = arrays["attention_mask"].sum(1)
    random_padded = sum(8 * min(x for x in buckets if x >= lengths[r].max()) for r in random_batches)
    assert padded < 0.8 * random_padded


def test_drop_remainder_and_too_long_rows():
    arrays = _arrays(21, max_length=32)
    assert len(list(bucketed_batches(arrays, 10, (32,), shuffle=True, drop_remainder=True))) == 2
    assert len(list(bucketed_batches(arrays, 10, (32,), shuffle=False))) == 3
    with pytest.raises(ValueError, match="largest bucket"):
        next(bucketed_batches(_arrays(5, max_length=64), 2, (16, 32), shuffle=False))
