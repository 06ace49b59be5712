"""Where a FourierFT spectrum holds its coefficients: the entry samplers.

An entry set ``E`` is an int32 array of shape ``(2, n)``: row ``E[0, l]`` and column ``E[1, l]`` of coefficient
``l`` on the ``d1 × d2`` frequency grid of a kernel. It is sampled once from a seed and shared by every layer of
that shape. Three rules:

* :func:`uniform_entries` — uniform without replacement;
* :func:`frequency_biased_entries` — the paper's frequency bias (§3.1, Fig. 3): probability from a Gaussian
  band-pass filter ``H(D) = exp(-((D² - f_c²) / (D W))²)`` of the distance ``D`` of a frequency to the centre of the
  centred (``fftshift``-ed) spectrum, without replacement;
* :func:`peft_entries` — exactly the entries Hugging Face PEFT uses for the same layer, seed and ``n``.

Layouts. PEFT works on PyTorch's ``(out, in)`` weight and samples ``idx = randperm(out*in)[:n]``,
``row = idx // in``, ``col = idx % in``. A Flax ``nn.Dense`` kernel is ``(in, out)`` — the transpose — and
``ifft2(F).T == ifft2(F.T)``, so the same ΔW on a Flax kernel has ``E = (col, row)``: pass
``grid="in_out"`` (the default). Hugging Face's Flax GPT-2 ``FlaxConv1D`` stores ``(out, in)``: ``grid="out_in"``.

Example::

  E = peft_entries((768, 768), n=1000, seed=777)  # a Flax (in, out) query kernel of BERT-base
  E.shape, E.dtype
  # ((2, 1000), dtype('int32'))
"""

from __future__ import annotations

import functools
import hashlib
from typing import Any, Literal

import numpy as np

from fourier_flax.methods.fourierft.torch_randperm import randperm_prefix

Shape2D = tuple[int, int]

Grid = Literal["in_out", "out_in"]


def check_entry_count(shape: tuple[int, int], n: int) -> None:
    """Raises a ValueError unless ``1 <= n <= d1 * d2``."""
    d1, d2 = shape
    if not 1 <= n <= d1 * d2:
        raise ValueError(
            f"n={n} spectral entries do not fit a {d1}x{d2} kernel: n must be between 1 and d1*d2={d1 * d2}. "
            "Lower n_frequency (or n_frequency_pattern for this module)."
        )


def _as_entries(flat_index: np.ndarray, d2: int) -> np.ndarray:
    rows, cols = np.divmod(np.asarray(flat_index, np.int64), d2)
    return np.stack([rows, cols]).astype(np.int32)


def uniform_entries(shape: tuple[int, int], n: int, seed: int) -> np.ndarray:
    """``n`` distinct entries drawn uniformly on the ``d1 × d2`` grid. Returns int32 ``(2, n)``."""
    check_entry_count(shape, n)
    flat = np.random.default_rng(seed).choice(shape[0] * shape[1], size=n, replace=False)
    return _as_entries(flat, shape[1])


def signed_frequencies(size: int) -> np.ndarray:
    """Signed frequency of each FFT index: ``0, 1, …, -2, -1`` (its offset from the centre after fftshift)."""
    return np.rint(np.fft.fftfreq(size) * size).astype(np.int64)


def centre_distance(shape: tuple[int, int]) -> np.ndarray:
    """Distance ``D`` of every FFT-layout grid cell to the centre of the centred spectrum, float64 ``(d1, d2)``."""
    u = signed_frequencies(shape[0]).astype(np.float64)
    v = signed_frequencies(shape[1]).astype(np.float64)
    return np.hypot(u[:, None], v[None, :])


def bandpass_log_weight(shape: tuple[int, int], center_frequency: float, bandwidth: float) -> np.ndarray:
    """``log H`` of the Gaussian band-pass filter on the FFT-layout grid, float64 ``(d1, d2)``.

    ``H(D) = exp(-((D² - f_c²) / (D W))²)``; at ``D = 0`` the limit is 1 for ``f_c = 0`` and 0 otherwise.
    """
    if bandwidth <= 0:
        raise ValueError(f"bandwidth W must be > 0, got {bandwidth}.")
    if center_frequency < 0:
        raise ValueError(f"center_frequency f_c must be >= 0, got {center_frequency}.")
    distance = centre_distance(shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_weight = -(((distance**2 - center_frequency**2) / (distance * bandwidth)) ** 2)
    log_weight[distance == 0] = 0.0 if center_frequency == 0 else -np.inf
    return log_weight


def bandpass_probability(shape: tuple[int, int], center_frequency: float, bandwidth: float) -> np.ndarray:
    """The per-cell probability of the first draw under the frequency bias, float64 ``(d1, d2)``, sums to 1.

    FFT layout; ``np.fft.fftshift`` it to plot the centred spectrum.
    """
    weight = np.exp(bandpass_log_weight(shape, center_frequency, bandwidth))
    return weight / weight.sum()


def frequency_biased_entries(
    shape: tuple[int, int], n: int, seed: int, *, center_frequency: float, bandwidth: float
) -> np.ndarray:
    """``n`` distinct entries drawn with probability ∝ the Gaussian band-pass filter. Returns int32 ``(2, n)``.

    Successive sampling without replacement (each draw ∝ ``H`` over the cells not yet drawn), done exactly in one
    pass with the Gumbel-top-k trick.
    """
    check_entry_count(shape, n)
    log_weight = bandpass_log_weight(shape, center_frequency, bandwidth).ravel()
    reachable = int(np.count_nonzero(np.isfinite(log_weight)))
    if reachable < n:
        raise ValueError(
            f"The band-pass filter (f_c={center_frequency}, W={bandwidth}) gives only {reachable} cells of the "
            f"{shape[0]}x{shape[1]} grid a non-zero probability, fewer than n={n}. Widen W or lower n."
        )
    keys = log_weight + np.random.default_rng(seed).gumbel(size=log_weight.shape)
    top = np.argpartition(-keys, n - 1)[:n]
    return _as_entries(top[np.argsort(-keys[top])], shape[1])


def peft_entries(shape: tuple[int, int], n: int, seed: int, *, grid: Grid = "in_out") -> np.ndarray:
    """The entries Hugging Face PEFT's FourierFT uses for this kernel, seed and ``n``. Returns int32 ``(2, n)``.

    Args:
      shape: the kernel's 2-D grid ``(d1, d2)`` as stored: ``(in, out)`` for Flax ``nn.Dense``
        (``grid="in_out"``), ``(out, in)`` for PyTorch weights and Flax GPT-2 ``FlaxConv1D`` (``grid="out_in"``).
      n: number of entries (PEFT's ``n_frequency``).
      seed: PEFT's ``random_loc_seed``.
      grid: which of the two layouts ``shape`` is.
    """
    check_entry_count(shape, n)
    out_features, in_features = shape if grid == "out_in" else shape[::-1]
    flat = randperm_prefix(out_features * in_features, n, seed)
    out_in = _as_entries(flat, in_features)
    return out_in if grid == "out_in" else out_in[::-1].copy()


def kernel_grid(config: Any) -> Grid:
    """Layout of the 2-D kernel view: ``"out_in"`` under ``fan_in_fan_out`` (GPT-2's Conv1D), else ``"in_out"``."""
    return "out_in" if config.fan_in_fan_out else "in_out"


@functools.lru_cache(maxsize=256)
def _cached_entries(shape, n, seed, rule, grid, center_frequency, bandwidth) -> np.ndarray:
    if rule == "peft":
        found = peft_entries(shape, n, seed, grid=grid)
    elif rule == "uniform":
        found = uniform_entries(shape, n, seed)
    else:
        found = frequency_biased_entries(shape, n, seed, center_frequency=center_frequency, bandwidth=bandwidth)
    found.setflags(write=False)  # shared by every caller of the cache
    return found


def spectral_entries(config: Any, shape: Shape2D, n: int) -> np.ndarray:
    """The entry set ``E`` (int32 ``(2, n)``, read-only) of a ``shape`` kernel view under ``config`` (a
    :class:`~fourier_flax.methods.fourierft.FourierFTConfig`); memoised."""
    return _cached_entries(
        (int(shape[0]), int(shape[1])),
        int(n),
        config.random_loc_seed,
        config.entry_sampling,
        kernel_grid(config),
        config.center_frequency,
        config.bandwidth,
    )


def entries_digest(entries: np.ndarray) -> str:
    """sha256 of an entry set as little-endian int32 in C order."""
    return hashlib.sha256(np.ascontiguousarray(entries, "<i4").tobytes()).hexdigest()
