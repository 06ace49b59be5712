"""SVFT (Lingam et al., NeurIPS 2024): ``ΔW = U M Vᵀ`` from the frozen kernel's own singular vectors.

On a kernel view ``W0`` ``(d1, d2)`` the thin SVD (float32, full rank ``k = min(d1, d2)``: truncating hurts, the
paper's Table 10) gives ``W0 = U Σ Vᵀ``; ``M`` ``(k, k)`` is sparse on a fixed pattern of positions:

* ``"plain"``: the diagonal (``k`` values);
* ``"banded"``: ``|i - j| ≤ off_diag`` (``k(2d+1) - d(d+1)`` values);
* ``"random"``: that many distinct positions, drawn from ``pattern_seed``;
* ``"top_k"``: that many positions with the largest alignment ``u_iᵀ v_j`` (square views only).

Variants: ``"paper"`` (default; ``M`` starts at zero, so the layer starts unchanged) and ``"code"`` (the reference
implementation: ``M`` Kaiming-normal, std ``sqrt(2 / count)``, scaled by a trainable gate ``σ(g)``, ``g = 0``).

Leaves: ``svft_m`` ``(*stack, count)`` (and ``svft_gate`` ``(*stack, 1)`` for ``"code"``) train; ``svft_u``
``(*stack, d1, k)``, ``svft_v`` ``(*stack, d2, k)`` (and for top_k the positions ``svft_top_k_index``) are frozen
and never saved: loading re-derives them from the base kernel and refuses a base whose kernel's sha256 differs from
the one the adapter was trained on. Singular vectors are sign-normalised (largest-magnitude entry of each ``u_i``
positive) so the re-derivation is stable.

Example::

  config = SvftConfig(target_modules=["query", "value"], pattern="banded", off_diag=2)
  params = init_adapter(params, config, jax.random.key(0))
"""

from __future__ import annotations

import dataclasses
import hashlib
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from fourier_flax.methods.base import AdapterMethod
from fourier_flax.targeting import TargetingConfig

M, GATE, U, V, TOP_K = "svft_m", "svft_gate", "svft_u", "svft_v", "svft_top_k_index"
PATTERNS = ("plain", "banded", "random", "top_k")


@dataclasses.dataclass(frozen=True, kw_only=True)
class SvftConfig(TargetingConfig):
    """SVFT hyperparameters.

    Attributes:
      pattern: ``"plain"``, ``"banded"``, ``"random"`` or ``"top_k"`` (see the module docstring).
      off_diag: ``d`` of the banded pattern (and the count of ``random``/``top_k``); ignored by ``"plain"``.
      variant: ``"paper"`` (zero init, no gate; default) or ``"code"`` (gated Kaiming-normal init).
      pattern_seed: seed of the ``"random"`` positions.
      bias: "none" or "all".
    """

    pattern: str = "banded"
    off_diag: int = 2
    variant: str = "paper"
    pattern_seed: int = 0
    bias: str = "none"

    def __post_init__(self):
        super().__post_init__()
        if self.pattern not in PATTERNS:
            raise ValueError(f"pattern must be one of {PATTERNS}, got {self.pattern!r}.")
        if not isinstance(self.off_diag, int) or self.off_diag < 0:
            raise ValueError(f"off_diag must be an int >= 0, got {self.off_diag!r}.")
        if self.variant not in ("paper", "code"):
            raise ValueError(f"variant must be 'paper' or 'code', got {self.variant!r}.")
        if self.bias not in ("none", "all"):
            raise ValueError(f"bias must be 'none' or 'all', got {self.bias!r}.")


def banded_count(k: int, d: int) -> int:
    """Positions with ``|i - j| ≤ d`` in a ``k × k`` matrix: ``k(2d+1) - d(d+1)``."""
    return k * (2 * d + 1) - d * (d + 1)


def pattern_positions(config: SvftConfig, k: int, path: str, alignment: np.ndarray | None = None) -> np.ndarray:
    """int32 ``(2, count)`` positions of ``M``'s trainable values (rows, columns), sorted row-major.

    Raises:
      ValueError: the pattern does not fit ``k`` (``off_diag`` ≥ ``k``), or ``top_k`` on a non-square view.
    """
    if config.pattern != "plain" and config.off_diag >= k:
        raise ValueError(
            f"module {path!r}: off_diag={config.off_diag} does not fit its {k} singular vectors; use off_diag < {k}."
        )
    rows, cols = np.meshgrid(np.arange(k), np.arange(k), indexing="ij")
    if config.pattern == "plain":
        keep = rows == cols
    elif config.pattern == "banded":
        keep = np.abs(rows - cols) <= config.off_diag
    else:
        count = banded_count(k, config.off_diag)
        if config.pattern == "random":
            chosen = np.random.default_rng(config.pattern_seed).choice(k * k, size=count, replace=False)
        else:
            if alignment is None:
                raise ValueError(
                    f"module {path!r}: pattern='top_k' ranks u_i·v_j, which needs a square kernel view; this one "
                    "is not square. Use 'banded' or 'random'."
                )
            chosen = np.argsort(-alignment.reshape(-1), kind="stable")[:count]
        keep = np.zeros(k * k, bool)
        keep[chosen] = True
        keep = keep.reshape(k, k)
    return np.stack([rows[keep], cols[keep]]).astype(np.int32)


def thin_svd(kernel: jax.Array) -> tuple[jax.Array, jax.Array]:
    """``U`` ``(*stack, d1, k)``, ``V`` ``(*stack, d2, k)`` of a float32 kernel view, signs normalised."""
    u, s, vt = jnp.linalg.svd(jnp.asarray(kernel, jnp.float32), full_matrices=False)
    v = jnp.swapaxes(vt, -1, -2)
    index = jnp.argmax(jnp.abs(u), axis=-2, keepdims=True)
    sign = jnp.sign(jnp.take_along_axis(u, index, axis=-2))
    sign = jnp.where(sign == 0, 1.0, sign)
    return u * sign, v * sign


def kernel_digest(kernel) -> str:
    """sha256 of a kernel as little-endian float32 in C order."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(kernel, np.float32), "<f4").tobytes()).hexdigest()


class SvftMethod(AdapterMethod):
    name: ClassVar[str] = "svft"
    config_type: ClassVar[type] = SvftConfig
    leaf_names: ClassVar[tuple[str, ...]] = (M, GATE, U, V, TOP_K)
    leaf_ndim: ClassVar[int] = 1
    scaled: ClassVar[bool] = False
    frozen_leaf_names: ClassVar[tuple[str, ...]] = (U, V, TOP_K)

    def _positions(self, config, path, module) -> jax.Array | np.ndarray:
        """``(2, count)`` positions: static for plain/banded/random; for top_k (which depends on U and V) the
        frozen ``svft_top_k_index`` leaf, float32 (exact below 2^24) so that a whole-tree ``jax.grad`` works."""
        if config.pattern == "top_k":
            return jnp.asarray(module[TOP_K]).astype(jnp.int32)
        return pattern_positions(config, int(np.shape(module[U])[-1]), path)

    def init_leaves(self, config, path, view, stack_shape, rng, *, kernel, modes, shared=None):
        u, v = thin_svd(kernel)
        k = u.shape[-1]
        frozen = {U: u, V: v}
        if config.pattern == "top_k":
            if stack_shape:
                raise ValueError(f"module {path!r}: pattern='top_k' is per layer; nn.scan stacks need another pattern.")
            alignment = np.asarray(jnp.swapaxes(u, -1, -2) @ v) if u.shape[-2] == v.shape[-2] else None
            frozen[TOP_K] = jnp.asarray(pattern_positions(config, k, path, alignment), jnp.float32)
        count = k if config.pattern == "plain" else banded_count(k, config.off_diag)
        pattern_positions(config, k, path, np.zeros((k, k)))  # validates off_diag against k
        if config.variant == "paper":
            return {M: jnp.zeros((*stack_shape, count), jnp.float32), **frozen}
        m = jnp.sqrt(2.0 / count) * jax.random.normal(rng, (*stack_shape, count), jnp.float32)
        return {M: m, GATE: jnp.zeros((*stack_shape, 1), jnp.float32), **frozen}

    def stacked_layers(self, module):
        return jnp.ndim(module[M]) - 1

    def delta_w(self, config, path, module, view, *, scaling=None):
        u, v = jnp.asarray(module[U], jnp.float32), jnp.asarray(module[V], jnp.float32)
        rows, cols = self._positions(config, path, module)
        values = jnp.asarray(module[M], jnp.float32)
        if config.variant == "code":
            values = values * jax.nn.sigmoid(jnp.asarray(module[GATE], jnp.float32))
        # U M Vᵀ with M sparse: Σ_l values_l · u_{rows_l} v_{cols_l}ᵀ, as one matmul of gathered columns.
        return jnp.einsum("...pl,...l,...ql->...pq", u[..., rows], values, v[..., cols])

    def leaves_for(self, config):
        gate = (GATE,) if config.variant == "code" else ()
        top_k = (TOP_K,) if config.pattern == "top_k" else ()
        return (M, *gate, U, V, *top_k)

    def module_record(self, config, path, module, view):
        count = int(np.shape(module[M])[-1])
        return {"k": int(np.shape(module[U])[-1]), "count": count, "kernel_sha256": kernel_digest(module["kernel"])}

    def record_problems(self, config, path, record, view, *, kernel):
        problems = []
        if kernel_digest(kernel) != record["kernel_sha256"]:
            problems.append(
                f"module {path}: the base kernel differs from the one the adapter was trained on (sha256): SVFT's "
                "U and V are re-derived from it, so this adapter only applies to that exact base"
            )
        count = self.parameter_count(config, path, view) - (1 if config.variant == "code" else 0)
        if record["count"] != count:
            problems.append(f"module {path}: stores {record['count']} values, the config's pattern has {count}")
        return problems

    def parameter_count(self, config, path, view):
        k = min(view)
        count = k if config.pattern == "plain" else banded_count(k, config.off_diag)
        return count + (1 if config.variant == "code" else 0)
