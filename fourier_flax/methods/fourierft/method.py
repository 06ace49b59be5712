"""FourierFT (Gao et al., ICML 2024): ``ΔW = alpha · Re(ifft2(F))``, ``F`` zero but at ``n`` fixed entries.

Leaves: ``fourierft_spectrum`` ``(*stack, n)`` float32, N(0, 1) (the paper, PEFT) or zeros (``init_weights``).
The entry set ``E`` is not stored: it is redrawn from the config (:func:`spectral_entries`) and a checkpoint
records its sha256 so a different draw is caught on load. For ``nn.Dense`` and GPT-2's ``FlaxConv1D`` the layer
may run :func:`fourier_flax.backward.adapted_matmul`, whose backward never forms the weight gradient.

Example::

  E = spectral_entries(FourierFTConfig(target_modules=["query"]), (768, 768), 1000)  # (2, 1000) int32
"""

from __future__ import annotations

import math
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from fourier_flax.methods.bank import base_matmul, selected_rows
from fourier_flax.methods.base import PEFT_TARGETING_FIELDS, AdapterMethod, Shape2D
from fourier_flax.methods.fourierft import backward
from fourier_flax.methods.fourierft import sharding as fourierft_sharding
from fourier_flax.methods.fourierft.config import SPECTRUM, FourierFTConfig
from fourier_flax.methods.fourierft.entries import entries_digest, kernel_grid, spectral_entries
from fourier_flax.methods.fourierft.mesh_matmul import matmul_layout, mesh_adapted_matmul
from fourier_flax.methods.fourierft.spectral import delta_w
from fourier_flax.methods.fourierft.spectral_matmul import spectral_matmul


class FourierFTMethod(AdapterMethod):
    name: ClassVar[str] = "fourierft"
    config_type: ClassVar[type] = FourierFTConfig
    leaf_names: ClassVar[tuple[str, ...]] = (SPECTRUM,)
    leaf_ndim: ClassVar[int] = 1

    def init_leaves(self, config, path, view, stack_shape, rng, *, kernel, modes, shared=None):
        n = config.n_frequency_for(path)
        if n > view[0] * view[1]:
            raise ValueError(
                f"module {path!r}: n_frequency={n} exceeds the {view[0]}x{view[1]} = {view[0] * view[1]} "
                "entries of its kernel. Lower n_frequency, or set n_frequency_pattern for this module."
            )
        if config.init_weights:
            return {SPECTRUM: jnp.zeros((*stack_shape, n), jnp.float32)}
        return {SPECTRUM: jax.random.normal(rng, (*stack_shape, n), jnp.float32)}

    def delta_w(self, config, path, module, view, *, scaling=None):
        spectrum = module[SPECTRUM]
        alpha = config.scaling if scaling is None else scaling
        return delta_w(spectrum, spectral_entries(config, view, spectrum.shape[-1]), view, alpha)

    def module_record(self, config, path, module, view):
        n = int(np.shape(module[SPECTRUM])[-1])
        entries = {"rule": config.entry_sampling, "seed": config.random_loc_seed, "grid": kernel_grid(config)}
        digest = entries_digest(spectral_entries(config, view, n))
        return {"view": list(view), "n": n, "entries": {**entries, "sha256": digest}}

    def record_problems(self, config, path, record, view, *, kernel):
        problems = []
        n, wanted_n = record["n"], config.n_frequency_for(path)
        if n != wanted_n:
            problems.append(f"module {path}: stores n={n} coefficients, the config gives n={wanted_n}")
        entries = record["entries"]
        expected = {"rule": config.entry_sampling, "seed": config.random_loc_seed, "grid": kernel_grid(config)}
        for field, value in expected.items():
            if entries[field] != value:
                problems.append(f"module {path}: entries {field} is {entries[field]!r}, the config says {value!r}")
        if n <= view[0] * view[1] and entries_digest(spectral_entries(config, view, n)) != entries["sha256"]:
            problems.append(
                f"module {path}: the entry set drawn here differs from the one the adapter was trained on (sha256 "
                f"mismatch; {entries['rule']!r} sampling, seed {entries['seed']}, view {view})"
            )
        return problems

    def parameter_count(self, config, path, view):
        return config.n_frequency_for(path)

    def sharded_merged_kernel(self, config, path, module):
        return fourierft_sharding.sharded_merged_kernel(config, path, module)

    peft_type: ClassVar[str] = "FOURIERFT"
    peft_fields: ClassVar[tuple[str, ...]] = (
        "n_frequency",
        "scaling",
        "random_loc_seed",
        "n_frequency_pattern",
        "init_weights",
        *PEFT_TARGETING_FIELDS,
    )

    def peft_unsupported(self, config):
        if config.entry_sampling == "peft":
            return None
        return (
            f"PEFT draws its entries with torch.randperm (entry_sampling='peft'); an adapter trained with "
            f"entry_sampling={config.entry_sampling!r} has other entries, which PEFT's FourierFT cannot represent"
        )

    peft_suffixes: ClassVar[tuple[str, ...]] = (SPECTRUM,)

    def config_from_peft(self, fields):
        return FourierFTConfig(**{k: fields[k] for k in self.peft_fields if k in fields}, entry_sampling="peft")

    def leaves_from_peft(self, config, path, tensors, view, shared):
        return {SPECTRUM: np.asarray(tensors[SPECTRUM], np.float32)}

    def peft_module_tensors(self, config, path, module):
        spectrum = np.asarray(module[SPECTRUM], np.float32)
        if spectrum.ndim != 1:
            raise ValueError(
                f"module {path}: a stacked spectrum of shape {spectrum.shape} (layers under nn.scan); PEFT keeps "
                "one (n,) spectrum per named layer, so this adapter has no PEFT equivalent."
            )
        return {SPECTRUM: spectrum}

    def matmul(self, config, alpha, path, params, x, *, precision, dtype, transposed=False):
        """``x @ (W0 + ΔW)``: under :func:`fourier_flax.mesh.use_mesh` by
        :func:`fourier_flax.methods.fourierft.mesh_matmul.mesh_adapted_matmul`; otherwise by
        :func:`fourier_flax.backward.adapted_matmul` when ``config.backward`` asks for the spectral backward,
        else None (the dense path). ``transposed``: the kernel is stored ``(out, in)`` (GPT-2's ``FlaxConv1D``)."""
        kernel, spectrum = params["kernel"], params[SPECTRUM]
        if jnp.ndim(kernel) != 2 or jnp.ndim(spectrum) != 1:
            return None
        shape = tuple(kernel.shape)
        entries = spectral_entries(config, shape, spectrum.shape[-1])
        layout = None if transposed else _mesh_layout(path, kernel, spectrum)
        if layout is not None:
            return mesh_adapted_matmul(
                x, kernel, spectrum, entries, shape, alpha, layout, precision=precision, dtype=dtype
            )
        if not _spectral_wanted(config, shape, x, spectrum.shape[-1]):
            return None
        if transposed:  # y = x @ (W0 + ΔW).T, and ΔW(E, shape).T == ΔW(E[::-1], shape[::-1])
            kernel, entries, shape = kernel.T, entries[::-1], shape[::-1]
        return backward.adapted_matmul(x, kernel, spectrum, entries, shape, alpha, precision=precision, dtype=dtype)

    bank_scale: ClassVar[tuple[str, str]] = ("scaling", SPECTRUM)

    def bank_matmul(self, config, alpha, path, params, x, ids, *, precision, dtype):
        """``x @ W0`` plus each example's ``x @ ΔW`` straight from its own spectrum (:func:`spectral_matmul`)."""
        kernel, bank = params["kernel"], params[SPECTRUM]
        shape = tuple(kernel.shape)
        entries = spectral_entries(config, shape, bank.shape[-1])
        y = base_matmul(x, kernel, precision=precision, dtype=dtype)
        return y + spectral_matmul(x, selected_rows(bank, ids), entries, shape, alpha).astype(y.dtype)


def _mesh_layout(path: str, kernel: jax.Array, spectrum: jax.Array):
    """The active mesh strategy's layout for this layer (:func:`fourier_flax.mesh.use_mesh`), or None."""
    if jnp.ndim(kernel) != 2 or jnp.ndim(spectrum) != 1:
        return None
    return matmul_layout(path, tuple(kernel.shape))


def _spectral_wanted(config: FourierFTConfig, shape: Shape2D, inputs: jax.Array, n: int) -> bool:
    """``config.backward`` "spectral", or "auto" where :func:`fourier_flax.backward.choose_backward`
    measured the spectral backward faster for this kernel, token count and ``n``."""
    if config.backward == "dense":
        return False
    if config.backward == "auto":
        tokens = math.prod(jnp.shape(inputs)[:-1])
        return backward.choose_backward(shape, tokens, n) != "dense"
    return True
