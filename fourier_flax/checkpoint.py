"""Adapter checkpoints on orbax: :func:`save_adapter` writes only the trained leaves, :func:`load_adapter` checks
them against a base model before putting them back.

A checkpoint is a directory managed by ``orbax.checkpoint.CheckpointManager`` that holds one step::

  path/
    3/                      # the step number grows by one with every save to the same path
      adapter/              # the trained leaves (orbax StandardSave): spectra or LoRA factors, head, biases
      metadata/metadata     # JSON (orbax JsonSave): config, modules, kernel shapes, entry digests, versions

Saving is atomic: orbax writes step ``k + 1`` into a ``k+1.orbax-checkpoint-tmp-*`` directory, renames it once
every file is written, and only then deletes step ``k``. A save that dies half-way leaves the previous step in
place and loadable; the stale temporary directory is ignored by :func:`load_adapter` and removed by the next
save.

The metadata records, per adapted module, its kernel shape and (FourierFT) the sampling rule, seed, grid and a
sha256 of the entry set ``E``. :func:`load_adapter` recomputes ``E`` from the *base* kernel and compares, so an
adapter never silently lands on a kernel of another shape or on entries drawn by another sampler.

Example::

  save_adapter("/tmp/sst2_adapter", params, config)
  config, params = load_adapter("/tmp/sst2_adapter", base_params)  # base_params: the pretrained tree
"""

from __future__ import annotations

import dataclasses
import pathlib
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from flax import traverse_util

from fourier_flax import module_paths
from fourier_flax.adapted_modules import adapter_leaf_names, kernel_view, stacked_layers
from fourier_flax.adapter import init_adapter
from fourier_flax.methods import ADAPTER_LEAVES, REGISTRY, AdapterConfig, method_of
from fourier_flax.partition import param_labels
from fourier_flax.version import __version__

FORMAT = "fourier_flax.adapter"
FORMAT_VERSION = 1
ADAPTER_ITEM, METADATA_ITEM = "adapter", "metadata"
_TMP_MARKER = ".orbax-checkpoint-tmp"
_CONFIG_TYPES = {method.name: config_type for config_type, method in REGISTRY.items()}

Params = Mapping[str, Any]


class AdapterMismatchError(ValueError):
    """An adapter does not fit the base params; ``mismatches`` lists every problem found."""

    def __init__(self, headline: str, mismatches: list[str]):
        self.mismatches = mismatches
        listed = "\n".join(f"  - {m}" for m in mismatches)
        super().__init__(f"{headline} ({len(mismatches)} problems):\n{listed}")


# --- config <-> JSON ---------------------------------------------------------------------------------------


def config_to_dict(config: AdapterConfig) -> dict[str, Any]:
    """Every field of ``config`` as JSON-ready values, plus ``"adapter_type"`` ("fourierft" or "lora")."""
    kind = method_of(config).name
    fields = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)}
    as_json = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
    return {"adapter_type": kind, **as_json}


def config_from_dict(data: Mapping[str, Any]) -> AdapterConfig:
    """The config :func:`config_to_dict` wrote.

    Raises:
      ValueError: unknown ``adapter_type`` or fields this version does not know.
    """
    data = dict(data)
    kind = data.pop("adapter_type", None)
    if kind not in _CONFIG_TYPES:
        raise ValueError(f"adapter_type must be one of {sorted(_CONFIG_TYPES)}, got {kind!r}.")
    cls = _CONFIG_TYPES[kind]
    unknown = sorted(set(data) - {f.name for f in dataclasses.fields(cls)})
    if unknown:
        raise ValueError(
            f"the saved {cls.__name__} has fields {unknown} that this fourier_flax "
            f"({__version__}) does not know; load it with the version that wrote it."
        )
    return cls(**data)


# --- what an adapter holds ----------------------------------------------------------------------------------


def _module_record(config: AdapterConfig, path: str, module: Mapping[str, Any]) -> dict[str, Any]:
    """What :func:`load_adapter` checks about one adapted module: kernel shape, stacking, the method's own."""
    kernel_shape = tuple(np.shape(module["kernel"]))
    stack = stacked_layers(config, module)
    view = kernel_view(path, kernel_shape[stack:], config.kernel_in_axes_for(path))
    record = {"kernel_shape": list(kernel_shape), "stacked_axes": stack}
    return {**record, **method_of(config).module_record(config, path, module, view)}


def adapter_leaves(params: Params, config: AdapterConfig) -> dict[tuple[str, ...], Any]:
    """The leaves an adapter file holds: every trained leaf of ``params`` under ``config``.

    Those are the adapter leaves (``fourierft_spectrum``, or ``lora_a``/``lora_b``), the ``modules_to_save``
    leaves and the biases ``config.bias`` trains. Keys are key paths inside the params collection.
    """
    labels = traverse_util.flatten_dict(param_labels(module_paths.params_of(params), config))
    flat = traverse_util.flatten_dict(module_paths.params_of(params))
    return {key: flat[key] for key, label in labels.items() if label != "frozen"}


def _adapted_modules(leaves: Mapping[tuple[str, ...], Any], config: AdapterConfig) -> list[str]:
    own = adapter_leaf_names(config)
    return sorted({".".join(key[:-1]) for key in leaves if key[-1] in own})


def adapter_metadata(params: Params, config: AdapterConfig) -> dict[str, Any]:
    """The JSON metadata :func:`save_adapter` writes beside the leaves of ``params``."""
    leaves = adapter_leaves(params, config)
    modules = {
        path: _module_record(config, path, module_paths.get_module(params, path))
        for path in _adapted_modules(leaves, config)
    }
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "library_version": __version__,
        "config": config_to_dict(config),
        "modules": modules,
        "leaves": {
            ".".join(key): {"shape": list(np.shape(leaf)), "dtype": str(np.asarray(leaf).dtype)}
            for key, leaf in sorted(leaves.items())
        },
    }


# --- on disk ------------------------------------------------------------------------------------------------


def _manager(path: pathlib.Path) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=1, enable_async_checkpointing=False, create=True, cleanup_tmp_directories=True
    )
    return ocp.CheckpointManager(path, options=options, item_names=(ADAPTER_ITEM, METADATA_ITEM))


def _check_target_directory(path: pathlib.Path) -> None:
    """Refuses to write into a file, or into a non-empty directory that holds no checkpoint step or unfinished
    save (so never into someone else's files)."""
    if path.exists() and not path.is_dir():
        raise ValueError(f"{path} is a file; save_adapter writes a directory. Choose another path.")
    names = [p.name for p in path.iterdir()] if path.exists() else []
    if names and not any(name.isdigit() or _TMP_MARKER in name for name in names):
        raise ValueError(
            f"{path} exists and holds {sorted(names)[:5]}, which are not fourier_flax adapter checkpoint "
            "steps; refusing to write into it. Choose a new or empty directory."
        )


def save_adapter(path: str | pathlib.Path, params: Params, config: AdapterConfig) -> pathlib.Path:
    """Writes the trained leaves of ``params`` and the metadata that rebuilds them, atomically.

    An existing checkpoint at ``path`` is replaced only once the new one is complete. ``params`` and ``config``
    are checked against each other first, with the checks :func:`load_adapter` runs, so what is saved loads back.

    Args:
      path: the checkpoint directory (created if needed).
      params: a params tree (or variables dict) holding the adapter leaves.
      config: the config the adapter was built with.

    Returns:
      The directory of the step written (``path/<step>``).

    Raises:
      ValueError: ``path`` is a file or a directory of other files; ``params`` holds no adapter of ``config``'s
        kind.
      AdapterMismatchError: ``params`` and ``config`` disagree (a module with adapter leaves the config does not
        target or the reverse, ``n`` or ``r`` other than the config's).

    Example::

      save_adapter("/tmp/adapter", params, FourierFTConfig(target_modules=["query", "value"]))
      # PosixPath('/tmp/adapter/0')
    """
    path = pathlib.Path(path).absolute()
    _check_target_directory(path)
    leaves = adapter_leaves(params, config)
    metadata = adapter_metadata(params, config)
    problems = check_against_base(metadata, config, params)
    if problems:  # the checkpoint would not load back
        raise AdapterMismatchError(
            "the adapter leaves of params do not match the config passed to save_adapter", problems
        )
    tree = traverse_util.unflatten_dict({key: np.asarray(leaf) for key, leaf in leaves.items()})
    manager = _manager(path)
    latest = manager.latest_step()
    step = 0 if latest is None else latest + 1
    manager.save(
        step,
        args=ocp.args.Composite(
            **{ADAPTER_ITEM: ocp.args.StandardSave(tree), METADATA_ITEM: ocp.args.JsonSave(metadata)}
        ),
    )
    manager.close()
    return path / str(step)


def latest_step_directory(path: str | pathlib.Path) -> pathlib.Path:
    """The directory of the newest complete step of the checkpoint at ``path``.

    Raises:
      FileNotFoundError: no complete step (with a note when an interrupted save left a temporary directory).
    """
    path = pathlib.Path(path).absolute()
    steps = sorted(int(p.name) for p in path.iterdir() if p.name.isdigit()) if path.is_dir() else []
    if not steps:
        partial = sorted(p.name for p in path.iterdir() if _TMP_MARKER in p.name) if path.is_dir() else []
        note = f" (only unfinished saves: {partial}; the save that wrote them was interrupted)" if partial else ""
        raise FileNotFoundError(f"no complete fourier_flax adapter checkpoint at {path}{note}.")
    return path / str(steps[-1])


def read_metadata(path: str | pathlib.Path) -> dict[str, Any]:
    """The metadata of the newest step at ``path``, after checking its format and version.

    Raises:
      FileNotFoundError: no checkpoint at ``path``.
      ValueError: not a fourier_flax adapter, or a format version this library cannot read.
    """
    step_dir = latest_step_directory(path)
    metadata = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(step_dir / METADATA_ITEM)
    if metadata.get("format") != FORMAT:
        raise ValueError(f"{step_dir} is not a fourier_flax adapter checkpoint (format {metadata.get('format')!r}).")
    if metadata.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"{step_dir} has adapter format version {metadata.get('format_version')} (written by fourier_flax "
            f"{metadata.get('library_version')}); this fourier_flax ({__version__}) reads version "
            f"{FORMAT_VERSION}. Load it with a matching fourier_flax."
        )
    return metadata


def read_leaves(path: str | pathlib.Path, metadata: Mapping[str, Any]) -> dict[tuple[str, ...], np.ndarray]:
    """The stored leaves of the newest step at ``path``, checked against ``metadata["leaves"]``.

    Raises:
      ValueError: the stored arrays differ from what the metadata records.
    """
    step_dir = latest_step_directory(path)
    tree = ocp.StandardCheckpointer().restore(step_dir / ADAPTER_ITEM)
    flat = {".".join(key): leaf for key, leaf in traverse_util.flatten_dict(tree).items()}
    recorded = metadata["leaves"]
    problems = [f"{k}: recorded but not stored" for k in sorted(recorded.keys() - flat.keys())]
    problems += [f"{k}: stored but not recorded" for k in sorted(flat.keys() - recorded.keys())]
    problems += [
        f"{k}: stored {np.shape(flat[k])} {flat[k].dtype}, recorded {tuple(r['shape'])} {r['dtype']}"
        for k, r in sorted(recorded.items())
        if k in flat and (list(np.shape(flat[k])) != r["shape"] or str(flat[k].dtype) != r["dtype"])
    ]
    if problems:
        raise ValueError(f"the checkpoint at {step_dir} is inconsistent:\n" + "\n".join(f"  - {p}" for p in problems))
    return dict(traverse_util.flatten_dict(tree))


# --- loading onto a base ------------------------------------------------------------------------------------


def check_against_base(metadata: Mapping[str, Any], config: AdapterConfig, base_params: Params) -> list[str]:
    """Every way the recorded adapter does not fit ``base_params`` (an empty list when it fits)."""
    base = traverse_util.flatten_dict(module_paths.params_of(base_params))
    kernels = set(module_paths.kernel_paths(base_params))
    recorded = metadata["modules"]
    problems = []
    for path in sorted(recorded.keys() - kernels):
        problems.append(f"module {path}: in the adapter, but the base params have no kernel there")
    for path in sorted(p for p in recorded if not config.is_targeted(p)):
        problems.append(f"module {path}: has adapter weights, but the config does not target it")
    own = method_of(config).leaf_names  # every leaf the method may add (FLoRA's factors vary by module)
    for path in sorted(p for p in kernels - recorded.keys() if config.is_targeted(p)):
        problems.append(f"module {path}: targeted by the config, but the adapter has no weights for it")
    for key in sorted(k for k in base if k[-1] in ADAPTER_LEAVES):
        if ".".join(key[:-1]) not in recorded or key[-1] not in own:
            problems.append(f"leaf {'.'.join(key)}: the base params already hold an adapter leaf the checkpoint lacks")
    for path in sorted(recorded.keys() & kernels):
        problems += _module_problems(path, recorded[path], config, base[(*path.split("."), "kernel")])
    for name, leaf in sorted(metadata["leaves"].items()):
        key = tuple(name.split("."))
        if key[-1] in own:
            continue
        if key not in base:
            problems.append(f"leaf {name}: in the adapter, but not in the base params")
        elif list(np.shape(base[key])) != leaf["shape"]:
            problems.append(f"leaf {name}: adapter shape {tuple(leaf['shape'])}, base shape {np.shape(base[key])}")
    return problems


def _module_problems(path: str, record: Mapping[str, Any], config: AdapterConfig, kernel: Any) -> list[str]:
    shape = tuple(np.shape(kernel))
    if list(shape) != record["kernel_shape"]:
        trained = tuple(record["kernel_shape"])
        return [f"module {path}: the adapter was trained on a kernel of shape {trained}, the base kernel is {shape}"]
    view = kernel_view(path, shape[record["stacked_axes"] :], config.kernel_in_axes_for(path))
    return method_of(config).record_problems(config, path, record, view, kernel=kernel)


def load_adapter(path: str | pathlib.Path, base_params: Params) -> tuple[AdapterConfig, Params]:
    """Reads the adapter at ``path`` and puts its leaves into ``base_params``.

    Everything is checked before anything is applied: modules missing from the base or targeted but absent from
    the adapter, kernel shapes, ``n``, the seed, sampling rule and entry digest, leaf shapes, and the format
    version. All problems are reported together.

    Args:
      path: a directory written by :func:`save_adapter`.
      base_params: the pretrained params tree (or variables dict), with or without adapter leaves.

    Returns:
      ``(config, params)``: the saved config and ``base_params`` with the adapter, head and bias leaves of the
      checkpoint (every other leaf is ``base_params``' own object).

    Raises:
      AdapterMismatchError: the adapter does not fit ``base_params``; its message lists every mismatch.

    Example::

      config, params = load_adapter("/tmp/adapter", model.params)
      with fourier_flax.intercept(config):
          logits = model(input_ids, params=params).logits
    """
    metadata = read_metadata(path)
    config = config_from_dict(metadata["config"])
    problems = check_against_base(metadata, config, base_params)
    if problems:
        written = metadata["library_version"]
        if written != __version__ and any("sha256" in p for p in problems):
            problems.append(f"the adapter was written by fourier_flax {written}, this is {__version__}")
        raise AdapterMismatchError(f"the adapter at {path} does not match the base params", problems)
    leaves = read_leaves(path, metadata)
    return config, apply_leaves(with_frozen_leaves(base_params, config), leaves)


def with_frozen_leaves(base_params: Params, config: AdapterConfig) -> Params:
    """``base_params`` with the adapter's never-trained leaves (VeRA's projections) rebuilt from ``config``, which
    adapter files do not store; unchanged for methods without such leaves."""
    if not method_of(config).frozen_leaf_names:
        return base_params
    return init_adapter(base_params, config, jax.random.key(0), check_scale=False)


def apply_leaves(base_params: Params, leaves: Mapping[tuple[str, ...], Any]) -> Params:
    """``base_params`` with ``leaves`` (key paths inside the params collection) set, as JAX arrays."""
    flat = traverse_util.flatten_dict(module_paths.params_of(base_params))
    flat.update({key: jnp.asarray(leaf) for key, leaf in leaves.items()})
    return module_paths.with_params(base_params, traverse_util.unflatten_dict(flat))
