"""FLoRA (Si et al., 2024): a Tucker "core space" update that keeps an N-d kernel's structure, conv kernels included.

A kernel with modes ``(d_1, …, d_N)`` gets a core ``G`` ``(r_1, …, r_N)`` and factors ``A_k`` ``(d_k, r_k)``:
``ΔW = s · G ×_1 A_1 ⋯ ×_N A_N``. As in the reference code the core starts at zero (so ΔW does), each factor is
Kaiming-normal with ``a = √3`` (std ``1/sqrt(2·r_k)``), and ``s`` is a plain scale (no division by rank).
Trainable per layer: ``Π r_k + Σ d_k·r_k``.

The modes are the kernel's own axes, whatever the layer: ``nn.Dense`` ``(in, out)`` (N = 2, an ``r × r`` core),
``nn.DenseGeneral`` (N-d), ``nn.Conv`` HWIO ``(kh, kw, in/groups, out)`` — so grouped and depthwise convs get
an update of exactly their kernel's shape (the reference code builds ``(out, in, kh, kw)`` and ignores groups).
``r`` is one rank for every non-spatial mode; on a conv's spatial modes ``spatial_r`` is used (the reference's
example: ``r = [16, 16, 2, 2]``, ``s = 4``); ``mode_ranks`` sets ranks per module pattern explicitly.

Leaves: ``flora_core`` ``(*stack, r_1, …, r_N)`` and ``flora_factor_<k>`` ``(*stack, d_k, r_k)``, all trained.

Example::

  config = FloraConfig(target_modules=["conv2"], r=16, spatial_r=2, scale=4.0)
  params = init_adapter(variables, config, jax.random.key(0))  # conv2 kernel (3, 3, 32, 64)
"""

from __future__ import annotations

import dataclasses
import string
from collections.abc import Mapping
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from fourier_flax import targeting
from fourier_flax.methods.base import AdapterMethod
from fourier_flax.targeting import TargetingConfig

CORE = "flora_core"
MAX_MODES = 6
FACTORS = tuple(f"flora_factor_{k}" for k in range(MAX_MODES))


@dataclasses.dataclass(frozen=True, kw_only=True)
class FloraConfig(TargetingConfig):
    """FLoRA hyperparameters.

    Attributes:
      r: rank of every non-spatial mode.
      spatial_r: rank of a conv kernel's spatial modes (kernels of 3+ modes whose last two are ``in, out``:
        every mode but the last two counts as spatial).
      scale: ``s``.
      mode_ranks: module pattern → ranks for every mode of its kernel (overrides ``r``/``spatial_r``).
      conv: the targets are convolutions (HWIO): every mode but the last two gets ``spatial_r``.
      bias: "none" or "all".
    """

    r: int = 8
    spatial_r: int = 2
    scale: float = 1.0
    mode_ranks: Mapping[str, tuple[int, ...]] = dataclasses.field(default_factory=dict)
    conv: bool = False
    bias: str = "none"

    def __post_init__(self):
        super().__post_init__()
        object.__setattr__(self, "mode_ranks", {k: tuple(v) for k, v in dict(self.mode_ranks).items()})
        for name in ("r", "spatial_r"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ValueError(f"{name} must be a positive int, got {getattr(self, name)!r}.")
        if self.bias not in ("none", "all"):
            raise ValueError(f"bias must be 'none' or 'all', got {self.bias!r}.")

    def ranks_for(self, path: str, modes: tuple[int, ...]) -> tuple[int, ...]:
        """The rank of each mode of the kernel at ``path``.

        Raises:
          ValueError: a rank exceeds its mode (naming both), or ``mode_ranks`` has the wrong length.
        """
        explicit = None
        for key, value in self.mode_ranks.items():
            if targeting.matches_module(path, (key,)):
                explicit = value
                break
        if explicit is None:
            spatial = len(modes) - 2 if self.conv else 0
            ranks = (self.spatial_r,) * spatial + (self.r,) * (len(modes) - spatial)
        else:
            ranks = explicit
            if len(ranks) != len(modes):
                raise ValueError(
                    f"module {path!r}: mode_ranks gives {len(ranks)} ranks for a kernel with modes {modes}."
                )
        too_big = [(k, rank, mode) for k, (rank, mode) in enumerate(zip(ranks, modes, strict=True)) if rank > mode]
        if too_big:
            details = ", ".join(f"mode {k}: rank {rank} > size {mode}" for k, rank, mode in too_big)
            fitted = tuple(min(rank, mode) for rank, mode in zip(ranks, modes, strict=True))
            raise ValueError(
                f"module {path!r}: FLoRA ranks {ranks} do not fit its kernel modes {modes} ({details}). Lower r / "
                f"spatial_r, or set mode_ranks={{{path.split('.')[-1]!r}: {fitted}}}."
            )
        return tuple(ranks)


class FloraMethod(AdapterMethod):
    name: ClassVar[str] = "flora"
    config_type: ClassVar[type] = FloraConfig
    leaf_names: ClassVar[tuple[str, ...]] = (CORE, *FACTORS)
    leaf_ndim: ClassVar[int] = 0  # unused: stacked_layers counts the factors
    uses_view: ClassVar[bool] = False

    def leaves_for(self, config):
        return (CORE,)  # marks an adapted module; its flora_factor_<k> leaves (one per kernel mode) come along

    def trained_leaves_for(self, config):
        return (CORE, *FACTORS)

    def stacked_layers(self, module):
        return jnp.ndim(module[CORE]) - sum(1 for name in FACTORS if name in module)

    def init_leaves(self, config, path, view, stack_shape, rng, *, kernel, modes, shared=None):
        if len(modes) > MAX_MODES:
            raise ValueError(f"module {path!r}: FLoRA supports kernels of up to {MAX_MODES} modes, got {modes}.")
        ranks = config.ranks_for(path, modes)
        keys = jax.random.split(rng, len(modes))
        leaves = {CORE: jnp.zeros((*stack_shape, *ranks), jnp.float32)}
        for k, (mode, rank) in enumerate(zip(modes, ranks, strict=True)):
            std = np.float32(1.0 / np.sqrt(2.0 * rank))  # Kaiming-normal, a = √3, fan_in = r_k
            leaves[FACTORS[k]] = std * jax.random.normal(keys[k], (*stack_shape, mode, rank), jnp.float32)
        return leaves

    def delta_w(self, config, path, module, view, *, scaling=None):
        factors = [jnp.asarray(module[name], jnp.float32) for name in FACTORS if name in module]
        n = len(factors)
        core_axes = string.ascii_lowercase[:n]
        mode_axes = string.ascii_uppercase[:n]
        spec = "..." + core_axes + "".join(f",...{m}{c}" for m, c in zip(mode_axes, core_axes, strict=True))
        update = jnp.einsum(f"{spec}->...{mode_axes}", jnp.asarray(module[CORE], jnp.float32), *factors)
        scale = config.scale if scaling is None else scaling
        return (update * scale).reshape(*update.shape[: update.ndim - n], *view)

    def module_record(self, config, path, module, view):
        stack = self.stacked_layers(module)
        return {"ranks": list(np.shape(module[CORE])[stack:])}

    def record_problems(self, config, path, record, view, *, kernel):
        modes = tuple(np.shape(kernel))[len(np.shape(kernel)) - len(record["ranks"]) :]
        wanted = list(config.ranks_for(path, modes))
        if record["ranks"] == wanted:
            return []
        return [f"module {path}: stores ranks {record['ranks']}, the config gives {wanted}"]

    def parameter_count(self, config, path, view, modes=None):
        modes = tuple(view) if modes is None else tuple(modes)
        ranks = config.ranks_for(path, modes)
        return int(np.prod(ranks)) + sum(d * r for d, r in zip(modes, ranks, strict=True))
