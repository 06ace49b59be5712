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
:mod:`fourier_flax.nnx_bert` and Hugging Face's Flax BERT) gets the same spectra from the same key, and the same
orbax checkpoints and PEFT files (:func:`save_adapter`, :func:`load_adapter`, :func:`export_peft`,
:func:`import_peft`). FourierFT on ``nnx.Linear`` uses the spectral backward
(:func:`fourier_flax.spectral_grad.adapted_matmul`) as the linen interceptor does.

Sharding: when the base kernel carries ``out_sharding`` metadata (``nnx.with_partitioning``), each adapter leaf
gets the metadata its layout implies (the method's :meth:`~fourier_flax.methods.base.AdapterMethod.leaf_axes`:
LoRA's ``A`` is sharded like the kernel's input axis, ``B`` like its output axis; FourierFT's spectrum is
replicated), so ``nnx.get_partition_spec(nnx.state(model))`` places base and adapter together.

Example::

  >>> model = MyNnxModel(rngs=nnx.Rngs(0))
  >>> apply_adapter(model, FourierFTConfig(target_modules=["query", "value"], n_frequency=100), jax.random.key(1))
  >>> optimizer = nnx.Optimizer(model, optax.adam(0.1), wrt=AdapterParam)
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from fourier_flax import targeting
from fourier_flax.adapter import init_adapter, module_delta_w, module_effective_kernel
from fourier_flax.methods import method_of

SUPPORTED = (nnx.Linear, nnx.LinearGeneral, nnx.Einsum, nnx.Conv)


class AdapterParam(nnx.Param):
    """A trained adapter leaf (FourierFT's spectrum, LoRA's factors, ...): filter on it to train only adapters."""


class FrozenAdapterVariable(nnx.Variable):
    """An adapter leaf that never trains (VeRA's shared projections, SVFT's singular vectors)."""


@dataclasses.dataclass(frozen=True)
class KernelLayout:
    """Where a layer's kernel keeps its input axes: ``kernel.transpose(perm)`` has the ``in_axes`` input axes
    first, then the output axes (the layout every method works on)."""

    perm: tuple[int, ...]
    in_axes: int

    @property
    def inverse(self) -> tuple[int, ...]:
        return tuple(int(i) for i in np.argsort(self.perm))


def _einsum_layout(path: str, einsum_str: str, ndim: int) -> KernelLayout:
    spec = einsum_str.replace(" ", "")
    if "..." in spec.split("->")[0].split(",")[-1] or spec.count(",") != 1 or "->" not in spec:
        raise ValueError(f"module {path!r}: nnx.Einsum {einsum_str!r} is not 'inputs,kernel->output' with named axes.")
    inputs, rest = spec.split(",")
    kernel, output = rest.split("->")
    if len(kernel) != ndim:
        raise ValueError(f"module {path!r}: einsum kernel {kernel!r} does not name the kernel's {ndim} axes.")
    batch = [axis for axis in kernel if axis in inputs and axis in output]
    summed = [axis for axis in kernel if axis not in inputs and axis not in output]
    if batch or summed:
        raise ValueError(
            f"module {path!r}: nnx.Einsum {einsum_str!r} has kernel axes {batch + summed} that are neither "
            "contracted with the input nor only in the output; adapters need a kernel that maps input axes to "
            "output axes. Exclude it (exclude_modules)."
        )
    contracted = [i for i, axis in enumerate(kernel) if axis not in output]
    produced = [i for i, axis in enumerate(kernel) if axis in output]
    return KernelLayout(tuple(contracted + produced), len(contracted))


def kernel_layout(path: str, module: nnx.Module, stack: int = 0) -> KernelLayout:
    """The :class:`KernelLayout` of one layer of a supported module (``stack`` leading stacked-layer axes, as
    ``nnx.vmap``-created layers for ``nnx.scan`` have).

    Raises:
      ValueError: the layer is of a kind adapters do not run on, or an ``nnx.LinearGeneral`` with ``batch_axis``.
    """
    ndim = np.ndim(module.kernel[...]) - stack
    if isinstance(module, nnx.Einsum):
        return _einsum_layout(path, module.einsum_str, ndim)
    if isinstance(module, nnx.LinearGeneral):
        if module.batch_axis:
            raise ValueError(f"module {path!r}: nnx.LinearGeneral with batch_axis is not supported.")
        return KernelLayout(tuple(range(ndim)), len(module.in_features))
    if isinstance(module, nnx.Conv):
        return KernelLayout(tuple(range(ndim)), ndim - 1)
    if isinstance(module, nnx.Linear):
        return KernelLayout((0, 1), 1)
    raise ValueError(
        f"module {path!r} is an {type(module).__name__}; adapters apply to nnx.Linear, nnx.LinearGeneral, "
        "nnx.Einsum and nnx.Conv. Narrow target_modules (or add it to exclude_modules)."
    )


def _check_view(config: Any, path: str, module: nnx.Module, layout: KernelLayout) -> None:
    if method_of(config).uses_view and config.kernel_in_axes_for(path) != layout.in_axes:
        raise ValueError(
            f"module {path!r} is an {type(module).__name__} with {layout.in_axes} input axes (its 2-D view is "
            f"(prod(inputs), prod(outputs))); set kernel_in_axes={{{path.split('.')[-1]!r}: {layout.in_axes}}}."
        )


def _leaf_sharding(
    kernel: nnx.Variable, layout: KernelLayout, stack: int, axes: tuple | None, ndim: int
) -> dict[str, Any]:
    """``out_sharding`` (and mesh) metadata for an adapter leaf (``ndim`` axes, ``stack`` of them stacked
    layers), from the base kernel's."""
    metadata = kernel.get_metadata()
    spec = metadata.get("out_sharding")
    if spec is None:
        return {}
    stacked, spec = tuple(spec[:stack]), tuple(spec[stack + i] for i in layout.perm)

    def view_axis(part: tuple) -> Any:
        # A flattened group of axes is sharded as its leading axis when that is the only sharded one.
        return part[0] if part and all(name is None for name in part[1:]) else None

    sides = {"in": view_axis(spec[: layout.in_axes]), "out": view_axis(spec[layout.in_axes :])}
    per_layer = tuple(None if side is None else sides[side] for side in axes) if axes else (None,) * (ndim - stack)
    names = stacked + per_layer
    # Shard the value now only where the base could be (a mesh in its metadata or in context), as flax does.
    has_mesh = metadata.get("mesh") is not None or not jax.sharding.get_abstract_mesh().empty
    eager = bool(metadata.get("eager_sharding", nnx.using_eager_sharding())) and has_mesh
    extra = {"mesh": metadata["mesh"]} if metadata.get("mesh") is not None else {}
    return {"out_sharding": names, "eager_sharding": eager, **extra}


class AdaptedModule(nnx.Module):
    """A supported NNX layer with an adapter: its own computation with the method's adapted kernel.

    Attributes:
      base: the replaced layer (same object; its ``kernel``/``bias`` are the pretrained ``nnx.Param``\\ s).
      adapter: the method's leaves by name (:class:`AdapterParam` or :class:`FrozenAdapterVariable`), in the
        canonical layout (:class:`KernelLayout`).
      merged: whether ``base.kernel`` currently holds ``W0 + ΔW`` (:func:`merge_adapter` with ``unload=False``).
    """

    def __init__(
        self,
        base: nnx.Module,
        config: Any,
        path: str,
        layout: KernelLayout,
        leaves: Mapping[str, Any],
        stack: int = 0,
    ):
        self.base, self.config, self.path, self.layout, self.stack = base, config, path, layout, stack
        method = method_of(config)
        trained = set(method.trained_leaves_for(config))
        self.adapter = nnx.Dict(
            {
                name: (AdapterParam if name in trained else FrozenAdapterVariable)(
                    jnp.asarray(value),
                    **_leaf_sharding(base.kernel, layout, stack, method.leaf_axes(config, name), np.ndim(value)),
                )
                for name, value in leaves.items()
            }
        )
        self.merged = False
        self.scaling = None  # FourierFT's alpha in place of config.scaling (possibly traced: :func:`install_leaves`)

    def _axes(self, kernel: jax.Array, perm: tuple[int, ...]) -> tuple[int, ...]:
        """``perm`` behind the stacked axes when ``kernel`` still has them (outside ``nnx.scan``)."""
        stack = jnp.ndim(kernel) - len(perm)
        return (*range(stack), *(stack + axis for axis in perm))

    def _params(self) -> dict[str, jax.Array]:
        """The linen-style params of this layer: the canonical kernel and the adapter leaves."""
        kernel = self.base.kernel[...]
        params = {"kernel": jnp.transpose(kernel, self._axes(kernel, self.layout.perm))}
        params.update({name: variable[...] for name, variable in self.adapter.items()})
        return params

    def effective_kernel(self) -> jax.Array:
        """The float32 kernel the layer computes with, in the base kernel's own layout."""
        effective = module_effective_kernel(self.config, self.path, self._params(), scaling=self.scaling)
        return jnp.transpose(effective, self._axes(effective, self.layout.inverse))

    def delta_w(self) -> jax.Array:
        """The float32 update ``ΔW`` in the base kernel's layout (additive methods)."""
        update = module_delta_w(self.config, self.path, self._params(), scaling=self.scaling)
        return jnp.transpose(update, self._axes(update, self.layout.inverse))

    def __call__(self, inputs: jax.Array, *args, **kwargs) -> jax.Array:
        if self.merged:
            return self.base(inputs, *args, **kwargs)
        base = self.base
        if type(base) is nnx.Linear and base.dot_general is None and base.dot_general_cls is None:
            x = inputs if base.dtype is None else jnp.asarray(inputs, base.dtype)
            alpha = self.scaling if self.scaling is not None else getattr(self.config, "scaling", None)
            y = method_of(self.config).matmul(
                self.config, alpha, self.path, self._params(), x, precision=base.precision, dtype=base.dtype
            )
            if y is not None:
                return y if base.bias is None else y + jnp.asarray(base.bias[...], y.dtype)
        compute_dtype = getattr(base, "dtype", None) or base.kernel[...].dtype
        graphdef, state = nnx.split(base)
        state = jax.tree.map(lambda leaf: leaf, state)  # fresh Variables: the base's own are not touched
        state["kernel"].value = self.effective_kernel().astype(compute_dtype)
        return nnx.merge(graphdef, state)(inputs, *args, **kwargs)


def _path(parts) -> str:
    return ".".join(str(part) for part in parts)


def _layers(model: nnx.Module) -> tuple[dict[str, nnx.Module], dict[str, AdaptedModule], dict[str, nnx.Module]]:
    """(plain supported layers, adapted layers, other modules) by attribute path; inside adapted layers nothing."""
    nodes = [(_path(parts), node) for parts, node in nnx.iter_graph(model) if isinstance(node, nnx.Module)]
    adapted = {path: node for path, node in nodes if isinstance(node, AdaptedModule)}
    inside = tuple(path + "." for path in adapted)
    plain, other = {}, {}
    for path, node in nodes:
        if not path or path in adapted or path.startswith(inside):
            continue
        if isinstance(node, SUPPORTED):
            plain[path] = node
        elif not isinstance(node, (nnx.List, nnx.Dict)):
            other[path] = node
    return plain, adapted, other


def _replace(model: nnx.Module, path: str, new: Any) -> None:
    *parents, last = path.split(".")
    node = model
    for part in parents:
        node = node[int(part)] if isinstance(node, (list, nnx.List)) else getattr(node, part)
    if isinstance(node, (list, nnx.List)):
        node[int(last)] = new
    else:
        setattr(node, last, new)


def _tree(layers: Mapping[str, nnx.Module], layouts: Mapping[str, KernelLayout], stacks: Mapping[str, int]) -> dict:
    """A linen-style params tree of canonical kernels (and biases) keyed by the attribute paths."""
    flat = {}
    for path, layer in layers.items():
        stack = stacks.get(path, 0)
        perm = (*range(stack), *(stack + axis for axis in layouts[path].perm))
        flat[(*path.split("."), "kernel")] = jnp.transpose(layer.kernel[...], perm)
        if getattr(layer, "bias", None) is not None:
            flat[(*path.split("."), "bias")] = layer.bias[...]
    return traverse_util.unflatten_dict(flat)


def _stacks(paths, stacked_axes: Mapping[str, int] | None) -> dict[str, int]:
    """Per path, the stacked-layer axes of the longest ``stacked_axes`` prefix that covers it."""
    stacked_axes = stacked_axes or {}
    return {
        path: max((v for k, v in stacked_axes.items() if path == k or path.startswith(k + ".")), default=0)
        for path in paths
    }


def _targets(
    model: nnx.Module, config: Any, stacks: Mapping[str, int] | None = None
) -> tuple[dict[str, nnx.Module], dict[str, KernelLayout]]:
    plain, adapted, other = _layers(model)
    if adapted:
        raise ValueError(
            f"the model already has adapted layers ({sorted(adapted)[:3]}...): merge_adapter(model) first, or "
            "start from the pretrained model."
        )
    unsupported = sorted(path for path in other if config.is_targeted(path))
    if unsupported:
        kinds = ", ".join(f"{p} ({type(other[p]).__name__})" for p in unsupported[:5])
        raise ValueError(
            f"target_modules={config.target_modules!r} matches modules adapters do not run on: {kinds}; adapters "
            "apply to nnx.Linear, nnx.LinearGeneral, nnx.Einsum and nnx.Conv. Narrow target_modules (or add "
            "them to exclude_modules)."
        )
    paths = sorted(p for p in plain if config.is_targeted(p))
    if not paths:
        raise ValueError(
            f"target_modules={config.target_modules!r} matches none of the model's nnx.Linear, "
            "nnx.LinearGeneral, nnx.Einsum or nnx.Conv layers:\n" + targeting.describe_paths(sorted(plain))
        )
    stacks = stacks or {}
    layouts = {path: kernel_layout(path, plain[path], stacks.get(path, 0)) for path in paths}
    for path in paths:
        _check_view(config, path, plain[path], layouts[path])
    return {path: plain[path] for path in paths}, layouts


def _install(model: nnx.Module, config: Any, layers, layouts, tree: Mapping, stacks=None, scaling=None) -> list[str]:
    method = method_of(config)
    flat = traverse_util.flatten_dict(tree)
    for path, layer in layers.items():
        key = tuple(path.split("."))
        leaves = {name: flat[(*key, name)] for name in method.leaf_names if (*key, name) in flat}
        stack = (stacks or {}).get(path, 0)
        adapted = AdaptedModule(layer, config, path, layouts[path], leaves, stack)
        adapted.scaling = scaling
        _replace(model, path, adapted)
    return sorted(layers)


def apply_adapter(
    model: nnx.Module, config: Any, rng: jax.Array | nnx.Rngs, *, stacked_axes: Mapping[str, int] | None = None
) -> list[str]:
    """Replaces every targeted supported layer of ``model`` by an :class:`AdaptedModule`, in place.

    Args:
      model: an NNX model (pretrained weights loaded).
      config: any registered adapter config (:class:`fourier_flax.FourierFTConfig`, ``LoraConfig``, ...).
      rng: a PRNG key (the same key as :func:`fourier_flax.init_adapter` on a linen twin gives the same leaves)
        or ``nnx.Rngs`` (its ``params`` stream).
      stacked_axes: attribute-path prefix → leading stacked-layer axes of the layers under it (layers made by
        ``nnx.vmap`` and run by ``nnx.scan``), e.g. ``{"blocks": 1}``; their leaves get the same leading axes.

    Returns:
      The adapted paths, sorted.

    Raises:
      ValueError: the targets match no supported layer (the message lists the paths that exist), match a module
        of another kind (named), or a layer's input axes disagree with ``kernel_in_axes``.
    """
    key = rng.params() if isinstance(rng, nnx.Rngs) else rng
    stacks = _stacks(_layers(model)[0], stacked_axes)
    layers, layouts = _targets(model, config, stacks)
    tree = init_adapter(_tree(layers, layouts, stacks), config, key, stacked_axes=stacked_axes)
    return _install(model, config, layers, layouts, tree, stacks)


def install_leaves(
    model: nnx.Module, config: Any, params: Mapping, *, scaling: jax.Array | float | None = None
) -> list[str]:
    """Adapts ``model`` in place with the leaves already in a linen-style ``params`` tree (from
    :func:`fourier_flax.init_adapter` on the model's paths, or a loader), possibly traced — how a functional
    training loop runs an NNX model: merge the base state, install the leaves, call. ``scaling`` overrides
    FourierFT's alpha (a traced sweep axis)."""
    layers, layouts = _targets(model, config)
    return _install(model, config, layers, layouts, params, scaling=scaling)


def adapted_layers(model: nnx.Module) -> dict[str, AdaptedModule]:
    """The :class:`AdaptedModule`\\ s of ``model`` by attribute path."""
    return _layers(model)[1]


def model_config(model: nnx.Module) -> Any:
    """The one adapter config of ``model``'s adapted layers.

    Raises:
      ValueError: nothing is adapted, or layers carry different configs.
    """
    configs = {id(layer.config): layer.config for layer in adapted_layers(model).values()}
    if len(configs) != 1:
        raise ValueError(f"expected one adapter config on the model, found {len(configs)}.")
    return next(iter(configs.values()))


def _saved_modules(model: nnx.Module, config: Any) -> dict[str, nnx.Module]:
    """The ``modules_to_save`` modules of ``model`` (PEFT's rule: matched by name), by path."""
    return {
        _path(parts): node
        for parts, node in nnx.iter_graph(model)
        if isinstance(node, nnx.Module) and parts and config.is_saved_module(_path(parts))
    }


def adapter_params(model: nnx.Module) -> dict:
    """The adapted layers as a linen-style params tree: per path the canonical ``kernel``, ``bias`` and leaves,
    and the ``modules_to_save`` modules' params — the form :func:`fourier_flax.save_adapter`,
    :func:`fourier_flax.export_peft` and friends read."""
    config, flat = model_config(model), {}
    for path, module in _saved_modules(model, config).items():
        for parts, variable in nnx.to_flat_state(nnx.state(module, nnx.Param)):
            flat[(*path.split("."), *map(str, parts))] = variable[...]
    for path, layer in adapted_layers(model).items():
        for name, value in layer._params().items():
            flat[(*path.split("."), name)] = value
        if getattr(layer.base, "bias", None) is not None:
            flat[(*path.split("."), "bias")] = layer.base.bias[...]
    return traverse_util.unflatten_dict(flat)


def _restore_saved(model: nnx.Module, config: Any, params: Mapping) -> None:
    """Puts the ``modules_to_save`` params of a loaded tree back into ``model``'s modules."""
    flat = traverse_util.flatten_dict(params)
    for path, module in _saved_modules(model, config).items():
        for parts, variable in nnx.to_flat_state(nnx.state(module, nnx.Param)):
            key = (*path.split("."), *map(str, parts))
            if key in flat:
                variable.value = jnp.asarray(flat[key], variable[...].dtype)


def merge_adapter(model: nnx.Module, *, unload: bool = True) -> list[str]:
    """Folds every adapter into its layer's kernel, in place; returns the paths.

    With ``unload=True`` (PEFT's ``merge_and_unload``) each :class:`AdaptedModule` is replaced by its base
    layer, now holding ``W0 + ΔW``. With ``unload=False`` (PEFT's ``merge_adapter``) the adapted layers stay and
    compute with the merged kernel until :func:`unmerge_adapter`.
    """
    adapted = adapted_layers(model)
    for path, layer in adapted.items():
        if not layer.merged:
            layer.base.kernel.value = layer.effective_kernel().astype(layer.base.kernel[...].dtype)
            layer.merged = True
        if unload:
            _replace(model, path, layer.base)
    return sorted(adapted)


def unmerge_adapter(model: nnx.Module) -> list[str]:
    """Undoes :func:`merge_adapter` (``unload=False``): ``W0 = W' − ΔW`` in place (float32 rounding, as PEFT).

    Raises:
      ValueError: a method whose update depends on ``W0`` (DoRA) cannot be subtracted back.
    """
    adapted = {path: layer for path, layer in adapted_layers(model).items() if layer.merged}
    for path, layer in adapted.items():
        if not method_of(layer.config).additive:
            raise ValueError(
                f"module {path!r}: {type(layer.config).__name__} rescales W0, so its merge cannot be undone by "
                "subtraction; keep the unmerged model (merge_adapter(model, unload=True) on a copy)."
            )
        kernel = layer.base.kernel[...]
        layer.base.kernel.value = (kernel.astype(jnp.float32) - layer.delta_w()).astype(kernel.dtype)
        layer.merged = False
    return sorted(adapted)


def _pretrained_tree(model: nnx.Module, stacks: Mapping[str, int]) -> dict:
    """Every plain supported layer's canonical kernel (and bias), keyed by path: what loaders check against."""
    plain, layouts = _layers(model)[0], {}
    for path, layer in plain.items():
        try:
            layouts[path] = kernel_layout(path, layer, stacks.get(path, 0))
        except ValueError:  # e.g. an einsum whose kernel no adapter can use: never a target
            continue
    return _tree({path: plain[path] for path in layouts}, layouts, stacks)


def save_adapter(path: str | pathlib.Path, model: nnx.Module) -> pathlib.Path:
    """:func:`fourier_flax.save_adapter` of ``model``'s adapter (the same orbax format as the linen path)."""
    from fourier_flax.checkpoint import save_adapter as save

    return save(path, adapter_params(model), model_config(model))


def load_adapter(
    path: str | pathlib.Path, model: nnx.Module, *, stacked_axes: Mapping[str, int] | None = None
) -> list[str]:
    """Adapts the pretrained ``model`` in place with the checkpoint at ``path`` (checked against its kernels
    by :func:`fourier_flax.load_adapter`); returns the adapted paths. ``stacked_axes`` as for
    :func:`apply_adapter`."""
    from fourier_flax.checkpoint import load_adapter as load

    stacks = _stacks(_layers(model)[0], stacked_axes)
    config, params = load(path, _pretrained_tree(model, stacks))
    layers, layouts = _targets(model, config, stacks)
    _restore_saved(model, config, params)
    return _install(model, config, layers, layouts, params, stacks)


def export_peft(model: nnx.Module, out_dir: str | pathlib.Path, **kwargs: Any) -> pathlib.Path:
    """:func:`fourier_flax.export_peft` of ``model``'s adapter; module keys are the attribute paths (so a model
    whose paths follow Hugging Face's names, like :class:`fourier_flax.nnx_bert.BertModel`, loads in PEFT)."""
    from fourier_flax.peft_interop import export_peft as export

    return export(adapter_params(model), model_config(model), out_dir, **kwargs)


def import_peft(adapter_dir: str | pathlib.Path, model: nnx.Module, **kwargs: Any) -> list[str]:
    """Adapts the pretrained ``model`` in place with a PEFT ``save_pretrained`` directory
    (:func:`fourier_flax.import_peft`'s checks and options); returns the adapted paths."""
    from fourier_flax.peft_interop import import_peft as read

    config, params = read(adapter_dir, _pretrained_tree(model, {}), **kwargs)
    layers, layouts = _targets(model, config)
    _restore_saved(model, config, params)
    return _install(model, config, layers, layouts, params)


__all__ = [
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
