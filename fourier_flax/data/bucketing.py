"""Length-bucketed dynamic padding: batches trimmed to a small fixed set of sequence lengths.

Arrays from :func:`fourier_flax.data.tokenize_split` are padded to the task's ``max_length``. Most sentences are
far shorter, so a batch is cut to the smallest *bucket* (a length from :func:`bucket_lengths`) that holds its
longest row. A jitted step then compiles once per bucket that occurs — at most ``len(buckets)`` shapes — instead
of once per batch length, and no step pays for ``max_length`` columns of padding.

Training order: rows are shuffled (seed, epoch), cut into pools of ``pool_batches`` batches, each pool is sorted
by length and cut into batches, and the batches are shuffled again. Rows of similar length share a batch while
every epoch still sees a different mix. Evaluation sorts all rows by length and keeps every row once; each batch
carries its rows' original ``index``.

Example::

  buckets = bucket_lengths(128)  # (32, 64, 128)
  for batch in bucketed_batches(train, 32, buckets, shuffle=True, seed=0, epoch=0, drop_remainder=True):
      batch["input_ids"].shape  # (32, 32), (32, 64) or (32, 128)
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence

import numpy as np

Arrays = dict[str, np.ndarray]
_SEQUENCE_KEYS = ("input_ids", "attention_mask", "token_type_ids", "loss_mask")


def bucket_lengths(max_length: int, smallest: int = 32) -> tuple[int, ...]:
    """Powers of two from ``smallest`` below ``max_length``, then ``max_length`` itself.

    Example::

      bucket_lengths(128), bucket_lengths(48), bucket_lengths(16)
      # ((32, 64, 128), (32, 48), (16,))
    """
    if max_length < 1 or smallest < 1:
        raise ValueError(f"max_length and smallest must be >= 1, got {max_length} and {smallest}.")
    lengths, size = [], smallest
    while size < max_length:
        lengths.append(size)
        size *= 2
    return (*lengths, max_length)


def sequence_lengths(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Real tokens per row, ``(N,)`` int, from ``attention_mask`` ``(N, L)`` (right padding)."""
    return np.asarray(arrays["attention_mask"]).sum(axis=1).astype(np.int64)


def _bucket_for(length: int, buckets: Sequence[int]) -> int:
    for bucket in buckets:
        if length <= bucket:
            return bucket
    raise ValueError(f"a row of {length} tokens is longer than the largest bucket {buckets[-1]}.")


def _take(arrays: Mapping[str, np.ndarray], rows: np.ndarray, batch_size: int, buckets: Sequence[int]) -> Arrays:
    """Rows ``rows`` cut to their bucket's length and zero-padded to ``batch_size`` rows; ``mask``, ``index``."""
    width = _bucket_for(int(sequence_lengths({"attention_mask": arrays["attention_mask"][rows]}).max()), buckets)
    pad = batch_size - len(rows)
    batch = {}
    for key, value in arrays.items():
        taken = value[rows][:, :width] if key in _SEQUENCE_KEYS else value[rows]
        batch[key] = np.concatenate([taken, np.zeros((pad, *taken.shape[1:]), taken.dtype)]) if pad else taken
    batch["mask"] = np.arange(batch_size) < len(rows)
    batch["index"] = np.concatenate([rows, np.full(pad, -1, rows.dtype)])
    return batch


def bucketed_batches(
    arrays: Mapping[str, np.ndarray],
    batch_size: int,
    buckets: Sequence[int],
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    drop_remainder: bool = False,
    pool_batches: int = 50,
) -> Iterator[Arrays]:
    """One epoch of batches whose sequence axis is cut to a bucket length.

    Args:
      arrays: ``input_ids``/``attention_mask``/``token_type_ids`` ``(N, max_length)`` and per-row arrays.
      batch_size: rows per batch (a partial last batch is zero-padded, or dropped with ``drop_remainder``).
      buckets: increasing sequence lengths; the last must be ≥ every row's length.
      shuffle: training order (pools sorted by length, batches shuffled) or evaluation order (sorted by length).
      seed / epoch: the shuffle (the same pair always gives the same batches).
      drop_remainder: drop partial batches (training).
      pool_batches: batches per length-sorted pool when shuffling.

    Yields:
      ``{key: (batch_size, bucket) or (batch_size, ...)}`` plus ``mask`` ``(batch_size,)`` (False on padding
      rows) and ``index`` ``(batch_size,)`` (each row's position in ``arrays``, -1 on padding rows).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be positive, got {batch_size}.")
    lengths = sequence_lengths(arrays)
    n = len(lengths)
    if n and lengths.max() > buckets[-1]:
        raise ValueError(f"rows of up to {lengths.max()} tokens, but the largest bucket is {buckets[-1]}.")
    if not shuffle:
        order = np.argsort(lengths, kind="stable")
        groups = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    else:
        rng = np.random.default_rng([seed, epoch])
        order = rng.permutation(n)
        pool = batch_size * pool_batches
        groups = []
        for start in range(0, n, pool):
            chunk = order[start : start + pool]
            chunk = chunk[np.argsort(lengths[chunk], kind="stable")]
            groups += [chunk[i : i + batch_size] for i in range(0, len(chunk), batch_size)]
        groups = [groups[i] for i in rng.permutation(len(groups))]
    for rows in groups:
        if drop_remainder and len(rows) < batch_size:
            continue
        yield _take(arrays, rows, batch_size, buckets)


def bucketed_batch_count(arrays: Mapping[str, np.ndarray], batch_size: int, pool_batches: int = 50) -> int:
    """Full batches per shuffled epoch of :func:`bucketed_batches` with ``drop_remainder=True``."""
    n, pool = len(arrays["attention_mask"]), batch_size * pool_batches
    return (n // pool) * pool_batches + (n % pool) // batch_size
