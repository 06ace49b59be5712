"""The adapter-method protocol: what one parameter-efficient method must say for the shared machinery to run it.

``init_adapter``, ``intercept``, ``merge_adapter``, checkpoints, optimizer labels and parameter counts never name
a method: they ask the method registered for a config's type (:func:`method_of`). A method is a subclass of
:class:`AdapterMethod` in its own module under ``fourier_flax.methods``, listed once in :data:`REGISTRY`.

Every method works on a kernel's 2-D view ``(d1, d2)`` (``(in, out)`` for ``nn.Dense``; see
:func:`fourier_flax.adapted_modules.kernel_view`), possibly with leading axes of layers stacked by ``nn.scan``.

Example::

  method = method_of(FourierFTConfig(target_modules=["query"]))
  method.name, method.leaf_names
  # ('fourierft', ('fourierft_spectrum',))
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
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
# (config, alpha, path, module, params, inputs) -> layer output, a method's own matmul with its own backward.
LayerCall = Callable[..., jax.Array]


class AdapterMethod:
    """One adapter method. Subclasses set the class attributes and implement the abstract methods.

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

    def module_record(self, config: Any, path: str, module: Mapping[str, Any], view: Shape2D) -> dict[str, Any]:
        """What a checkpoint records about one adapted module beyond its kernel shape (JSON values)."""
        raise NotImplementedError

    def record_problems(
        self, config: Any, path: str, record: Mapping[str, Any], view: Shape2D, *, kernel: Any
    ) -> list[str]:
        """How a recorded module (:meth:`module_record`) disagrees with ``config`` and this base's ``kernel``
        (none: [])."""
        raise NotImplementedError

    def parameter_count(self, config: Any, path: str, view: Shape2D) -> int:
        """Trainable adapter parameters of one (unstacked) layer with this view."""
        raise NotImplementedError

    def sharded_merged_kernel(self, config: Any, path: str, module: Mapping[str, Any]) -> jax.Array | None:
        """The merged kernel of a module whose kernel is sharded over several devices, built block by block on
        those devices (so it also works when the arrays are not fully addressable), or None: merge densely."""
        return None

    # --- Hugging Face PEFT's files (fourier_flax.peft_interop.export_peft) -----------------------------------
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

    def layer_call(self, config: Any, module: Any, inputs: jax.Array) -> LayerCall | None:
        """A layer computation of the method's own (e.g. a custom backward) for this call, or None for the
        shared dense path (``kernel + ΔW`` inside the layer's own ``__call__``)."""
        return None

    def matmul(
        self, config: Any, alpha: Any, path: str, params: Mapping[str, Any], x: jax.Array, *, precision, dtype
    ) -> jax.Array | None:
        """``x @ W'`` for a plain ``(in, out)`` matmul layer by the method's own computation (no bias), or None
        for the shared dense path. Framework-neutral: the linen interceptor and the NNX layers both use it."""
        return None

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
