"""Fashion-MNIST from IDX files (gzip-compressed or plain), e.g. Debian's ``dataset-fashion-mnist``.

IDX layout (big-endian): magic ``0x00 0x00 <dtype> <ndim>`` (dtype 0x08 = uint8), then ``ndim``
uint32 dimensions, then the data. Images: magic 2051, header 16 bytes, dims (N, 28, 28).
Labels: magic 2049, header 8 bytes, dims (N,).

Usage::

    images, labels = load_fashion_mnist(split="test")  # (10000, 28, 28) uint8, (10000,) int32
    CLASS_NAMES[labels[0]]                              # "Ankle boot"
"""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path

import numpy as np

__all__ = ["CLASS_NAMES", "DEFAULT_FASHION_MNIST_DIR", "load_fashion_mnist", "read_idx"]

DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
"""Where Debian's ``dataset-fashion-mnist`` package installs the four ``*.gz`` files."""

CLASS_NAMES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
"""Label id -> class name."""

_FILES = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
_IMAGE_MAGIC, _LABEL_MAGIC = 0x803, 0x801  # uint8 with 3 dims / 1 dim


def _read_bytes(path: Path) -> bytes:
    if path.suffix != ".gz":
        return path.read_bytes()
    try:
        return gzip.decompress(path.read_bytes())
    except (EOFError, OSError, zlib.error) as e:
        raise ValueError(f"{path}: corrupt or truncated gzip data ({e})") from e


def read_idx(path: str | os.PathLike[str], magic: int) -> np.ndarray:
    """Reads a uint8 IDX file (``.gz`` is decompressed) whose magic number must be ``magic``.

    Returns:
        uint8 array of the dims stored in the header, e.g. (N, 28, 28) for magic 2051.

    Raises:
        ValueError: bad magic number, or a header or body shorter/longer than it declares.

    Example::

        labels = read_idx("t10k-labels-idx1-ubyte.gz", magic=2049)  # (10000,) uint8
    """
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} bytes)")
    found = int.from_bytes(data[:4], "big")
    if found != magic:
        raise ValueError(f"{path}: bad IDX magic number {found} (0x{found:08x}), expected {magic}")
    ndim = magic & 0xFF
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated IDX header ({len(data)} of {header} bytes)")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(dims))
    if len(data) != expected:
        raise ValueError(
            f"{path}: IDX size {len(data)} bytes, expected {expected} for dims {dims} "
            f"({'truncated' if len(data) < expected else 'trailing bytes'})"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def _find(data_dir: Path, stem: str) -> Path:
    for name in (f"{stem}.gz", stem):
        if (data_dir / name).is_file():
            return data_dir / name
    raise FileNotFoundError(
        f"{data_dir / stem}.gz (or uncompressed {stem}) not found; install Debian's "
        "'dataset-fashion-mnist' or pass the directory holding the Fashion-MNIST IDX files"
    )


def load_fashion_mnist(
    data_dir: str | os.PathLike[str] = DEFAULT_FASHION_MNIST_DIR, split: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Loads a Fashion-MNIST split from IDX files in ``data_dir``.

    Args:
        data_dir: directory with ``{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]``.
        split: ``"train"`` (60,000 examples) or ``"test"`` (10,000).

    Returns:
        ``(images, labels)``: (N, 28, 28) uint8 and (N,) int32 in [0, 10).

    Raises:
        FileNotFoundError: a file is missing. ValueError: bad magic, truncated data, image/label
        count mismatch, images not 28x28, or labels outside [0, 10).

    Example::

        images, labels = load_fashion_mnist("/usr/share/datasets/fashion-mnist", "test")
    """
    if split not in _FILES:
        raise ValueError(f"unknown Fashion-MNIST split {split!r}; use 'train' or 'test'")
    data_dir = Path(data_dir)
    image_path, label_path = (_find(data_dir, stem) for stem in _FILES[split])
    images = read_idx(image_path, _IMAGE_MAGIC)
    labels = read_idx(label_path, _LABEL_MAGIC).astype(np.int32)
    if images.shape[1:] != (28, 28):
        raise ValueError(f"{image_path}: images are {images.shape[1:]}, expected (28, 28)")
    if len(images) != len(labels):
        raise ValueError(f"{image_path} has {len(images)} images but {label_path} {len(labels)}")
    if labels.size and labels.max() >= len(CLASS_NAMES):
        raise ValueError(f"{label_path}: label {labels.max()} outside [0, {len(CLASS_NAMES)})")
    return images, labels
