"""Replace a whole directory atomically: readers see the old files or the new files, never a mix.

PEFT's adapter directory is two files (config and weights) that must come from the same export. Writing them in
place, a kill between the two leaves new weights beside an old config. :func:`atomic_directory` instead has the
caller write into a fresh sibling directory, fsyncs it, and swaps it in:

* on Linux with ``renameat2(RENAME_EXCHANGE)`` (ext4, xfs, btrfs, tmpfs, ...) the old and new directories trade
  places in one atomic step, then the old one is removed;
* elsewhere the old directory is first renamed aside; a kill in the instant between the two renames leaves the
  target missing but the old copy intact, and the next write (or :func:`recover`) puts it back.

Leftovers of killed writers (``.<name>.tmp-*`` / ``.<name>.old-*`` siblings, possibly large) are removed by the
next write to the same target.

Example::

  with atomic_directory("adapter_for_peft") as staging:
      (staging / "adapter_config.json").write_text(config_json)
      safetensors.numpy.save_file(tensors, staging / "adapter_model.safetensors")
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import pathlib
import shutil
import uuid
from collections.abc import Iterator

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2


def _siblings(target: pathlib.Path, kind: str) -> list[pathlib.Path]:
    return sorted(target.parent.glob(f".{target.name}.{kind}-*"))


def recover(target: str | os.PathLike[str]) -> None:
    """Restores ``target`` from a copy a killed writer moved aside, and removes killed writers' leftovers."""
    target = pathlib.Path(target)
    old = _siblings(target, "old")
    if not target.exists() and old:
        os.rename(old[-1], target)
        old = old[:-1]
    for leftover in old + _siblings(target, "tmp"):
        shutil.rmtree(leftover, ignore_errors=True)


def _fsync_tree(path: pathlib.Path) -> None:
    for item in [*path.rglob("*"), path]:
        flags = os.O_RDONLY | (os.O_DIRECTORY if item.is_dir() else 0)
        descriptor = os.open(item, flags)
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)


def _exchange(a: pathlib.Path, b: pathlib.Path) -> bool:
    """Atomically swaps two existing paths (Linux renameat2); False where the system cannot."""
    name = ctypes.util.find_library("c")
    libc = ctypes.CDLL(name, use_errno=True) if name else None
    renameat2 = getattr(libc, "renameat2", None)
    if renameat2 is None:
        return False
    result = renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return result == 0


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike[str]) -> Iterator[pathlib.Path]:
    """Yields an empty staging directory; on a clean exit it replaces ``target`` in one step.

    On an exception the staging directory is removed and ``target`` is untouched.
    """
    target = pathlib.Path(target).absolute()
    target.parent.mkdir(parents=True, exist_ok=True)
    recover(target)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging = target.parent / f".{target.name}.tmp-{tag}"
    staging.mkdir()
    try:
        yield staging
        _fsync_tree(staging)
        if not target.exists():
            os.rename(staging, target)
        elif _exchange(staging, target):
            shutil.rmtree(staging)  # now holds the old files
        else:
            aside = target.parent / f".{target.name}.old-{tag}"
            os.rename(target, aside)
            os.rename(staging, target)
            shutil.rmtree(aside)
        descriptor = os.open(target.parent, os.O_RDONLY | os.O_DIRECTORY)  # make the renames durable
        try:
            os.fsync(descriptor)
        finally:
            os.close(descriptor)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
