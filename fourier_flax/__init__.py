"""fourier_flax: FourierFT (Gao et al., ICML 2024) for JAX/Flax."""

from fourier_flax.entries import (
    bandpass_probability,
    frequency_biased_entries,
    peft_entries,
    uniform_entries,
)
from fourier_flax.spectral import delta_w, delta_w_reference

__version__ = "0.1.0"

__all__ = [
    "bandpass_probability",
    "delta_w",
    "delta_w_reference",
    "frequency_biased_entries",
    "peft_entries",
    "uniform_entries",
]
