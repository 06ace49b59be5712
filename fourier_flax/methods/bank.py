"""Adapter banks: ``A`` adapters of one method in one set of leaves, every example of a batch on its own.

A bank wraps a FourierFT or LoRA config: each targeted layer holds the leaves of ``A`` adapters along a bank
axis (FourierFT ``fourierft_spectrum`` ``(*stack, A, n)``; LoRA ``lora_a`` ``(*stack, A, d1, r)`` and ``lora_b``
``(*stack, A, r, d2)``) and computes, for example ``b`` with adapter ``ids[b]``,
``y_b = x_b @ W0 + x_b @ ΔW_{ids[b]}`` — for FourierFT straight from the spectrum
(:func:`fourier_flax.methods.fourierft.spectral_matmul`, no ``d1 × d2`` array per adapter), for LoRA with the
gathered factors (Punica / S-LoRA style). ``ids[b] = -1`` runs the base model. The ids are a traced ``(B,)``
int32 array given by :func:`adapter_ids` inside the traced function, so new ids never retrace.

Banks run on layers that are a plain ``x @ kernel (+ bias)``: linen ``nn.Dense`` and ``nnx.Linear`` (also the
4-bit :class:`~fourier_flax.models.quantized.QuantizedLinear`). A bank has no single merged kernel and is not
saved as one checkpoint: :func:`fourier_flax.bank.bank_member` takes one adapter out, and
:func:`fourier_flax.bank.stack_adapters` / :func:`fourier_flax.bank.load_adapter_bank` build a bank from adapters.
On a device mesh (:func:`fourier_flax.mesh.use_mesh`, or params placed by :func:`fourier_flax.sharding.shard_params`)
banks serve under ``"dp"``, ``"fsdp"`` and ``"tp"`` alike (tests/test_sharding.py, 8 fake CPU devices).

Example::

  bank = AdapterBank(FourierFTConfig(target_modules=["q_proj", "v_proj"]), num_adapters=8)
  params = init_adapter(params, bank, jax.random.key(0))   # fourierft_spectrum (8, n) per layer

  @jax.jit
  def forward(params, x, ids):                             # ids (B,) int32 in [-1, 8)
      with intercept(bank), adapter_ids(ids):
          return model.apply({"params": params}, x)
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
from collections.abc import Iterator
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from fourier_flax.methods.base import AdapterMethod

_IDS: contextvars.ContextVar[jax.Array | None] = contextvars.ContextVar("fourier_flax_adapter_ids", default=None)
# Part of jax.jit's cache key: concrete ids by value ("traced" for ids traced inside the jitted function), so a
# function jitted inside an adapter_ids context with concrete ids is retraced for other ids, never reused.
_IDS_KEY = jax.make_user_context(default_value=None)


@dataclasses.dataclass(frozen=True)
class AdapterBank:
    """``num_adapters`` adapters of ``adapter``'s method, shape and targets in one set of leaves.

    Every targeting field (``target_modules``, ``modules_to_save``, ...) and every method field (``scaling``,
    ``n_frequency``, ``r``, ...) is ``adapter``'s: ``bank.scaling is bank.adapter.scaling``. One FourierFT bank
    shares one entry set per kernel shape and one ``scaling``; one LoRA bank one rank and ``lora_alpha``
    (:func:`fourier_flax.bank.stack_adapters` folds differing scalings into the coefficients).

    Attributes:
      adapter: the members' config (a :class:`FourierFTConfig` or :class:`LoraConfig`).
      num_adapters: ``A``, the bank axis's size.
    """

    adapter: Any
    num_adapters: int

    def __post_init__(self):
        if not isinstance(self.num_adapters, int) or self.num_adapters < 1:
            raise ValueError(f"num_adapters must be a positive int, got {self.num_adapters!r}.")
        if getattr(self.adapter, "fan_in_fan_out", False):
            raise ValueError(
                "banks run on (in, out) kernels (nn.Dense, nnx.Linear); fan_in_fan_out=True (GPT-2's Conv1D) is "
                "not supported."
            )

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("adapter", "num_adapters"):
            raise AttributeError(name)
        return getattr(self.adapter, name)


@contextlib.contextmanager
def adapter_ids(ids: jax.Array) -> Iterator[None]:
    """Within this context, bank layers run example ``b`` on adapter ``ids[b]`` (``-1``: the base model).

    Enter it inside the function you jit, with ``ids`` an argument of that function: the ids are then traced and
    new ids reuse the compiled program. Concrete ids in force when a function is jitted are a constant of its
    trace and part of its cache key (other ids retrace it).

    Args:
      ids: int ``(B,)``, ``B`` the batch size of the layers' inputs (their leading axis).
    """
    ids = jnp.asarray(ids)
    if ids.ndim != 1 or not jnp.issubdtype(ids.dtype, jnp.integer):
        raise ValueError(f"adapter_ids must be an int (B,) array, got {ids.dtype} {ids.shape}.")
    key = "traced" if isinstance(ids, jax.core.Tracer) else tuple(np.asarray(ids).tolist())
    token = _IDS.set(ids.astype(jnp.int32))
    try:
        with _IDS_KEY(key):
            yield
    finally:
        _IDS.reset(token)


def current_adapter_ids() -> jax.Array | None:
    """The ids of the innermost :func:`adapter_ids`, or None outside one."""
    return _IDS.get()


def selected_rows(bank: jax.Array, ids: jax.Array) -> jax.Array:
    """``bank[ids]`` along the leading (bank) axis with the rows of ``ids == -1`` zeroed: ``(B, *bank.shape[1:])``."""
    rows = jnp.take(bank, jnp.clip(ids, 0, bank.shape[0] - 1), axis=0)
    keep = (ids >= 0).reshape(ids.shape + (1,) * (bank.ndim - 1))
    return jnp.where(keep, rows, jnp.zeros((), rows.dtype))


class BankMethod(AdapterMethod):
    """The method of an :class:`AdapterBank`: its member method's leaves with one more (bank) axis."""

    name: ClassVar[str] = "bank"
    config_type: ClassVar[type] = AdapterBank

    def __init__(self, inner: AdapterMethod):
        if type(inner).bank_matmul is AdapterMethod.bank_matmul:
            raise ValueError(
                f"{inner.name} has no per-example bank computation; banks hold FourierFT or LoRA adapters."
            )
        self.inner = inner
        self.leaf_names = inner.leaf_names
        self.leaf_ndim = inner.leaf_ndim + 1
        self.frozen_leaf_names = inner.frozen_leaf_names
        self.scaled = inner.scaled

    def leaves_for(self, config):
        return self.inner.leaves_for(config.adapter)

    def member(self, tree: Any, config: AdapterBank, index: int) -> Any:
        """``tree`` with every adapter leaf of ``config`` replaced by its row ``index`` of the bank axis."""
        if not 0 <= index < config.num_adapters:
            raise IndexError(f"adapter {index} of a bank of {config.num_adapters}.")
        names = set(self.leaves_for(config))

        def take(path, leaf):
            if str(getattr(path[-1], "key", "")) not in names:
                return leaf
            return jnp.take(leaf, index, axis=self.bank_axis(leaf))

        return jax.tree_util.tree_map_with_path(take, tree)

    def bank_axis(self, leaf: Any) -> int:
        """The bank axis of an adapter leaf: after its stacked-layer axes, before one member's own axes."""
        return jnp.ndim(leaf) - self.leaf_ndim

    def init_leaves(self, config, path, view, stack_shape, rng, *, kernel, modes, shared=None):
        return self.inner.init_leaves(
            config.adapter, path, view, (*stack_shape, config.num_adapters), rng, kernel=kernel, modes=modes
        )

    def _no_single_update(self, config, path) -> ValueError:
        return ValueError(
            f"module {path!r} holds a bank of {config.num_adapters} adapters, which has no single update or merged "
            "kernel: run it per example (adapter_ids) or take one adapter out with fourier_flax.bank.bank_member."
        )

    def delta_w(self, config, path, module, view, *, scaling=None):
        raise self._no_single_update(config, path)

    def effective_kernel(self, config, path, module, view, *, scaling=None):
        raise self._no_single_update(config, path)

    def module_record(self, config, path, module, view):
        raise _not_one_checkpoint()

    def record_problems(self, config, path, record, view, *, kernel):
        raise _not_one_checkpoint()

    def parameter_count(self, config, path, view):
        return config.num_adapters * self.inner.parameter_count(config.adapter, path, view)

    def leaf_axes(self, name):
        axes = self.inner.leaf_axes(name)
        return None if axes is None else (None, *axes)

    def peft_unsupported(self, config):
        return "an adapter bank holds several adapters; export each member (fourier_flax.bank.bank_member)"

    matmul_only: ClassVar[bool] = True

    def matmul(self, config, alpha, path, params, x, *, precision, dtype, transposed=False):
        ids = current_adapter_ids()
        if ids is None:
            raise ValueError(
                f"module {path!r} holds a bank of {config.num_adapters} adapters: say which adapter each example "
                "uses, with fourier_flax.bank.adapter_ids(ids) around the call (ids (B,) int, -1 = base model)."
            )
        if jnp.ndim(x) < 2 or x.shape[0] != ids.shape[0]:
            raise ValueError(
                f"module {path!r}: adapter_ids has {ids.shape[0]} entries but the layer's input {tuple(x.shape)} "
                "does not lead with that batch size (one id per example)."
            )
        return self.inner.bank_matmul(config.adapter, alpha, path, params, x, ids, precision=precision, dtype=dtype)


def _not_one_checkpoint() -> ValueError:
    return ValueError(
        "an adapter bank is not saved as one checkpoint: save each member (fourier_flax.bank.bank_member), "
        "and load them back with fourier_flax.bank.load_adapter_bank."
    )


def base_matmul(x: jax.Array, kernel: jax.Array, *, precision, dtype) -> jax.Array:
    """``x @ kernel`` in the layer's compute dtype (``None``: promote as ``nn.Dense(dtype=None)`` does)."""
    dtype = jnp.result_type(x, kernel) if dtype is None else jnp.dtype(dtype)
    return jnp.matmul(x.astype(dtype), jnp.asarray(kernel, dtype), precision=precision)
