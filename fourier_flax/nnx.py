"""Adapters for flax.nnx models: surgery that swaps targeted ``nnx.Linear`` layers for adapted ones, in place.

:func:`apply_adapter` walks an NNX model, matches each ``nnx.Linear``'s attribute path (``encoder.layers.0.query``)
with PEFT's targeting rules, and replaces it by an :class:`AdaptedLinear` that keeps the pretrained kernel (and
bias) and adds the method's leaves as :class:`AdapterParam` variables — so ``nnx.Optimizer(model, tx,
wrt=AdapterParam)``, ``nnx.state(model, AdapterParam)`` and ``nnx.DiffState`` select exactly the adapter, as
``nnx.LoRAParam`` does for ``nnx.LoRA``. Every method of :mod:`fourier_flax.methods` works through its protocol
(leaves, init, adapted kernel); frozen leaves (VeRA's projections, SVFT's singular vectors) are plain
``nnx.Variable``s. :func:`merge_adapter` folds the update back into plain ``nnx.Linear`` layers.

Example::

  >>> model = MyNnxModel(rngs=nnx.Rngs(0))
  >>> apply_adapter(model, FourierFTConfig(target_modules=["query", "value"], n_frequency=100), nnx.Rngs(1))
  >>> optimizer = nnx.Optimizer(model, optax.adam(0.1), wrt=AdapterParam)
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from fourier_flax import targeting
from fourier_flax.methods import method_of


class AdapterParam(nnx.Param):
    """A trained adapter leaf (FourierFT's spectrum, LoRA's factors, ...): filter on it to train only adapters."""


class FrozenAdapterVariable(nnx.Variable):
    """An adapter leaf that never trains (VeRA's shared projections, SVFT's singular vectors)."""


class AdaptedLinear(nnx.Module):
    """An ``nnx.Linear`` with an adapter: ``y = x @ W' + b``, ``W'`` the method's adapted kernel (float32, cast).

    Attributes:
      kernel / bias: the pretrained ``nnx.Param``s of the replaced layer (same objects).
      adapter: the method's leaves by name (``AdapterParam`` or ``FrozenAdapterVariable``).
    """

    def __init__(self, linear: nnx.Linear, config: Any, path: str, rngs: nnx.Rngs):
        self.config, self.path = config, path
        self.kernel = linear.kernel
        self.bias = linear.bias
        self.dtype = linear.dtype
        method = method_of(config)
        kernel = jnp.asarray(self.kernel[...])
        view = tuple(kernel.shape)
        leaves = method.init_leaves(
            config,
            path,
            view,
            (),
            rngs.params(),
            kernel=kernel,
            modes=view,
            shared=method.prepare(config, {path: view}),
        )
        trained = set(method.trained_leaves_for(config))
        self.adapter = nnx.Dict(
            {
                name: (AdapterParam if name in trained else FrozenAdapterVariable)(value)
                for name, value in leaves.items()
            }
        )

    def _module(self) -> dict[str, jax.Array]:
        return {"kernel": self.kernel[...], **{name: variable[...] for name, variable in self.adapter.items()}}

    def effective_kernel(self) -> jax.Array:
        """The float32 kernel this layer computes with."""
        module = self._module()
        return method_of(self.config).effective_kernel(self.config, self.path, module, tuple(module["kernel"].shape))

    def __call__(self, x: jax.Array) -> jax.Array:
        dtype = self.dtype or x.dtype
        y = jnp.asarray(x, dtype) @ self.effective_kernel().astype(dtype)
        if self.bias is not None:
            y = y + jnp.asarray(self.bias[...], dtype)
        return y


def _linear_paths(model: nnx.Module) -> dict[str, nnx.Linear]:
    found = {}
    for path, node in nnx.iter_graph(model):
        if isinstance(node, nnx.Linear):
            found[".".join(str(p) for p in path)] = node
    return found


def _replace(model: nnx.Module, path: str, new: Any) -> None:
    *parents, last = path.split(".")
    node = model
    for part in parents:
        node = node[int(part)] if isinstance(node, (list, nnx.List)) else getattr(node, part)
    if isinstance(node, (list, nnx.List)):
        node[int(last)] = new
    else:
        setattr(node, last, new)


def apply_adapter(model: nnx.Module, config: Any, rngs: nnx.Rngs) -> list[str]:
    """Replaces every targeted ``nnx.Linear`` of ``model`` by an :class:`AdaptedLinear`, in place.

    Returns:
      The adapted paths.

    Raises:
      ValueError: the targets match no ``nnx.Linear`` (the message lists the paths that exist).
    """
    linears = _linear_paths(model)
    paths = sorted(p for p in linears if config.is_targeted(p))
    if not paths:
        raise ValueError(
            f"target_modules={config.target_modules!r} matches none of the model's nnx.Linear layers:\n"
            + targeting.describe_paths(linears)
        )
    for path in paths:
        _replace(model, path, AdaptedLinear(linears[path], config, path, rngs))
    return paths


def merge_adapter(model: nnx.Module) -> list[str]:
    """Folds every :class:`AdaptedLinear` of ``model`` back into a plain ``nnx.Linear`` (in place); returns paths."""
    adapted = {
        ".".join(str(p) for p in path): node for path, node in nnx.iter_graph(model) if isinstance(node, AdaptedLinear)
    }
    for path, layer in adapted.items():
        kernel = layer.effective_kernel().astype(layer.kernel[...].dtype)
        d_in, d_out = kernel.shape
        linear = nnx.Linear(d_in, d_out, use_bias=layer.bias is not None, dtype=layer.dtype, rngs=nnx.Rngs(0))
        linear.kernel = nnx.Param(kernel)
        if layer.bias is not None:
            linear.bias = nnx.Param(layer.bias[...])
        _replace(model, path, linear)
    return sorted(adapted)
