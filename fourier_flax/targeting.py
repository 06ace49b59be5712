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

  matches_module("encoder.layer.0.attention.self.query", ("query", "value"))
  # True
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Literal

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


Bias = Literal["none", "all", "fourier_only", "lora_only"]

# PEFT's default FourierFT/LoRA targets for the architectures fourier_flax tests.
DEFAULT_TARGET_MODULES: Mapping[str, tuple[str, ...]] = {
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
    "vit": ("query", "value"),
    "gpt2": ("c_attn",),
    "llama": ("q_proj", "v_proj"),
}


def _as_patterns(value):
    """Lists become tuples (hashable, immutable); a regex string stays a string."""
    return value if value is None or isinstance(value, str) else tuple(value)


def _frozen(value):
    """A hashable stand-in for a config field's value (mappings as sorted items, lists as tuples)."""
    if isinstance(value, Mapping):
        return tuple(sorted((key, _frozen(item)) for key, item in value.items()))
    if isinstance(value, list | tuple):
        return tuple(_frozen(item) for item in value)
    return value


@dataclasses.dataclass(frozen=True, kw_only=True)
class TargetingConfig:
    """Fields shared by every adapter config (PEFT's names and meaning): which modules it adapts, what else trains.

    A method's config subclasses it (frozen, keyword-only) and adds its own hyperparameters.

    Example::

      @dataclasses.dataclass(frozen=True, kw_only=True)
      class MyConfig(TargetingConfig):
          rank: int = 4

      MyConfig(target_modules=["q_proj", "v_proj"]).is_targeted("model.layers.0.self_attn.q_proj")  # True
    """

    target_modules: str | tuple[str, ...] | None = None
    exclude_modules: str | tuple[str, ...] | None = None
    layers_to_transform: int | tuple[int, ...] | None = None
    layers_pattern: str | tuple[str, ...] | None = None
    modules_to_save: tuple[str, ...] | None = None
    fan_in_fan_out: bool = False
    kernel_in_axes: Mapping[str, int] = dataclasses.field(default_factory=dict)

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Keep the hash below: @dataclass would otherwise generate one that fails on the mapping fields.
        cls.__hash__ = TargetingConfig.__hash__

    def __hash__(self) -> int:
        """Configs are hashable (mapping fields hash as sorted items), so a config can sit in static jit
        arguments and in flax.nnx graph definitions."""
        return hash((type(self).__name__, *(_frozen(getattr(self, f.name)) for f in dataclasses.fields(self))))

    def __post_init__(self):
        object.__setattr__(self, "kernel_in_axes", dict(self.kernel_in_axes))
        for name in ("target_modules", "exclude_modules", "layers_pattern", "modules_to_save"):
            object.__setattr__(self, name, _as_patterns(getattr(self, name)))
        if isinstance(self.layers_to_transform, list):
            object.__setattr__(self, "layers_to_transform", tuple(self.layers_to_transform))
        if self.target_modules is None or len(self.target_modules) == 0:
            defaults = ", ".join(f"{k}: {list(v)}" for k, v in DEFAULT_TARGET_MODULES.items())
            raise ValueError(f"target_modules is required: name the modules to adapt (PEFT's defaults are {defaults}).")
        if self.layers_pattern is not None and self.layers_to_transform is None:
            raise ValueError("layers_pattern only makes sense with layers_to_transform; set both.")

    def is_targeted(self, path: str) -> bool:
        """Whether the module at dotted ``path`` gets an adapter (PEFT's ``check_target_module_exists``)."""
        if matches_module(path, self.exclude_modules):
            return False
        if inside_saved_module(path, self.modules_to_save):
            return False  # PEFT never adapts a module it trains in full
        if not matches_module(path, self.target_modules):
            return False
        exact = isinstance(self.target_modules, str) or path in self.target_modules
        if self.layers_to_transform is None or exact:
            return True
        index = layer_index(path, self.layers_pattern)
        wanted = self.layers_to_transform
        wanted = (wanted,) if isinstance(wanted, int) else wanted
        return index is not None and index in wanted

    def is_saved_module(self, path: str) -> bool:
        """Whether the module at ``path`` is a fully trained ``modules_to_save`` module (e.g. the head)."""
        return matches_module(path, self.modules_to_save)

    def kernel_in_axes_for(self, path: str) -> int:
        """How many leading kernel axes the module at ``path`` contracts (1 unless ``kernel_in_axes`` says)."""
        return pattern_value(path, self.kernel_in_axes, 1)
