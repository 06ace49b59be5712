r"""Which modules an adapter targets: PEFT's matching rules on dotted module paths.

A module path is the dotted path of a module in the params tree, e.g. ``encoder.layer.0.attention.self.query``
(what PEFT calls the module's key). The rules follow PEFT's ``check_target_module_exists``:

* a module inside a ``modules_to_save`` module (a path with a component sequence matching one of its names,
  ``re.match(rf"(^|.*\.){m}($|\..*)", path)``) is never adapted: it is trained in full;
* a list of names matches a path that equals a name or ends with ``"." + name``;
* a string is a regular expression that must match the whole path;
* ``layers_to_transform`` applies only to names matched by suffix (not to exact paths or a regex) and keeps
  the paths whose *first* numbered segment is listed: with ``layers_pattern``, the number after
  ``(?:^|.*?\.)<pattern>.``; without, ``re.match(r".*?\.[^.]*\.(\d+)\.", path)``, which needs a component
  before the layer list — GPT-2's ``h.1.attn.c_attn`` has none, so nothing there matches (as in PEFT 0.21).

Example::

  >>> matches_module("encoder.layer.0.attention.self.query", ("query", "value"))
  True
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence

ModulePatterns = str | Sequence[str]


def matches_module(path: str, patterns: ModulePatterns | None) -> bool:
    """Whether ``path`` matches ``patterns`` (a full-match regex string, or names matched by suffix)."""
    if patterns is None:
        return False
    if isinstance(patterns, str):
        return re.fullmatch(patterns, path) is not None
    return any(path == name or path.endswith("." + name) for name in patterns)


def layer_index(path: str, layers_pattern: str | Sequence[str] | None) -> int | None:
    """The layer number of ``path`` by PEFT's ``check_target_module_exists`` rule, or None if it has none."""
    names = [layers_pattern] if isinstance(layers_pattern, str) else list(layers_pattern or [])
    if not names:
        match = re.match(r".*?\.[^.]*\.(?P<idx>\d+)\.", path)
        return int(match.group("idx")) if match else None
    for name in names:
        match = re.match(rf"(?:^|.*?\.){name}\.(?P<idx>\d+)\.", path)
        if match:
            return int(match.group("idx"))
    return None


def inside_saved_module(path: str, modules_to_save: Sequence[str] | None) -> bool:
    """Whether ``path`` is (inside) a ``modules_to_save`` module, by PEFT's rule."""
    return any(re.match(rf"(^|.*\.){name}($|\..*)", path) for name in modules_to_save or ())


def pattern_value(path: str, patterns: Mapping[str, int], default: int) -> int:
    """PEFT's per-module override lookup: the first key ``k`` with ``re.match(rf"(.*\\.)?{k}$", path)``."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?{key}$", path):
            return value
    return default


def describe_paths(paths: Iterable[str], limit: int = 40) -> str:
    """A readable listing of module paths for error messages."""
    paths = sorted(paths)
    shown = "\n  ".join(paths[:limit])
    more = f"\n  … and {len(paths) - limit} more" if len(paths) > limit else ""
    return f"  {shown}{more}"
