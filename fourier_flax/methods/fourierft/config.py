"""FourierFT's configuration: :class:`FourierFTConfig`, with Hugging Face PEFT's field names and defaults.

Example::

  config = FourierFTConfig(target_modules=["query", "value"], n_frequency=1000, scaling=150.0)
  config.n_frequency_for("encoder.layer.0.attention.self.query")
  # 1000
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal

from fourier_flax import targeting
from fourier_flax.targeting import Bias, TargetingConfig

EntrySampling = Literal["peft", "uniform", "frequency_bias"]
Backward = Literal["auto", "dense", "spectral"]

# The leaf FourierFT adds beside a targeted kernel: its coefficients c, (*stack, n) float32.
SPECTRUM = "fourierft_spectrum"


@dataclasses.dataclass(frozen=True, kw_only=True)
class FourierFTConfig(TargetingConfig):
    """FourierFT hyperparameters, with Hugging Face PEFT's ``FourierFTConfig`` field names and defaults.

    Attributes:
      n_frequency: spectral coefficients per adapted layer (``n``).
      scaling: ``alpha`` in ``ΔW = alpha · Re(ifft2(F))``.
      random_loc_seed: seed of the entry set ``E``.
      target_modules: names matched by suffix (``["query", "value"]``) or one full-match regex.
      exclude_modules: the same kinds of pattern, removed from the targets.
      n_frequency_pattern: per-module ``n`` overrides, keys matched as PEFT (``(.*\\.)?key$``).
      layers_to_transform / layers_pattern: restrict to some layer indices.
      init_weights: False draws coefficients from N(0, 1) (the paper and PEFT); True starts at zero.
      bias: which biases train: "none", "all", or "fourier_only" (those of adapted layers).
      modules_to_save: modules trained in full (e.g. the classifier head).
      fan_in_fan_out: PEFT's flag for PyTorch layers storing ``(in, out)`` weights (GPT-2's Conv1D).
      entry_sampling: how ``E`` is drawn — "peft" (exactly PEFT's entries, so adapters move between frameworks),
        "uniform", or "frequency_bias" (the paper's Gaussian band-pass, needs ``center_frequency``/``bandwidth``).
      center_frequency / bandwidth: ``f_c`` and ``W`` of the frequency bias.
      backward: how ``dL/dc`` is computed — "dense" (autodiff through ``W0 + ΔW``), "spectral" (the custom VJP
        that never forms the ``d1 × d2`` weight gradient) or "auto" (chosen by shape and token count).
      kernel_in_axes: for ``nn.DenseGeneral`` kernels with several contracted axes, module pattern → how many
        leading kernel axes are contracted (default 1): the 2-D view is ``(prod(shape[:k]), prod(shape[k:]))``.
    """

    n_frequency: int = 1000
    scaling: float = 150.0
    random_loc_seed: int = 777
    n_frequency_pattern: Mapping[str, int] = dataclasses.field(default_factory=dict)
    init_weights: bool = False
    bias: Bias = "none"
    entry_sampling: EntrySampling = "peft"
    center_frequency: float | None = None
    bandwidth: float | None = None
    backward: Backward = "auto"

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "n_frequency_pattern", dict(self.n_frequency_pattern))
        for name, n in {"n_frequency": self.n_frequency, **self.n_frequency_pattern}.items():
            if not isinstance(n, int) or n < 1:
                raise ValueError(f"n_frequency must be a positive int, got {n!r} for {name!r}.")
        if self.random_loc_seed < 0:
            raise ValueError(f"random_loc_seed must be >= 0, got {self.random_loc_seed}.")
        if self.bias not in ("none", "all", "fourier_only"):
            raise ValueError(f"bias must be 'none', 'all' or 'fourier_only', got {self.bias!r}.")
        if self.entry_sampling not in ("peft", "uniform", "frequency_bias"):
            raise ValueError(
                f"entry_sampling must be 'peft', 'uniform' or 'frequency_bias', got {self.entry_sampling!r}."
            )
        biased = self.entry_sampling == "frequency_bias"
        if biased and (self.center_frequency is None or self.bandwidth is None):
            raise ValueError("entry_sampling='frequency_bias' needs center_frequency (f_c) and bandwidth (W).")
        if not biased and (self.center_frequency is not None or self.bandwidth is not None):
            raise ValueError(
                "center_frequency/bandwidth only apply to entry_sampling='frequency_bias'; "
                f"got entry_sampling={self.entry_sampling!r}."
            )
        if biased and (self.bandwidth <= 0 or self.center_frequency < 0):
            raise ValueError(
                f"frequency bias needs bandwidth > 0 and center_frequency >= 0, got W={self.bandwidth}, "
                f"f_c={self.center_frequency}."
            )
        if self.backward not in ("auto", "dense", "spectral"):
            raise ValueError(f"backward must be 'auto', 'dense' or 'spectral', got {self.backward!r}.")

    def n_frequency_for(self, path: str) -> int:
        """``n`` for the module at ``path`` (``n_frequency_pattern`` first, then ``n_frequency``)."""
        return targeting.pattern_value(path, self.n_frequency_pattern, self.n_frequency)
