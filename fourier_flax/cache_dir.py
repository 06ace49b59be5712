"""Where fourier_flax keeps what it derives from source files: ``$FOURIER_FLAX_CACHE``, else
``~/.cache/fourier_flax``, one subfolder per kind (``tfds``, ``tokenizers``).

Example::

  cache_root() / "tokenizers"  # PosixPath('/home/me/.cache/fourier_flax/tokenizers')
"""

from __future__ import annotations

import os
import pathlib


def cache_root() -> pathlib.Path:
    """``$FOURIER_FLAX_CACHE`` if set, else ``~/.cache/fourier_flax``."""
    return pathlib.Path(os.environ.get("FOURIER_FLAX_CACHE") or pathlib.Path.home() / ".cache" / "fourier_flax")
