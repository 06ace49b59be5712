"""Adapters for flax.nnx models: surgery that swaps targeted layers for adapted ones, in place.

:func:`apply_adapter` walks an NNX model, matches each ``nnx.Linear``, ``nnx.LinearGeneral``, ``nnx.Einsum`` and
``nnx.Conv`` by its attribute path (``encoder.layer.0.attention.self.query``) with PEFT's targeting rules, and
replaces it by an :class:`AdaptedModule` that keeps the pretrained layer (its kernel and bias ``nnx.Param``s, the
same objects) and adds the method's leaves as :class:`AdapterParam` variables — so ``nnx.Optimizer(model, tx,
wrt=AdapterParam)``, ``nnx.state(model, AdapterParam)`` and ``nnx.DiffState`` select exactly the adapter, as
``nnx.LoRAParam`` does for ``nnx.LoRA``. Frozen leaves (VeRA's projections, SVFT's singular vectors) are
:class:`FrozenAdapterVariable`\\ s.

Every method of :mod:`fourier_flax.methods` works through its protocol on the kernel's canonical layout: the
kernel with its input axes first (``(in, out)`` for ``nnx.Linear``; ``(*window, in, out)`` for ``nnx.Conv``;
contracted axes, then output axes, for ``nnx.Einsum``). The leaves are made by :func:`fourier_flax.init_adapter`
on a params tree keyed by the attribute paths, so an NNX model whose paths equal a linen model's (such as
:mod:`fourier_flax.models.bert` and Hugging Face's Flax BERT) gets the same spectra from the same key, and the same
orbax checkpoints and PEFT files (:func:`save_adapter`, :func:`load_adapter`, :func:`export_peft`,
:func:`import_peft`). Plain matmul layers (``nnx.Linear``, the 4-bit ``QuantizedLinear``) reach a method's own
matmul — FourierFT's spectral backward, adapter banks — through the call the linen interceptor uses
(:func:`fourier_flax.adapted_modules.adapted_matmul_call`).

Sharding: when the base kernel carries ``out_sharding`` metadata (``nnx.with_partitioning``), each adapter leaf
gets the metadata its layout implies (the method's :meth:`~fourier_flax.methods.base.AdapterMethod.leaf_axes`:
LoRA's ``A`` is sharded like the kernel's input axis, ``B`` like its output axis; FourierFT's spectrum is
replicated), so ``nnx.get_partition_spec(nnx.state(model))`` places base and adapter together.

Example::

  model = MyNnxModel(rngs=nnx.Rngs(0))
  apply_adapter(model, FourierFTConfig(target_modules=["query", "value"], n_frequency=100), jax.random.key(1))
  optimizer = nnx.Optimizer(model, optax.adam(0.1), wrt=AdapterParam)
"""

from fourier_flax.nnx.files import adapter_params, export_peft, import_peft, load_adapter, save_adapter
from fourier_flax.nnx.surgery import (
    SUPPORTED,
    AdaptedModule,
    AdapterParam,
    FrozenAdapterVariable,
    KernelLayout,
    adapted_layers,
    apply_adapter,
    install_leaves,
    kernel_layout,
    merge_adapter,
    model_config,
    unmerge_adapter,
)

__all__ = [
    "SUPPORTED",
    "AdaptedModule",
    "AdapterParam",
    "FrozenAdapterVariable",
    "KernelLayout",
    "adapted_layers",
    "adapter_params",
    "apply_adapter",
    "install_leaves",
    "export_peft",
    "import_peft",
    "kernel_layout",
    "load_adapter",
    "merge_adapter",
    "model_config",
    "save_adapter",
    "unmerge_adapter",
]
