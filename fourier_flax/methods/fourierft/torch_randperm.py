"""NumPy reproduction of ``torch.randperm`` on the CPU, as Hugging Face PEFT uses it to place FourierFT entries.

PEFT draws a layer's entries with
``torch.randperm(out * in, generator=torch.Generator().manual_seed(seed))[:n]``. For ``out * in`` below
``2**32 / 20`` torch's CPU kernel is a forward Fisher–Yates shuffle driven by one 32-bit MT19937 draw per step
(``swap(r[i], r[i + draw % (N - i)])``), and the generator is MT19937 seeded with the low 32 bits of ``seed``.
Position ``i`` is final after step ``i``, so the first ``n`` positions need only ``n`` steps: this module replays
them on a sparse map of the swapped positions, in ``O(n)`` time and memory instead of ``O(out * in)``.

Larger grids use torch's other branch (an inside-out shuffle over 64-bit draws, whose prefix depends on every
step); there :func:`randperm_prefix` calls torch if it is installed and otherwise raises.

Example::

  randperm_prefix(10, 3, seed=0)  # == torch.randperm(10, generator=Generator().manual_seed(0))[:3]
  # array([...])
"""

from __future__ import annotations

import numpy as np

# Sizes from here on take torch's 64-bit inside-out branch (ATen ``randperm_cpu``).
TORCH_SMALL_RANDPERM_LIMIT = (2**32 - 1) // 20


def mt19937_uint32(seed: int, count: int) -> np.ndarray:
    """The first ``count`` raw 32-bit outputs of MT19937 seeded as ``torch.Generator().manual_seed(seed)``."""
    bit_generator = np.random.MT19937(0)
    bit_generator._legacy_seeding(seed & 0xFFFFFFFF)  # init_genrand(seed): the seeding torch's mt19937 uses.
    return bit_generator.random_raw(count).astype(np.uint64)


def randperm_prefix(size: int, n: int, seed: int) -> np.ndarray:
    """The first ``n`` values of ``torch.randperm(size, generator=torch.Generator().manual_seed(seed))``.

    Args:
      size: length of the permutation (``out_features * in_features`` in PEFT).
      n: how many leading values to return, ``1 <= n <= size``.
      seed: the generator seed, ``>= 0``.

    Returns:
      int64 array of shape ``(n,)``.
    """
    if not 1 <= n <= size:
        raise ValueError(f"randperm_prefix needs 1 <= n <= size, got n={n} and size={size}.")
    if seed < 0:
        raise ValueError(f"seed must be >= 0 (torch.Generator.manual_seed semantics), got {seed}.")
    if size >= TORCH_SMALL_RANDPERM_LIMIT:
        return _torch_randperm_prefix(size, n, seed)
    draws = mt19937_uint32(seed, n)
    swapped: dict[int, int] = {}
    prefix = np.empty(n, np.int64)
    for i in range(n):
        j = i + int(draws[i] % np.uint64(size - i))
        value_j = swapped.get(j, j)
        swapped[j] = swapped.get(i, i)
        prefix[i] = value_j
    return prefix


def _torch_randperm_prefix(size: int, n: int, seed: int) -> np.ndarray:
    try:
        import torch
    except ImportError as error:
        raise ImportError(
            f"A PEFT-exact entry set on a grid of {size} >= {TORCH_SMALL_RANDPERM_LIMIT} cells uses torch's "
            "64-bit randperm branch, which fourier_flax does not replay in NumPy. Install torch "
            "(CPU build) or use entry_sampling='uniform'."
        ) from error
    generator = torch.Generator().manual_seed(seed)
    return torch.randperm(size, generator=generator)[:n].numpy().astype(np.int64)
