"""Fashion-MNIST IDX reader: tiny files written here, plus the real Debian files when installed."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from fourier_flax.data import DEFAULT_FASHION_MNIST_DIR, load_fashion_mnist
from fourier_flax.data.fashion_mnist import read_idx


def idx_bytes(array: np.ndarray, magic: int | None = None) -> bytes:
    """IDX encoding of a uint8 array: magic 0x0800 + ndim, big-endian uint32 dims, data."""
    magic = 0x800 + array.ndim if magic is None else magic
    dims = b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return magic.to_bytes(4, "big") + dims + array.astype(np.uint8).tobytes()


def write_split(root: Path, split: str, images: np.ndarray, labels: np.ndarray, *, compress: bool = True) -> None:
    prefix = "train" if split == "train" else "t10k"
    root.mkdir(parents=True, exist_ok=True)
    for stem, array in ((f"{prefix}-images-idx3-ubyte", images), (f"{prefix}-labels-idx1-ubyte", labels)):
        data = idx_bytes(array)
        if compress:
            (root / f"{stem}.gz").write_bytes(gzip.compress(data))
        else:
            (root / stem).write_bytes(data)


@pytest.fixture
def tiny() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (3, 28, 28), dtype=np.uint8), np.array([0, 9, 3], dtype=np.uint8)


@pytest.mark.parametrize("compress", [True, False])
def test_tiny_round_trip(tmp_path: Path, tiny, compress: bool) -> None:
    images, labels = tiny
    write_split(tmp_path, "test", images, labels, compress=compress)
    got_images, got_labels = load_fashion_mnist(tmp_path, "test")
    assert got_images.dtype == np.uint8 and got_images.shape == (3, 28, 28)
    assert got_labels.dtype == np.int32 and got_labels.tolist() == [0, 9, 3]
    np.testing.assert_array_equal(got_images, images)


def test_header_sizes(tmp_path: Path, tiny) -> None:
    """16-byte image header (magic + 3 dims), 8-byte label header (magic + 1 dim)."""
    images, labels = tiny
    assert len(idx_bytes(images)) == 16 + 3 * 28 * 28
    assert len(idx_bytes(labels)) == 8 + 3
    (tmp_path / "labels").write_bytes(idx_bytes(labels))
    assert read_idx(tmp_path / "labels", magic=2049).tolist() == [0, 9, 3]


def test_bad_magic(tmp_path: Path, tiny) -> None:
    images, labels = tiny
    write_split(tmp_path, "train", images, labels)
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(images, 2049)))
    with pytest.raises(ValueError, match=r"train-images-idx3-ubyte\.gz: bad IDX magic number 2049.*2051"):
        load_fashion_mnist(tmp_path, "train")


@pytest.mark.parametrize("cut", [2, 10, 16 + 5])
def test_truncated_file(tmp_path: Path, tiny, cut: int) -> None:
    images, _ = tiny
    path = tmp_path / "images"
    path.write_bytes(idx_bytes(images)[:cut])
    with pytest.raises(ValueError, match=r"images: .*truncated"):
        read_idx(path, magic=2051)


def test_trailing_bytes(tmp_path: Path, tiny) -> None:
    _, labels = tiny
    path = tmp_path / "labels"
    path.write_bytes(idx_bytes(labels) + b"\0")
    with pytest.raises(ValueError, match="trailing bytes"):
        read_idx(path, magic=2049)


def test_truncated_gzip(tmp_path: Path, tiny) -> None:
    images, labels = tiny
    write_split(tmp_path, "test", images, labels)
    path = tmp_path / "t10k-images-idx3-ubyte.gz"
    path.write_bytes(path.read_bytes()[:-20])
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte\.gz: corrupt or truncated gzip"):
        load_fashion_mnist(tmp_path, "test")


def test_inconsistent_files(tmp_path: Path, tiny) -> None:
    images, labels = tiny
    write_split(tmp_path, "test", images, labels[:2])
    with pytest.raises(ValueError, match="has 3 images but"):
        load_fashion_mnist(tmp_path, "test")
    write_split(tmp_path, "test", images, np.array([0, 10, 1]))
    with pytest.raises(ValueError, match=r"label 10 outside \[0, 10\)"):
        load_fashion_mnist(tmp_path, "test")


def test_missing_files_and_bad_split(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"train-images-idx3-ubyte\.gz.*dataset-fashion-mnist"):
        load_fashion_mnist(tmp_path, "train")
    with pytest.raises(ValueError, match="unknown Fashion-MNIST split"):
        load_fashion_mnist(tmp_path, "validation")


@pytest.mark.skipif(
    not DEFAULT_FASHION_MNIST_DIR.is_dir(),
    reason=f"{DEFAULT_FASHION_MNIST_DIR} absent: Debian package dataset-fashion-mnist not installed",
)
def test_real_fashion_mnist() -> None:
    for split, n in (("train", 60_000), ("test", 10_000)):
        images, labels = load_fashion_mnist(split=split)
        assert images.shape == (n, 28, 28) and images.dtype == np.uint8
        assert labels.shape == (n,)
        assert np.bincount(labels).tolist() == [n // 10] * 10  # balanced classes
        assert images.max() == 255 and images.min() == 0
