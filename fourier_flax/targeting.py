"""Which modules an adapter targets: PEFT's matching rules on dotted module paths.

A module path is the dotted path of a module in the params tree, e.g. ``encoder.layer.0.attention.self.query``
(what PEFT calls the module's key). The rules follow PEFT's ``check_target_module_exists``:

* a list of names matches a path that equals a name or ends with ``"." + name``;
* a string is a regular expression that must match the whole path;
* ``layers_to_transform`` keeps only paths whose layer index (the number after ``layers_pattern``, or after any
  path component when no pattern is given) is listed.

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
    """The layer number in ``path`` (``...<layers_pattern>.<index>...``), or None if it has none."""
    names = [layers_pattern] if isinstance(layers_pattern, str) else list(layers_pattern or [])
    alternatives = "|".join(re.escape(name) for name in names) if names else r"[^.]+"
    match = re.search(rf"(?:^|\.)(?:{alternatives})\.(\d+)(?:\.|$)", path)
    return int(match.group(1)) if match else None


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
