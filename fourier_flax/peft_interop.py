"""Adapters to and from Hugging Face PEFT's files: :func:`export_peft` and :func:`import_peft`.

FourierFT is described below; LoRA, DoRA (PEFT's ``LoraConfig(use_dora=True)``) and VeRA (with its shared
``base_model.vera_A`` / ``vera_B``) go through the same two functions, each method saying how its leaves map to
PEFT's tensors (:mod:`fourier_flax.methods`).

PEFT's ``save_pretrained`` writes two files:

* ``adapter_config.json`` — ``peft_type: "FOURIERFT"`` and the fields of PEFT's ``FourierFTConfig`` (ours carry
  the same names);
* ``adapter_model.safetensors`` — float32 tensors keyed ``base_model.model.<module>.<name>``:
  ``<module>.fourierft_spectrum`` ``(n,)`` per adapted layer; ``modules_to_save`` leaves as PyTorch parameters
  (``classifier.weight`` ``(out, in)``, ``classifier.bias``); trained biases as ``<module>.bias``, or
  ``<module>.base_layer.bias`` on an adapted layer.

The spectra need no conversion: our entry set for a Flax ``(in, out)`` kernel is PEFT's entry set on the PyTorch
``(out, in)`` weight, transposed (:func:`fourier_flax.methods.fourierft.peft_entries`), and both hold the
coefficients in the same order. Head kernels are transposed to and from PyTorch's ``(out, in)``, LayerNorm
``scale`` is PyTorch's ``weight``.

Module paths: for Hugging Face twins (``BertModel`` / ``FlaxBertModel``, ``BertForSequenceClassification`` /
``FlaxBertForSequenceClassification``) PEFT's module keys and our module paths coincide. Otherwise
:func:`import_peft` takes a ``module_map`` and :func:`export_peft` a ``module_prefix``.

Example::

  export_peft(params, config, "adapter_for_peft")          # then, in PyTorch:
  # PeftModel.from_pretrained(BertModel.from_pretrained(...), "adapter_for_peft")
  config, params = import_peft("peft_adapter_dir", model.params)
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any, Literal

import jax
import numpy as np
import safetensors.numpy
from flax import traverse_util

from fourier_flax import module_paths, targeting
from fourier_flax.adapted_modules import adapter_leaf_names, adapter_module_paths, kernel_view, module_layout_check
from fourier_flax.adapter import init_adapter
from fourier_flax.atomic_dir import atomic_directory
from fourier_flax.checkpoint import AdapterMismatchError, adapter_leaves, apply_leaves
from fourier_flax.methods import AdapterConfig, method_for_peft, method_of
from fourier_flax.methods.fourierft import SPECTRUM, FourierFTConfig

PEFT_PREFIX = "base_model.model."
CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"

# Bookkeeping fields of PeftConfig that do not change the adapter.
PEFT_BOOKKEEPING = (
    "peft_type",
    "peft_version",
    "auto_mapping",
    "base_model_name_or_path",
    "revision",
    "task_type",
    "inference_mode",
)
# Flax leaf name -> PyTorch parameter name, for modules_to_save modules.
_TORCH_NAMES = {"kernel": "weight", "scale": "weight", "embedding": "weight", "bias": "bias"}
# Segments PEFT's bias="all" adds to keys of a modules_to_save wrapper (duplicates of the head's bias).
_PEFT_WRAPPER_SEGMENTS = {"original_module", "modules_to_save"}

ModuleMap = Mapping[str, str] | Callable[[str], str]
# The PEFT release whose files these were checked against (tests/test_peft_interop.py loads them in it).
PEFT_FORMAT_VERSION = "0.21.2"
PEFT_TASK_TYPES = ("SEQ_CLS", "SEQ_2_SEQ_LM", "CAUSAL_LM", "TOKEN_CLS", "QUESTION_ANS", "FEATURE_EXTRACTION")
_TASK_SUFFIXES = (
    ("ForSequenceClassification", "SEQ_CLS"),
    ("ForCausalLM", "CAUSAL_LM"),
    ("LMHeadModel", "CAUSAL_LM"),
    ("ForSeq2SeqLM", "SEQ_2_SEQ_LM"),
    ("ForConditionalGeneration", "SEQ_2_SEQ_LM"),
    ("ForTokenClassification", "TOKEN_CLS"),
    ("ForQuestionAnswering", "QUESTION_ANS"),
)


# --- targeting that PEFT reproduces ---------------------------------------------------------------------------


def _targets_exactly(config: AdapterConfig, candidates: set[str], n_by_module: Mapping[str, int]) -> bool:
    """Whether ``config``'s rules select exactly the modules of ``n_by_module`` among ``candidates`` (and, for
    FourierFT, with their ``n``)."""
    selected = {path for path in candidates | set(n_by_module) if config.is_targeted(path)}
    if not isinstance(config, FourierFTConfig):
        return selected == set(n_by_module)
    return selected == set(n_by_module) and all(config.n_frequency_for(p) == n for p, n in n_by_module.items())


def explicit_targets(config: AdapterConfig, n_by_module: Mapping[str, int]) -> AdapterConfig:
    """``config`` rewritten to name exactly the modules of ``n_by_module`` (full paths) with their ``n``.

    Used when ``config``'s own patterns would select other modules on the other side of a conversion (other path
    prefixes, a base with more layers than the adapter): the most common ``n`` becomes ``n_frequency``, the
    others go to ``n_frequency_pattern`` under their full paths.
    """
    explicit = dataclasses.replace(
        config,
        target_modules=tuple(sorted(n_by_module)),
        exclude_modules=None,
        layers_to_transform=None,
        layers_pattern=None,
    )
    if not isinstance(config, FourierFTConfig):
        return explicit
    n_default = Counter(n_by_module.values()).most_common(1)[0][0]
    return dataclasses.replace(
        explicit,
        n_frequency=n_default,
        n_frequency_pattern={path: n for path, n in sorted(n_by_module.items()) if n != n_default},
    )


# --- export ---------------------------------------------------------------------------------------------------


def _check_exportable(config: Any) -> None:
    reason = method_of(config).peft_unsupported(config)
    if reason:
        raise ValueError(f"{reason}. Keep it in fourier_flax's own format (save_adapter).")


def peft_tensors(
    leaves: Mapping[tuple[str, ...], Any],
    config: AdapterConfig,
    module_prefix: str = PEFT_PREFIX,
    shared: Mapping[str, Any] | None = None,
) -> dict[str, np.ndarray]:
    """PEFT's state dict (float32 NumPy arrays by key) for the trained ``leaves`` of an adapter.

    Args:
      leaves: key path inside the params collection -> array, as :func:`fourier_flax.checkpoint.adapter_leaves`.
      config: the adapter's config (a method PEFT has: FourierFT, LoRA, DoRA, VeRA).
      module_prefix: prepended to every module path.
      shared: tensors shared by every module (VeRA's projections), by key after ``base_model.``.

    Raises:
      ValueError: stacked (``nn.scan``) adapter leaves, or a head leaf with no PyTorch counterpart.
    """
    method = method_of(config)
    own = set(method.trained_leaves_for(config))
    modules: dict[tuple[str, ...], dict[str, Any]] = {}
    for key, leaf in leaves.items():
        if key[-1] in own:
            modules.setdefault(key[:-1], {})[key[-1]] = leaf
    tensors = {f"base_model.{name}": np.asarray(value, np.float32) for name, value in (shared or {}).items()}
    for module, module_leaves in sorted(modules.items()):
        path = ".".join(module)
        for suffix, value in method.peft_module_tensors(config, path, module_leaves).items():
            tensors[f"{module_prefix}{path}.{suffix}"] = value
    for key, leaf in sorted(leaves.items()):
        module, name = ".".join(key[:-1]), key[-1]
        value = np.asarray(leaf, np.float32)
        if name in own:
            continue
        if _is_saved(key[:-1], config):
            if name not in _TORCH_NAMES or (name == "kernel" and value.ndim != 2):
                raise ValueError(
                    f"modules_to_save leaf {module}.{name} {value.shape} has no PyTorch equivalent this exporter "
                    f"knows (it maps {sorted(_TORCH_NAMES)}, with 2-D kernels)."
                )
            tensors[f"{module_prefix}{module}.{_TORCH_NAMES[name]}"] = value.T if name == "kernel" else value
        else:  # a trained bias
            wrapped = ".base_layer" if key[:-1] in modules else ""
            tensors[f"{module_prefix}{module}{wrapped}.bias"] = value
    return {k: np.ascontiguousarray(v) for k, v in tensors.items()}


def _is_saved(module: tuple[str, ...], config: AdapterConfig) -> bool:
    return any(config.is_saved_module(".".join(module[:k])) for k in range(1, len(module) + 1))


def peft_config_dict(
    config: AdapterConfig,
    *,
    base_model_name_or_path: str | None = None,
    task_type: str | None = None,
    base_model_class: str | None = None,
    revision: str | None = None,
) -> dict[str, Any]:
    """``adapter_config.json`` as PEFT's ``save_pretrained`` writes it for ``config``.

    The bookkeeping fields are what ``AutoPeftModel*.from_pretrained(dir)`` reads to rebuild the base model:
    ``base_model_name_or_path`` (a hub id or local folder), and either ``task_type`` (``"SEQ_CLS"``,
    ``"CAUSAL_LM"``, ...; then use the matching ``AutoPeftModelFor...``) or, with no task, ``auto_mapping`` from
    ``base_model_class`` (a transformers PyTorch class name such as ``"BertModel"``), as PEFT writes it.
    ``peft_version`` is the PEFT release this format was verified against (:data:`PEFT_FORMAT_VERSION`).
    """
    if task_type is not None and task_type not in PEFT_TASK_TYPES:
        raise ValueError(f"task_type must be one of {sorted(PEFT_TASK_TYPES)} or None, got {task_type!r}.")
    method = method_of(config)
    fields = {name: getattr(config, name) for name in method.peft_fields}
    fields.update(method.peft_extra_fields(config))
    as_json = {k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}
    auto_mapping = None
    if task_type is None and base_model_class is not None:
        auto_mapping = {"base_model_class": base_model_class, "parent_library": "transformers"}
    bookkeeping = {
        "auto_mapping": auto_mapping,
        "base_model_name_or_path": base_model_name_or_path,
        "revision": revision,
        "task_type": task_type,
        "peft_version": PEFT_FORMAT_VERSION,
    }
    return dict(sorted({**as_json, **bookkeeping, "inference_mode": True, "peft_type": method.peft_type}.items()))


def peft_bookkeeping(model: Any) -> dict[str, str | None]:
    """``base_model_name_or_path``, ``task_type`` and ``base_model_class`` for a Hugging Face Flax model.

    ``FlaxBertForSequenceClassification`` → task ``"SEQ_CLS"``; ``FlaxBertModel`` → no task and the auto mapping
    class ``"BertModel"``; the path is the one the model was loaded from (``config._name_or_path``), if any.
    """
    name = type(model).__name__.removeprefix("Flax")
    task = next((task for suffix, task in _TASK_SUFFIXES if name.endswith(suffix)), None)
    path = getattr(getattr(model, "config", None), "_name_or_path", None) or None
    return {
        "base_model_name_or_path": None if path is None else str(path),
        "task_type": task,
        "base_model_class": None if task else name,
    }


def write_peft(
    out_dir: str | pathlib.Path,
    leaves: Mapping[tuple[str, ...], Any],
    config: AdapterConfig,
    *,
    module_prefix: str = PEFT_PREFIX,
    kernel_modules: tuple[str, ...] = (),
    bookkeeping: Mapping[str, str | None] | None = None,
    shared: Mapping[str, Any] | None = None,
) -> pathlib.Path:
    """Writes PEFT's two files for trained ``leaves`` (the work of :func:`export_peft`), atomically: a reader
    (or a kill) sees the previous export or this one, never one file of each (:mod:`fourier_flax.atomic_dir`).
    ``bookkeeping`` goes to :func:`peft_config_dict`; ``shared`` are tensors shared by all modules (VeRA).

    ``kernel_modules`` are the module paths with a kernel in the model, to check that the config's patterns,
    read by PEFT on its side, select the adapted modules and no others; if not, the written config names the
    adapted modules explicitly (:func:`explicit_targets`).
    """
    _check_exportable(config)
    if not module_prefix.startswith(PEFT_PREFIX):
        raise ValueError(
            f"module_prefix must start with {PEFT_PREFIX!r} (PEFT's PeftModel keys); got {module_prefix!r}."
        )
    tensors = peft_tensors(leaves, config, module_prefix, shared)
    peft_side = module_prefix[len(PEFT_PREFIX) :]
    own = adapter_leaf_names(config)
    sizes = {peft_side + ".".join(key[:-1]): int(np.shape(leaf)[-1]) for key, leaf in leaves.items() if key[-1] in own}
    if not sizes:
        raise ValueError(f"no {list(own)} leaves to export: add the adapter first (fourier_flax.init_adapter).")
    candidates = {peft_side + path for path in kernel_modules}
    written = config if _targets_exactly(config, candidates, sizes) else explicit_targets(config, sizes)
    out_dir = pathlib.Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"{out_dir} exists and is not a directory; PEFT adapters are directories.")
    with atomic_directory(out_dir) as staging:  # both files, or the previous export, never a mix
        safetensors.numpy.save_file(tensors, staging / WEIGHTS_FILE, metadata={"format": "pt"})
        text = json.dumps(peft_config_dict(written, **(bookkeeping or {})), indent=2, sort_keys=True) + "\n"
        (staging / CONFIG_FILE).write_text(text)
    return out_dir


def export_peft(
    params: module_paths.Tree,
    config: AdapterConfig,
    out_dir: str | pathlib.Path,
    *,
    module_prefix: str = PEFT_PREFIX,
    base_model_name_or_path: str | None = None,
    task_type: str | None = None,
    base_model_class: str | None = None,
    revision: str | None = None,
) -> pathlib.Path:
    """Writes the adapter of ``params`` as Hugging Face PEFT's ``save_pretrained`` would (FourierFT, LoRA, DoRA
    — PEFT's ``LoraConfig(use_dora=True)`` — and VeRA, with its shared projections).

    ``PeftModel.from_pretrained(torch_twin, out_dir)`` then loads it and computes what our model computes under
    :func:`fourier_flax.intercept`.

    Args:
      params: adapted params (variables dict or bare) of a Flax model whose PyTorch twin has the same module
        paths.
      config: its config (FourierFT with ``entry_sampling="peft"``, LoRA, DoRA or VeRA).
      out_dir: directory for ``adapter_config.json`` and ``adapter_model.safetensors`` (created if needed).
      module_prefix: prepended to our module paths to make PEFT's keys; e.g. ``"base_model.model.bert."`` to
        load an adapter of a ``FlaxBertModel`` into PEFT on ``BertForSequenceClassification``.
      base_model_name_or_path / task_type / base_model_class / revision: what ``AutoPeftModel*.from_pretrained``
        needs to rebuild the base (:func:`peft_config_dict`; :func:`peft_bookkeeping` reads them off a Flax
        model). Without them PEFT's ``PeftModel.from_pretrained(base, dir)`` still works.

    Returns:
      ``out_dir``.

    Raises:
      ValueError: ``config`` is not a FourierFT config PEFT can represent (``entry_sampling != "peft"``), the
        adapter has stacked ``(L, n)`` spectra, or a head leaf has no PyTorch counterpart.

    Example::

      export_peft(params, config, "/tmp/peft_adapter")
      # PosixPath('/tmp/peft_adapter')
    """
    _check_exportable(config)
    for path in adapter_module_paths(params):
        module_layout_check(config, path, module_paths.get_module(params, path), 0)
    kernels = tuple(module_paths.kernel_paths(params))
    bookkeeping = {
        "base_model_name_or_path": base_model_name_or_path,
        "task_type": task_type,
        "base_model_class": base_model_class,
        "revision": revision,
    }
    peft_config_dict(config, **bookkeeping)  # validates before anything is written
    modules = {path: module_paths.get_module(params, path) for path in adapter_module_paths(params)}
    modules = {path: m for path, m in modules.items() if all(leaf in m for leaf in adapter_leaf_names(config))}
    return write_peft(
        out_dir,
        adapter_leaves(params, config),
        config,
        module_prefix=module_prefix,
        kernel_modules=kernels,
        bookkeeping=bookkeeping,
        shared=method_of(config).peft_shared_tensors(config, modules),
    )


# --- import ---------------------------------------------------------------------------------------------------


def read_peft(adapter_dir: str | pathlib.Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """``(adapter_config.json as a dict, tensors by key)`` of a PEFT adapter directory.

    Raises:
      FileNotFoundError: a file is missing.
      ValueError: not a FourierFT adapter, or it uses settings fourier_flax does not support.
    """
    adapter_dir = pathlib.Path(adapter_dir)
    missing = [name for name in (CONFIG_FILE, WEIGHTS_FILE) if not (adapter_dir / name).is_file()]
    if missing:
        hint = (
            " (adapter_model.bin is not read: re-save with safe_serialization=True)" if WEIGHTS_FILE in missing else ""
        )
        raise FileNotFoundError(f"{adapter_dir} is not a PEFT adapter directory: no {missing}{hint}.")
    peft_config = json.loads((adapter_dir / CONFIG_FILE).read_text())
    try:
        method = method_for_peft(peft_config)
    except ValueError as error:
        raise ValueError(f"{adapter_dir} holds {error}") from error
    # Options newer PEFT versions add are harmless while unset (None, False, 0, {}, []).
    known = method.peft_fields + method.peft_harmless + PEFT_BOOKKEEPING
    unsupported = {k: v for k, v in peft_config.items() if k not in known and v}
    if unsupported:
        raise ValueError(
            f"{adapter_dir}/{CONFIG_FILE} sets PEFT options fourier_flax does not implement: {unsupported}. "
            "Nothing was imported."
        )
    try:
        tensors = safetensors.numpy.load_file(adapter_dir / WEIGHTS_FILE)
    except Exception as error:  # safetensors raises its own SafetensorError (and others) on damaged files
        raise ValueError(
            f"{adapter_dir / WEIGHTS_FILE} is not a readable safetensors file ({type(error).__name__}: {error}); "
            "it was damaged or cut short: export or save it again."
        ) from error
    return peft_config, tensors


def config_from_peft(peft_config: Mapping[str, Any]) -> AdapterConfig:
    """Our config with the fields of a PEFT ``adapter_config.json`` (FourierFT: PEFT's entries)."""
    return method_for_peft(peft_config).config_from_peft(peft_config)


def _mapper(module_map: ModuleMap | None) -> Callable[[str], str]:
    """PEFT module key -> our module path: longest matching prefix (whole dotted components) replaced."""
    if module_map is None:
        return lambda path: path
    if callable(module_map):
        return module_map
    prefixes = sorted(((k.rstrip("."), v.rstrip(".")) for k, v in module_map.items()), key=lambda kv: -len(kv[0]))

    def mapped(path: str) -> str:
        for old, new in prefixes:
            if path == old:
                return new
            if path.startswith(old + ".") or not old:
                rest = path[len(old) + 1 :] if old else path
                return f"{new}.{rest}" if new else rest
        return path

    return mapped


def is_trained_key(key: str) -> bool:
    """False for the copies of a head's bias PEFT also writes under ``bias="all"`` (``classifier.original_module.bias``,
    ``classifier.modules_to_save.bias``); True for every other tensor key."""
    return not _PEFT_WRAPPER_SEGMENTS & set(key.split(".")[:-1])


def _split_key(key: str, suffixes: tuple[str, ...] = (SPECTRUM,)) -> tuple[str, str] | None:
    """``(PEFT module key, kind)`` of a tensor key, kind an adapter suffix (``fourierft_spectrum``,
    ``lora_A.weight``, ...) / bias / <torch parameter name>; None for PEFT's duplicate bias copies inside a
    ``modules_to_save`` wrapper."""
    if not key.startswith(PEFT_PREFIX):
        raise ValueError(f"tensor {key!r} does not start with {PEFT_PREFIX!r}; this is not a PeftModel state dict.")
    if not is_trained_key(key):
        return None
    rest = key[len(PEFT_PREFIX) :]
    for suffix in suffixes:
        if rest.endswith("." + suffix):
            return rest[: -len(suffix) - 1], suffix
    module, _, name = rest.rpartition(".")
    if module.endswith(".base_layer"):
        return module[: -len(".base_layer")], name
    return module, name


def import_peft(
    adapter_dir: str | pathlib.Path,
    base_params: module_paths.Tree,
    *,
    module_map: ModuleMap | None = None,
    on_missing: Literal["error", "random"] = "error",
    rng: jax.Array | None = None,
) -> tuple[FourierFTConfig, module_paths.Tree]:
    """Reads a FourierFT adapter saved by Hugging Face PEFT into the params of the model's Flax twin.

    As PEFT loads it: the file's config decides which modules are adapted. A spectrum for a module the config
    does not target is ignored, with a warning (PEFT ignores unexpected keys). A targeted module with no
    spectrum in the file is refused by default; ``on_missing="random"`` does what PEFT does (a fresh N(0, 1)
    spectrum from ``rng`` and a "Found missing adapter keys" warning).

    Args:
      adapter_dir: a ``save_pretrained`` directory (``adapter_config.json``, ``adapter_model.safetensors``).
      base_params: the Flax twin's pretrained params (variables dict or bare).
      module_map: PEFT module key -> our module path; a mapping of dotted prefixes (the longest matching one is
        replaced, e.g. ``{"bert": ""}`` to load an adapter of ``BertForSequenceClassification`` into
        ``FlaxBertModel``) or a function. By default the paths are the same.
      on_missing: ``"error"`` or ``"random"`` for targeted modules the file has no spectrum for.
      rng: the key for ``on_missing="random"``.

    Returns:
      ``(config, params)``: the file's config (``modules_to_save`` mapped to our paths; when its patterns cannot
      name our paths — a regex under a ``module_map`` — the imported modules by full path, see
      :func:`explicit_targets`) and ``base_params`` with the spectra, ``modules_to_save`` leaves and trained
      biases. Works with :func:`fourier_flax.intercept` and :func:`fourier_flax.merge_adapter`.

    Raises:
      ValueError: unknown ``peft_type`` or unsupported options.
      AdapterMismatchError: targeted modules without a spectrum (``on_missing="error"``), modules missing from
        ``base_params`` (the message lists those that exist), a spectrum whose length differs from
        ``n_frequency`` for its module, ``fan_in_fan_out`` contradicting a kernel's layout, head shapes that
        differ, or no spectrum for any targeted module. All problems are listed at once.

    Example::

      model, base = fourier_flax.load_minilm(num_labels=2)
      config, params = import_peft("peft_sst2_adapter", base)
    """
    if on_missing not in ("error", "random"):
        raise ValueError(f"on_missing must be 'error' or 'random', got {on_missing!r}.")
    peft_fields, tensors = read_peft(adapter_dir)
    method = method_for_peft(peft_fields)
    peft_config = method.config_from_peft(peft_fields)
    is_shared = {k: k.startswith("base_model.") and not k.startswith(PEFT_PREFIX) for k in tensors}  # VeRA's A, B
    shared = {k[len("base_model.") :]: v for k, v in tensors.items() if is_shared[k]}
    tensors = {k: v for k, v in tensors.items() if not is_shared[k]}
    to_ours = _mapper(module_map)
    base = dict(module_paths.params_of(base_params))
    kernels = set(module_paths.kernel_paths(base))
    flat_base = _dotted_leaves(base)
    leaves, module_tensors, problems, ignored = {}, {}, [], []
    for key, value in sorted(tensors.items()):
        split = _split_key(key, method.peft_suffixes)
        if split is None:
            continue
        peft_module, kind = split
        path = to_ours(peft_module)
        if kind in method.peft_suffixes:
            if not peft_config.is_targeted(peft_module):
                ignored.append(key)
                continue
            if kind == SPECTRUM:
                problems += _spectrum_problems(key, peft_module, path, value, peft_config, kernels, flat_base)
            elif path not in kernels:
                problems.append(f"{key}: module {path!r} is not in the base params; " + _missing_hint(path, kernels))
            module_tensors.setdefault(path, {})[kind] = value
        else:
            leaf, problem = _torch_leaf(key, path, kind, value, flat_base)
            problems += [problem] if problem else []
            if leaf is not None:
                leaves[(*path.split("."), leaf[0])] = leaf[1]
    if ignored:
        warnings.warn(
            f"{adapter_dir}: ignored {len(ignored)} adapter tensors of modules its adapter_config.json does not "
            f"target (PEFT ignores them too): {ignored}",
            UserWarning,
            stacklevel=2,
        )
    if not module_tensors:
        problems.append(
            f"{adapter_dir}/{WEIGHTS_FILE} holds no {' / '.join(method.peft_suffixes)} for any module its config "
            f"targets (target_modules={peft_config.target_modules!r})"
        )
    sizes = {p: int(np.shape(t.get(SPECTRUM, np.zeros(1)))[-1]) for p, t in module_tensors.items()}
    config = _our_config(peft_config, to_ours)
    if not all(config.is_targeted(path) for path in sizes):
        config = explicit_targets(config, sizes)
    targeted = sorted(p for p in kernels if config.is_targeted(p)) if module_tensors and not problems else []
    expected = _expected_leaves(base_params, config, targeted)
    for path, found in sorted(module_tensors.items()):
        if path not in kernels or problems:
            continue
        view = kernel_view(path, tuple(np.shape(flat_base[f"{path}.kernel"])), config.kernel_in_axes_for(path))
        try:
            converted = method.leaves_from_peft(config, path, found, view, shared)
        except (KeyError, ValueError) as error:
            problems.append(f"module {path}: {error}")
            continue
        for name, value in converted.items():
            want = np.shape(expected.get((*path.split("."), name), value))
            if np.shape(value) != want:
                problems.append(f"module {path}: PEFT's {name} has shape {np.shape(value)}, this base needs {want}")
            leaves[(*path.split("."), name)] = value
    missing = [p for p in targeted if p not in module_tensors]
    if missing and on_missing == "error":
        problems.append(
            f"{len(missing)} modules the adapter's config targets have no spectrum in the file: {missing}. "
            "PEFT would give them a fresh random spectrum and warn 'Found missing adapter keys': pass "
            "on_missing='random' (with rng) for that, or load into a base with only the adapted layers"
        )
    if problems:
        problems.append("modules with a kernel in the base params:\n" + targeting.describe_paths(kernels))
        raise AdapterMismatchError(f"the PEFT adapter at {adapter_dir} does not match the base params", problems)
    if missing:
        if rng is None:
            raise ValueError("on_missing='random' needs rng= to draw the missing spectra.")
        warnings.warn(f"Found missing adapter keys: {missing} got fresh initial values (as PEFT).", stacklevel=2)
        fresh = _expected_leaves(base_params, config, missing, rng)
        leaves.update({k: v for k, v in fresh.items() if ".".join(k[:-1]) in missing})
    return config, apply_leaves(base_params, leaves)


def _expected_leaves(base_params, config, paths, rng=None) -> dict[tuple[str, ...], Any]:
    """The adapter leaves ``init_adapter`` gives ``paths`` (shapes to check against; fresh values for
    ``on_missing="random"``), by key path inside the params collection."""
    if not paths:
        return {}
    only = dataclasses.replace(
        config, target_modules=tuple(paths), exclude_modules=None, layers_to_transform=None, layers_pattern=None
    )
    key = jax.random.key(0) if rng is None else rng
    adapted = module_paths.params_of(init_adapter(base_params, only, key, check_scale=False))
    flat = traverse_util.flatten_dict(adapted)
    own = set(method_of(config).leaf_names)
    return {k: v for k, v in flat.items() if k[-1] in own}


def _dotted_leaves(params: Mapping[str, Any]) -> dict[str, Any]:
    """``{"<module path>.<leaf>": leaf}`` of a bare params tree."""
    return {".".join(key): leaf for key, leaf in traverse_util.flatten_dict(params).items()}


def _spectrum_problems(key, peft_module, path, value, peft_config, kernels, flat_base) -> list[str]:
    if path not in kernels:
        return [f"{key}: module {path!r} is not in the base params (or has no kernel); " + _missing_hint(path, kernels)]
    n, expected = value.shape[-1], peft_config.n_frequency_for(peft_module)
    kernel_shape = np.shape(flat_base[f"{path}.kernel"])
    problems = []
    if value.ndim != 1:
        problems.append(f"{key}: shape {value.shape}, expected ({expected},)")
    if n != expected:
        problems.append(
            f"{key}: {n} coefficients, but n_frequency for {peft_module} is {expected} (n_frequency / "
            "n_frequency_pattern in adapter_config.json)"
        )
    if n > int(np.prod(kernel_shape)):
        problems.append(f"{key}: n={n} exceeds the {kernel_shape} kernel of {path}")
    bias = flat_base.get(f"{path}.bias")
    if bias is not None and len(kernel_shape) == 2 and kernel_shape[0] != kernel_shape[1]:
        stored_out_in = np.shape(bias)[0] == kernel_shape[0]
        if stored_out_in != peft_config.fan_in_fan_out:
            layout = "(out, in) like GPT-2's FlaxConv1D" if stored_out_in else "(in, out) like nn.Dense"
            problems.append(
                f"{key}: fan_in_fan_out={peft_config.fan_in_fan_out} in adapter_config.json, but the base kernel of "
                f"{path} {kernel_shape} with bias {np.shape(bias)} is stored {layout}; these entries would land on "
                "the wrong layout"
            )
    return problems


def _missing_hint(path: str, available: set[str]) -> str:
    """The likely fix when the base has no module ``path``: other prefix, too few layers, or no task head."""
    parts = path.split(".")
    for k in range(1, len(parts)):
        if any(a == ".".join(parts[k:]) or a.endswith("." + ".".join(parts[k:])) for a in available):
            return (
                f"the base names it without the prefix {'.'.join(parts[:k])!r}: pass module_map="
                f"{{{'.'.join(parts[:k])!r}: ''}} (CLI: --module-map {'.'.join(parts[:k])}=)"
            )
    index = targeting.layer_index(path, None)
    if index is not None:
        return (
            f"the base has no layer {index}: load it with all its layers (CLI: --base-kwarg num_hidden_layers=N "
            "with N at least the adapter's)"
        )
    return (
        "the base has no such module, which is usually a task head: load the task class with its label count "
        "(e.g. FlaxBertForSequenceClassification; CLI: --base-class FlaxBertForSequenceClassification "
        "--base-kwarg num_labels=N)"
    )


def _torch_leaf(key, path, name, value, flat_base) -> tuple[tuple[str, np.ndarray] | None, str | None]:
    """The Flax leaf ``(name, array)`` for a PyTorch parameter, or a problem."""
    candidates = ("bias",) if name == "bias" else ("kernel", "scale", "embedding") if name == "weight" else ()
    present = [leaf for leaf in candidates if f"{path}.{leaf}" in flat_base]
    if not present:
        kinds = "/".join(candidates) or name
        modules = {k.rsplit(".", 1)[0] for k in flat_base}
        return None, f"{key}: no module {path!r} with a {kinds} leaf in the base params; " + _missing_hint(
            path, modules
        )
    leaf = present[0]
    array = value.T if leaf == "kernel" else value
    expected = np.shape(flat_base[f"{path}.{leaf}"])
    if array.shape != expected:
        return None, f"{key}: shape {value.shape} gives {path}.{leaf} {array.shape}, the base has {expected}"
    return (leaf, array), None


def _our_config(peft_config: FourierFTConfig, to_ours: Callable[[str], str]) -> FourierFTConfig:
    """PEFT's config with its ``modules_to_save`` names mapped to our module paths."""
    saved = peft_config.modules_to_save
    mapped_saved = None if saved is None else tuple(to_ours(name) for name in saved)
    return dataclasses.replace(peft_config, modules_to_save=mapped_saved)
