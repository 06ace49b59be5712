"""Module paths in a Flax params tree: find the modules that hold a ``kernel``, read and replace them by path.

A module path is the dotted path of a module inside the ``'params'`` collection, e.g.
``encoder.layer.0.attention.self.query`` (Hugging Face PEFT's module key for the same PyTorch layer). A module is
a mapping that holds a ``kernel`` leaf; its other entries (``bias``, adapter leaves) sit beside it.

Trees come in two forms, and every function here accepts both:

* a variables dict ``{'params': {...}, ...}`` as returned by ``Module.init`` (other collections pass through);
* a bare params tree as held by Hugging Face Flax models (``model.params``).

A tree whose top level has a mapping under the key ``'params'`` is read as a variables dict.

Example::

  variables = nn.Sequential([nn.Dense(4), nn.Dense(2)]).init(jax.random.key(0), jnp.ones((1, 3)))
  kernel_paths(variables)
  # ['layers_0', 'layers_1']
  get_module(variables, "layers_1")["kernel"].shape
  # (4, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from flax.core import FrozenDict

Tree = Mapping[str, Any]


def is_variables_dict(tree: Tree) -> bool:
    """Whether ``tree`` is a variables dict ``{'params': {...}, ...}`` rather than a bare params tree."""
    return isinstance(tree.get("params"), Mapping)


def params_of(tree: Tree) -> Tree:
    """The params tree inside ``tree`` (itself when bare)."""
    return tree["params"] if is_variables_dict(tree) else tree


def with_params(tree: Tree, params: Tree) -> Tree:
    """``tree`` with its params tree replaced by ``params``, in ``tree``'s own form (variables dict or bare)."""
    if not is_variables_dict(tree):
        return params
    return _like(tree, {**tree, "params": params})


def _like(template: Tree, value: dict) -> Tree:
    return FrozenDict(value) if isinstance(template, FrozenDict) else value


def kernel_paths(tree: Tree) -> list[str]:
    """Sorted dotted paths of every module holding a ``kernel`` in the params of ``tree``."""
    found = []

    def walk(node: Tree, prefix: tuple[str, ...]) -> None:
        if "kernel" in node and not isinstance(node["kernel"], Mapping):
            found.append(".".join(prefix))
        for key, child in node.items():
            if isinstance(child, Mapping):
                walk(child, (*prefix, str(key)))

    walk(params_of(tree), ())
    return sorted(found)


def get_module(tree: Tree, path: str) -> Tree:
    """The module mapping at dotted ``path`` in the params of ``tree``.

    Raises:
      KeyError: no module at ``path``.
    """
    node = params_of(tree)
    for key in path.split(".") if path else []:
        if not isinstance(node, Mapping) or key not in node:
            raise KeyError(f"no module at {path!r} in the params tree (missing {key!r}).")
        node = node[key]
    return node


def update_modules(tree: Tree, updates: Mapping[str, Callable[[Tree], Mapping]]) -> Tree:
    """A new tree in which the module at each path of ``updates`` is replaced by ``updates[path](module)``.

    Only the mappings on the way to an updated module are rebuilt; every other subtree and every leaf is the same
    object as in ``tree``.
    """

    def rebuild(node: Tree, prefix: tuple[str, ...]) -> Tree:
        path = ".".join(prefix)
        if path in updates:
            return _like(node, dict(updates[path](node)))
        below = {p for p in updates if prefix == () or p.startswith(path + ".")}
        if not below:
            return node
        return _like(
            node,
            {k: rebuild(v, (*prefix, str(k))) if isinstance(v, Mapping) else v for k, v in node.items()},
        )

    existing = set(kernel_paths(tree))
    missing = [p for p in updates if p not in existing]
    if missing:
        raise KeyError(f"no kernel module at {missing} in the params tree.")
    return with_params(tree, rebuild(params_of(tree), ()))
