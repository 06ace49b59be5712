"""The adapter-method protocol: what one parameter-efficient method must say for the shared machinery to run it.

``init_adapter``, ``intercept``, ``merge_adapter``, checkpoints, optimizer labels and parameter counts never name
a method: they ask the method registered for a config's type (:func:`method_of`). A method is a subclass of
:class:`AdapterMethod` in its own module under ``fourier_flax.methods``, listed once in :data:`REGISTRY`.

:class:`AdapterMethod` joins the three roles a method plays; a new method implements:

* :class:`UpdateRule` (the math) — the class attributes, :meth:`~UpdateRule.init_leaves`,
  :meth:`~UpdateRule.delta_w` and :meth:`~UpdateRule.parameter_count` (abstract: a subclass missing one cannot be
  instantiated); :meth:`~UpdateRule.effective_kernel` only if it is not ``W0 + ΔW`` (DoRA);
* :class:`AdapterFiles` (checkpoints and PEFT's files) — :meth:`~AdapterFiles.module_record` and
  :meth:`~AdapterFiles.record_problems` (abstract); with a ``peft_type``, also
  :meth:`~AdapterFiles.peft_module_tensors` and :meth:`~AdapterFiles.leaves_from_peft`;
* :class:`Execution` (how layers run it) — nothing: every member has a working default (the dense path,
  replicated leaves); override :meth:`~Execution.matmul` for a computation of its own, :meth:`~Execution.leaf_axes`
  to shard leaves as the kernel, :meth:`~Execution.bank_matmul` to serve adapter banks.

Every method works on a kernel's 2-D view ``(d1, d2)`` (``(in, out)`` for ``nn.Dense``; see
:func:`fourier_flax.adapted_modules.kernel_view`), possibly with leading axes of layers stacked by ``nn.scan``.

Example::

  method = method_of(FourierFTConfig(target_modules=["query"]))
  method.name, method.leaf_names
  # ('fourierft', ('fourierft_spectrum',))
"""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar

import jax
import jax.numpy as jnp

Shape2D = tuple[int, int]
# The targeting fields every PEFT config shares with ours (same names, same meaning).
PEFT_TARGETING_FIELDS = (
    "fan_in_fan_out",
    "target_modules",
    "exclude_modules",
    "bias",
    "modules_to_save",
    "layers_to_transform",
    "layers_pattern",
)


class UpdateRule(abc.ABC):
    """The math of a method: its leaves, their initialisation, ``ΔW`` and the effective kernel.

    Attributes:
      name: the method's name (``--method``, checkpoint ``adapter_type``).
      config_type: its frozen config dataclass.
      leaf_names: the leaves it adds beside a targeted ``kernel``; the first one carries the layer axes
        (its ``ndim`` minus :attr:`leaf_ndim` is the number of stacked-layer axes).
      leaf_ndim: ``ndim`` of that first leaf for one unstacked layer.
      frozen_leaf_names: those of :attr:`leaf_names` that never train (e.g. VeRA's shared random projections);
        checkpoints do not store them: they are rebuilt from the config.
    """

    name: ClassVar[str]
    config_type: ClassVar[type]
    leaf_names: ClassVar[tuple[str, ...]]
    leaf_ndim: ClassVar[int]
    frozen_leaf_names: ClassVar[tuple[str, ...]] = ()
    # W = W0 + ΔW with ΔW independent of W0 (so a merge can be undone); False for DoRA's rescaling.
    additive: ClassVar[bool] = True
    # The update is defined on the kernel's 2-D view (so the view must be the layer's (in, out)); False for
    # FLoRA, which works on the kernel's own modes.
    uses_view: ClassVar[bool] = True
    # ΔW carries a scale factor (FourierFT's ``scaling``, LoRA's ``lora_alpha / r``) that the ``scaling`` argument
    # of :meth:`delta_w` overrides; False for VeRA and SVFT, which have none.
    scaled: ClassVar[bool] = True

    def leaves_for(self, config: Any) -> tuple[str, ...]:
        """The leaves a module adapted with ``config`` carries (a subset of :attr:`leaf_names`)."""
        return self.leaf_names

    def trained_leaves_for(self, config: Any) -> tuple[str, ...]:
        """Those of :meth:`leaves_for` that train."""
        return tuple(name for name in self.leaves_for(config) if name not in self.frozen_leaf_names)

    def prepare(self, config: Any, views: Mapping[str, Shape2D]) -> Any:
        """State shared by all targeted modules (``views``: path -> 2-D view), passed to :meth:`init_leaves`."""
        return None

    def stacked_layers(self, module: Mapping[str, Any]) -> int:
        """How many leading stacked-layer axes the adapter leaves of ``module`` carry."""
        return jnp.ndim(module[self.leaf_names[0]]) - self.leaf_ndim

    @abc.abstractmethod
    def init_leaves(
        self,
        config: Any,
        path: str,
        view: Shape2D,
        stack_shape: tuple[int, ...],
        rng: jax.Array,
        *,
        kernel: jax.Array,
        modes: tuple[int, ...],
        shared: Any = None,
    ) -> dict[str, jax.Array]:
        """The method's leaves for one targeted module (``stack_shape`` leading axes for ``nn.scan`` stacks).

        ``kernel`` is the module's pretrained kernel as ``(*stack, d1, d2)``, ``modes`` its own (unstacked)
        shape; ``shared`` is :meth:`prepare`'s.

        Raises:
          ValueError: the config does not fit this kernel (the message names the module and the fix).
        """
        raise NotImplementedError

    @abc.abstractmethod
    def delta_w(
        self, config: Any, path: str, module: Mapping[str, Any], view: Shape2D, *, scaling: Any = None
    ) -> jax.Array:
        """The float32 update ``ΔW`` ``(*stack, d1, d2)`` of one adapted module from its leaves."""
        raise NotImplementedError

    def effective_kernel(
        self, config: Any, path: str, module: Mapping[str, Any], view: Shape2D, *, scaling: Any = None
    ) -> jax.Array:
        """The float32 kernel the adapted layer computes with, ``(*stack, d1, d2)``: ``W0 + ΔW`` unless the
        method rescales (DoRA)."""
        kernel = jnp.asarray(module["kernel"], jnp.float32).reshape(self.delta_shape(module, view))
        return kernel + self.delta_w(config, path, module, view, scaling=scaling)

    def delta_shape(self, module: Mapping[str, Any], view: Shape2D) -> tuple[int, ...]:
        """``(*stack, d1, d2)`` of ``module``'s kernel view."""
        stack = self.stacked_layers(module)
        return (*jnp.shape(module["kernel"])[:stack], *view)

    @abc.abstractmethod
    def parameter_count(self, config: Any, path: str, view: Shape2D) -> int:
        """Trainable adapter parameters of one (unstacked) layer with this view."""
        raise NotImplementedError


class AdapterFiles(abc.ABC):
    """What a method writes and reads: its checkpoint record per module and Hugging Face PEFT's files."""

    @abc.abstractmethod
    def module_record(self, config: Any, path: str, module: Mapping[str, Any], view: Shape2D) -> dict[str, Any]:
        """What a checkpoint records about one adapted module beyond its kernel shape (JSON values)."""
        raise NotImplementedError

    @abc.abstractmethod
    def record_problems(
        self, config: Any, path: str, record: Mapping[str, Any], view: Shape2D, *, kernel: Any
    ) -> list[str]:
        """How a recorded module (:meth:`module_record`) disagrees with ``config`` and this base's ``kernel``
        (none: [])."""
        raise NotImplementedError

    # Hugging Face PEFT's files (fourier_flax.peft_interop.export_peft)
    peft_type: ClassVar[str | None] = None  # None: PEFT has no such method
    peft_fields: ClassVar[tuple[str, ...]] = ()  # config fields PEFT's config has under the same name and meaning

    def peft_unsupported(self, config: Any) -> str | None:
        """Why this config has no PEFT equivalent (None when it has one)."""
        return None if self.peft_type else f"Hugging Face PEFT has no {self.name}"

    def peft_extra_fields(self, config: Any) -> dict[str, Any]:
        """Fields PEFT's config needs beyond :attr:`peft_fields` (e.g. ``use_dora``)."""
        return {}

    def peft_module_tensors(self, config: Any, path: str, module: Mapping[str, Any]) -> dict[str, Any]:
        """PEFT's tensors of one adapted module, by key suffix (``lora_A.weight``), in PyTorch layouts."""
        raise NotImplementedError

    peft_harmless: ClassVar[tuple[str, ...]] = ()  # PEFT fields that may be set but change nothing here
    peft_suffixes: ClassVar[tuple[str, ...]] = ()  # key suffixes of PEFT's per-module tensors

    def config_from_peft(self, fields: Mapping[str, Any]) -> Any:
        """Our config from a PEFT ``adapter_config.json`` (its :attr:`peft_fields`)."""
        return self.config_type(**{name: fields[name] for name in self.peft_fields if name in fields})

    def leaves_from_peft(
        self, config: Any, path: str, tensors: Mapping[str, Any], view: Shape2D, shared: Mapping[str, Any]
    ) -> dict[str, Any]:
        """Our leaves of one module from PEFT's tensors (by suffix) and its shared ones (VeRA)."""
        raise NotImplementedError

    def peft_shared_tensors(self, config: Any, modules: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
        """PEFT's tensors shared by all modules (VeRA's projections), by key after ``base_model.``."""
        return {}


class Execution:
    """How adapted layers run a method: the shared dense path unless it has a matmul of its own, leaf shardings,
    merges of sharded kernels and adapter banks. Every member has a working default."""

    # The method computes only through :meth:`matmul` (no single ΔW): layers that are not plain matmuls are
    # refused (adapter banks).
    matmul_only: ClassVar[bool] = False

    def matmul(
        self, config: Any, alpha: Any, path: str, params: Mapping[str, Any], x: jax.Array, *, precision, dtype,
        transposed: bool = False,
    ) -> jax.Array | None:  # fmt: skip
        """``x @ W'`` of a plain matmul layer (no bias) by the method's own computation (e.g. a custom backward),
        or None for the shared dense path. ``params`` holds the stored ``kernel`` (``(in, out)``, or ``(out, in)``
        when ``transposed``: GPT-2's ``FlaxConv1D``) and the leaves. Framework-neutral: linen and NNX layers reach
        it through :func:`fourier_flax.adapted_modules.adapted_matmul_call`."""
        return None

    # The config field members of an adapter bank may differ in and the leaf it scales (ΔW is linear in both,
    # so fourier_flax.bank.stack_adapters folds a member's value into that leaf), or None: members agree in all.
    bank_scale: ClassVar[tuple[str, str] | None] = None

    def bank_matmul(
        self, config: Any, alpha: Any, path: str, params: Mapping[str, Any], x: jax.Array, ids: jax.Array, *,
        precision, dtype,
    ) -> jax.Array:  # fmt: skip
        """Example ``b``'s ``x[b] @ (W0 + ΔW_{ids[b]})`` for a bank (:mod:`fourier_flax.methods.bank`): ``params``
        holds the ``(in, out)`` kernel and the leaves with a leading bank axis, ``x`` ``(B, ..., in)``, ``ids``
        ``(B,)`` (``-1``: ``ΔW = 0``). Methods without it cannot form banks."""
        raise NotImplementedError

    def leaf_axes(self, name: str) -> tuple[str | None, ...] | None:
        """How leaf ``name`` of one (unstacked) layer lies along the kernel's 2-D view: per axis ``"in"``
        (runs along ``d1``), ``"out"`` (along ``d2``) or None; None for a leaf that stays replicated. Meshes
        shard such axes as the kernel's own (as qwix derives LoRA factor shardings from the base weight)."""
        return None

    def sharded_merged_kernel(self, config: Any, path: str, module: Mapping[str, Any]) -> jax.Array | None:
        """The merged kernel of a module whose kernel is sharded over several devices, built block by block on
        those devices (so it also works when the arrays are not fully addressable), or None: merge densely."""
        return None


class AdapterMethod(UpdateRule, AdapterFiles, Execution):
    """One adapter method: its math, its files and its execution (see the module docstring for what a new method
    implements)."""
