"""FourierFT (Gao et al., ICML 2024), everything in one place: ``ΔW = alpha · Re(ifft2(F))``.

* :mod:`~fourier_flax.methods.fourierft.config` — :class:`FourierFTConfig` (PEFT's fields and defaults);
* :mod:`~fourier_flax.methods.fourierft.spectral` — :func:`delta_w`, the float32 update from ``(c, E)``;
* :mod:`~fourier_flax.methods.fourierft.spectral_matmul` — :func:`spectral_matmul`, ``x @ ΔW`` without forming
  ``ΔW`` (per-example coefficients allowed);
* :mod:`~fourier_flax.methods.fourierft.backward` — :func:`adapted_matmul`, ``x @ (W0 + ΔW)`` whose backward
  never forms the ``d1 × d2`` weight gradient, and :func:`choose_backward`;
* :mod:`~fourier_flax.methods.fourierft.entries` — the entry set ``E`` (PEFT's ``torch.randperm`` replayed in
  :mod:`~fourier_flax.methods.fourierft.torch_randperm`, uniform, or the paper's frequency bias);
* :mod:`~fourier_flax.methods.fourierft.sharding` and :mod:`~fourier_flax.methods.fourierft.mesh_matmul` — ΔW and
  the adapted matmul built block-local on a device mesh;
* :mod:`~fourier_flax.methods.fourierft.method` — :class:`FourierFTMethod`, its entry in the method registry.

Example::

  from fourier_flax.methods import fourierft
  E = fourierft.peft_entries((768, 768), 1000, seed=777)  # PEFT's entries, (2, 1000)
  fourierft.delta_w(jax.numpy.ones(1000), E, (768, 768), 150.0).shape
  # (768, 768)
"""

from fourier_flax.methods.fourierft.backward import adapted_matmul, choose_backward
from fourier_flax.methods.fourierft.config import SPECTRUM, FourierFTConfig
from fourier_flax.methods.fourierft.entries import (
    bandpass_probability,
    frequency_biased_entries,
    peft_entries,
    spectral_entries,
    uniform_entries,
)
from fourier_flax.methods.fourierft.mesh_matmul import MatmulLayout, mesh_adapted_matmul
from fourier_flax.methods.fourierft.method import FourierFTMethod
from fourier_flax.methods.fourierft.sharding import sharded_delta_w
from fourier_flax.methods.fourierft.spectral import delta_w, delta_w_reference
from fourier_flax.methods.fourierft.spectral_matmul import spectral_matmul

__all__ = [
    "SPECTRUM",
    "FourierFTConfig",
    "FourierFTMethod",
    "MatmulLayout",
    "adapted_matmul",
    "bandpass_probability",
    "choose_backward",
    "delta_w",
    "delta_w_reference",
    "frequency_biased_entries",
    "mesh_adapted_matmul",
    "peft_entries",
    "sharded_delta_w",
    "spectral_entries",
    "spectral_matmul",
    "uniform_entries",
]
