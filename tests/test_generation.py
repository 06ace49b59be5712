"""fourier_flax.generate's pieces against transformers' own logits processors, and its sampling path, on a tiny
random Llama (fast); greedy and beam search against transformers' generate on the real SmolLM2 live in
tests/test_llama.py."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import fourier_flax as ff
from fourier_flax.generation import _top_p_filter, banned_ngram_tokens
from fourier_flax.models.llama import LlamaConfig, LlamaForCausalLM

TINY = LlamaConfig(
    vocab_size=50, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
    num_key_value_heads=2, eos_token_id=3,
)  # fmt: skip


@pytest.mark.torch
@pytest.mark.parametrize("n", [1, 2, 3])
def test_banned_ngrams_equal_transformers_processor(n):
    torch = pytest.importorskip("torch")
    from transformers.generation.logits_process import NoRepeatNGramLogitsProcessor

    rng = np.random.default_rng(n)
    sequences = rng.integers(0, 3, (4, 12))  # three of the six tokens only, so n-grams repeat
    length = 9
    scores = torch.zeros((4, 6))
    want = NoRepeatNGramLogitsProcessor(n)(torch.tensor(sequences[:, :length]), scores).numpy() == -np.inf
    got = np.asarray(banned_ngram_tokens(jnp.asarray(sequences), jnp.int32(length), n, 6))
    np.testing.assert_array_equal(got, want)
    assert want.any()  # the case is not vacuous


@pytest.mark.torch
@pytest.mark.parametrize("top_p", [0.3, 0.8, 0.95])
def test_top_p_equals_transformers_warper(top_p):
    torch = pytest.importorskip("torch")
    from transformers.generation.logits_process import TopPLogitsWarper

    logits = np.random.default_rng(0).standard_normal((3, 40)).astype(np.float32) * 3
    want = TopPLogitsWarper(top_p)(None, torch.tensor(logits)).numpy()
    got = np.asarray(_top_p_filter(jnp.asarray(logits), top_p))
    np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
    np.testing.assert_allclose(got[~np.isinf(got)], want[~np.isinf(want)])


def test_sampling_follows_the_nucleus_and_the_key():
    model = LlamaForCausalLM(TINY, rngs=nnx.Rngs(0))
    ids = jnp.asarray(np.random.default_rng(0).integers(4, 50, (2, 5)), jnp.int32)
    greedy = ff.generate(model, ids, max_new_tokens=6, eos_token_id=())
    # a nucleus that keeps only the most likely token is greedy decoding, whatever the key
    narrow = ff.generate(
        model, ids, max_new_tokens=6, temperature=1.0, top_p=1e-6, eos_token_id=(), rng=jax.random.key(5)
    )
    np.testing.assert_array_equal(narrow, greedy)
    first = ff.generate(model, ids, max_new_tokens=6, temperature=2.0, eos_token_id=(), rng=jax.random.key(1))
    again = ff.generate(model, ids, max_new_tokens=6, temperature=2.0, eos_token_id=(), rng=jax.random.key(1))
    other = ff.generate(model, ids, max_new_tokens=6, temperature=2.0, eos_token_id=(), rng=jax.random.key(2))
    np.testing.assert_array_equal(first, again)
    assert not np.array_equal(first, other)
    with pytest.raises(ValueError, match="needs rng"):
        ff.generate(model, ids, max_new_tokens=2, temperature=1.0)
    with pytest.raises(ValueError, match="temperature=0 with num_beams"):
        ff.generate(model, ids, max_new_tokens=2, temperature=1.0, num_beams=2, rng=jax.random.key(0))


def test_rows_stop_at_eos_and_pad_after_it():
    model = LlamaForCausalLM(TINY, rngs=nnx.Rngs(0))
    ids = jnp.asarray(np.random.default_rng(1).integers(4, 50, (3, 4)), jnp.int32)
    free = np.asarray(ff.generate(model, ids, max_new_tokens=8, eos_token_id=()))
    stop = int(free[0, 2])  # make the third token of row 0 an end token
    out = np.asarray(ff.generate(model, ids, max_new_tokens=8, eos_token_id=stop, pad_token_id=0))
    for row in range(3):
        hits = np.nonzero(free[row] == stop)[0]
        if hits.size:  # identical up to and including the first end token, then padding
            end = hits[0]
            np.testing.assert_array_equal(out[row, : end + 1], free[row, : end + 1])
            assert (out[row, end + 1 :] == 0).all()
        else:
            np.testing.assert_array_equal(out[row], free[row])
