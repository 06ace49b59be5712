r"""Surgery on flax.nnx models: targeted layers become :class:`AdaptedModule`\ s that keep the pretrained layer
and add the method's leaves as :class:`AdapterParam` variables (see :mod:`fourier_flax.nnx`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx, traverse_util

from fourier_flax import targeting
from fourier_flax.adapted_modules import adapted_matmul_call, module_delta_w, module_effective_kernel
from fourier_flax.adapter import init_adapter
from fourier_flax.layer_kinds import matmul_layer
from fourier_flax.methods import check_scale_override, method_of
from fourier_flax.models.quantized import QuantizedLinear

SUPPORTED = (nnx.Linear, nnx.LinearGeneral, nnx.Einsum, nnx.Conv, QuantizedLinear)


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
    if isinstance(module, QuantizedLinear):
        return KernelLayout((0, 1), 1)
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


def kernel_value(layer: nnx.Module) -> jax.Array:
    """A supported layer's kernel as an array in its own layout; a 4-bit layer's dequantized ``(in, out)``."""
    return layer.kernel_value() if isinstance(layer, QuantizedLinear) else layer.kernel[...]


def _leaf_sharding(
    kernel: nnx.Variable | None, layout: KernelLayout, stack: int, axes: tuple | None, ndim: int
) -> dict[str, Any]:
    """``out_sharding`` (and mesh) metadata for an adapter leaf (``ndim`` axes, ``stack`` of them stacked
    layers), from the base kernel's (none for a quantized base)."""
    metadata = {} if kernel is None else kernel.get_metadata()
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
                    **_leaf_sharding(
                        getattr(base, "kernel", None), layout, stack, method.leaf_axes(name), np.ndim(value)
                    ),
                )
                for name, value in leaves.items()
            }
        )
        self.merged = False
        self.scaling = None  # the update's scale in place of the config's (possibly traced: :func:`install_leaves`)

    def _axes(self, kernel: jax.Array, perm: tuple[int, ...]) -> tuple[int, ...]:
        """``perm`` behind the stacked axes when ``kernel`` still has them (outside ``nnx.scan``)."""
        stack = jnp.ndim(kernel) - len(perm)
        return (*range(stack), *(stack + axis for axis in perm))

    def _params(self) -> dict[str, jax.Array]:
        """The linen-style params of this layer: the canonical kernel and the adapter leaves."""
        kernel = kernel_value(self.base)
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
        alpha = self.scaling if self.scaling is not None else getattr(self.config, "scaling", None)
        layer = matmul_layer(base) if not (args or kwargs) else None
        y = adapted_matmul_call(self.config, alpha, self.path, self._params(), inputs, layer)
        if y is not None:
            return y
        if isinstance(base, QuantizedLinear):  # the dense path: the 4-bit kernel, dequantized, plus ΔW
            x = inputs if base.dtype is None else jnp.asarray(inputs, base.dtype)
            return matmul_layer(base).add_bias(x @ self.effective_kernel().astype(x.dtype))
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
        flat[(*path.split("."), "kernel")] = jnp.transpose(kernel_value(layer), perm)
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
    if scaling is not None and not isinstance(scaling, jax.core.Tracer):
        scaling = float(scaling)  # a concrete array would be an nnx data attribute; a tracer (under jit) stays
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
    the method's scale factor (FourierFT's ``scaling``, LoRA's ``lora_alpha / r``; a traced sweep axis) and is
    refused for methods without one (:func:`fourier_flax.methods.check_scale_override`)."""
    check_scale_override(config, scaling)
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


def merge_adapter(model: nnx.Module, *, unload: bool = True) -> list[str]:
    """Folds every adapter into its layer's kernel, in place; returns the paths.

    With ``unload=True`` (PEFT's ``merge_and_unload``) each :class:`AdaptedModule` is replaced by its base
    layer, now holding ``W0 + ΔW``. With ``unload=False`` (PEFT's ``merge_adapter``) the adapted layers stay and
    compute with the merged kernel until :func:`unmerge_adapter`.
    """
    adapted = adapted_layers(model)
    quantized = sorted(path for path, layer in adapted.items() if isinstance(layer.base, QuantizedLinear))
    if quantized:
        raise ValueError(
            f"modules {quantized[:3]} have a 4-bit base: W0 + ΔW is not representable in its blocks without "
            "requantizing, which would lose most of the update. Keep the adapter unmerged (it runs on the 4-bit "
            "base), or load the base in float (from_gguf(..., quantized=False)) and merge there."
        )
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
