"""Text generation for a causal LM: one jitted prefill and a compiled decode loop over a fixed-size KV cache.

:func:`generate` follows Hugging Face's ``generate`` semantics so that outputs can be compared token for token:
greedy decoding (``temperature=0``), sampling (``temperature > 0``, ``top_p``), and beam search (``num_beams > 1``)
with transformers' vectorised beam search — ``2 · num_beams`` candidates per step, a finished hypothesis scored
``sum log p / generated_length ** length_penalty``, and its early-stopping heuristic (``early_stopping=False``) —
plus ``no_repeat_ngram_size`` over the whole sequence, prompt included. A batch is left-padded (``attention_mask``
0 on the left); rows stop at an EOS token and are filled with ``pad_token_id`` after it.

The model is any object with a ``config`` (``num_hidden_layers``, ``num_key_value_heads``, ``head_dim``,
``vocab_size``, ``eos_token_id``) and a ``step(ids, positions, key_mask, cache, cache_index)`` method, such as
:class:`fourier_flax.models.llama.LlamaForCausalLM`; adapters run unmerged (:mod:`fourier_flax.nnx`) or merged.
The whole loop is one ``jax.jit`` (``lax.while_loop``): new prompts of the same shape reuse the compiled program.

Example::

  ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="np")
  new = generate(model, ids, max_new_tokens=64, eos_token_id=2)  # (1, 64) int32, 2s after the first EOS
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from fourier_flax.methods.bank import adapter_ids as use_adapter_ids
from fourier_flax.models.llama.model import init_cache, positions_from_mask

NEG = -1.0e9  # transformers' "very large negative" for beam bookkeeping


@dataclasses.dataclass(frozen=True)
class Decoding:
    """The static decoding settings (part of the compiled program's cache key)."""

    max_new_tokens: int
    num_beams: int
    length_penalty: float
    no_repeat_ngram_size: int
    temperature: float
    top_p: float
    eos_token_ids: tuple[int, ...]
    pad_token_id: int


def generate(
    model: Any,
    input_ids: Any,
    *,
    attention_mask: Any = None,
    max_new_tokens: int,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    temperature: float = 0.0,
    top_p: float = 1.0,
    eos_token_id: int | tuple[int, ...] | None = None,
    pad_token_id: int | None = None,
    rng: jax.Array | None = None,
    adapter_ids: Any = None,
) -> jax.Array:
    """New token ids ``(B, max_new_tokens)`` int32 after a (left-padded) batch of prompts ``(B, T)``.

    Args:
      model: a causal LM with ``step`` and ``config`` (see the module docstring).
      input_ids: prompts ``(B, T)``, left-padded.
      attention_mask: ``(B, T)``, 1 for tokens and 0 for left padding (default: all ones).
      max_new_tokens: how many tokens to generate at most.
      num_beams: beam search width (1: greedy or sampling).
      length_penalty: beam search's exponent on the generated length (transformers' meaning).
      no_repeat_ngram_size: ban any n-gram already in the sequence (prompt included); 0 disables.
      temperature: 0 decodes greedily; above 0 samples from ``softmax(logits / temperature)``.
      top_p: nucleus sampling's probability mass (with ``temperature > 0``).
      eos_token_id: token(s) that end a row (default ``model.config.eos_token_id``).
      pad_token_id: fills a row after its EOS (default: the first EOS id).
      rng: a PRNG key, needed when sampling.
      adapter_ids: for a model adapted with an :class:`~fourier_flax.bank.AdapterBank`, each prompt's adapter
        ``(B,)`` int (``-1``: the base model); traced, so other ids reuse the compiled program.

    Raises:
      ValueError: sampling without ``rng``, sampling combined with beams, or invalid sizes.
    """
    ids = jnp.asarray(input_ids, jnp.int32)
    mask = jnp.ones_like(ids) if attention_mask is None else jnp.asarray(attention_mask, jnp.int32)
    if ids.ndim != 2 or mask.shape != ids.shape:
        raise ValueError(f"input_ids must be (B, T) with a matching attention_mask, got {ids.shape} and {mask.shape}.")
    if max_new_tokens < 1 or num_beams < 1 or no_repeat_ngram_size < 0:
        raise ValueError("max_new_tokens and num_beams must be >= 1 and no_repeat_ngram_size >= 0.")
    if temperature > 0 and num_beams > 1:
        raise ValueError("beam search here is deterministic: use temperature=0 with num_beams > 1.")
    if temperature > 0 and rng is None:
        raise ValueError("sampling (temperature > 0) needs rng=jax.random.key(...).")
    eos = model.config.eos_token_id if eos_token_id is None else eos_token_id
    eos = () if eos is None else (eos,) if isinstance(eos, int) else tuple(int(e) for e in eos)
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
    settings = Decoding(
        int(max_new_tokens), int(num_beams), float(length_penalty), int(no_repeat_ngram_size),
        float(temperature), float(top_p), eos, int(pad),
    )  # fmt: skip
    graphdef, state = nnx.split(model)
    rng = jax.random.key(0) if rng is None else rng
    if adapter_ids is not None:
        adapter_ids = jnp.asarray(adapter_ids, jnp.int32)
        if adapter_ids.shape != (ids.shape[0],):
            raise ValueError(
                f"adapter_ids must hold one id per prompt, shape ({ids.shape[0]},); got {adapter_ids.shape}."
            )
    return _generate(graphdef, state, ids, mask, rng, adapter_ids, settings)


@functools.partial(jax.jit, static_argnames=("graphdef", "settings"))
def _generate(graphdef, state, ids, mask, rng, adapters, settings: Decoding) -> jax.Array:
    model = nnx.merge(graphdef, state)
    if settings.num_beams > 1:
        return _beam_search(model, ids, mask, adapters, settings)
    return _sample(model, ids, mask, rng, adapters, settings)


def _per_row(adapters: jax.Array | None, rows_per_prompt: int):
    """The :func:`~fourier_flax.bank.adapter_ids` context for ``rows_per_prompt`` rows per prompt (none without
    a bank)."""
    if adapters is None:
        return contextlib.nullcontext()
    return use_adapter_ids(jnp.repeat(adapters, rows_per_prompt))


def banned_ngram_tokens(sequences: jax.Array, length: jax.Array, n: int, vocab: int) -> jax.Array:
    """Which tokens would repeat an n-gram (transformers' ``NoRepeatNGramLogitsProcessor``).

    Args:
      sequences: ``(R, S)`` token ids; only the first ``length`` positions are the sequence so far.
      length: the current length (traced scalar).
      n: the n-gram size (>= 1).
      vocab: the vocabulary size.

    Returns:
      bool ``(R, vocab)``: True where the token after the last ``n − 1`` tokens would complete an n-gram that
      already occurs in the sequence.
    """
    rows, size = sequences.shape
    starts = jnp.arange(size - n + 1)
    inside = starts + n - 1 < length  # the whole n-gram lies in the sequence so far
    match = jnp.broadcast_to(inside, (rows, size - n + 1))
    for k in range(n - 1):
        prefix = jax.lax.dynamic_index_in_dim(sequences, length - (n - 1) + k, axis=1, keepdims=False)  # (R,)
        match = match & (sequences[:, k : size - n + 1 + k] == prefix[:, None])
    match = match & (length + 1 >= n)
    following = sequences[:, n - 1 :]
    banned = jnp.zeros((rows, vocab), jnp.int32)
    banned = banned.at[jnp.arange(rows)[:, None], following].max(match.astype(jnp.int32))
    return banned.astype(bool)


def _top_p_filter(logits: jax.Array, top_p: float) -> jax.Array:
    """transformers' ``TopPLogitsWarper``: drop the lowest-probability tokens whose mass is at most ``1 − top_p``
    (the most likely token always stays)."""
    order = jnp.argsort(logits, axis=-1)  # ascending
    sorted_logits = jnp.take_along_axis(logits, order, axis=-1)
    cumulative = jnp.cumsum(jax.nn.softmax(sorted_logits, axis=-1), axis=-1)
    remove_sorted = cumulative <= 1.0 - top_p
    remove_sorted = remove_sorted.at[..., -1].set(False)
    remove = jnp.zeros_like(remove_sorted).at[jnp.arange(logits.shape[0])[:, None], order].set(remove_sorted)
    return jnp.where(remove, -jnp.inf, logits)


def _prefill(model, ids, mask, adapters, rows_per_prompt: int, max_new_tokens: int):
    """Runs the prompts once, then repeats their cache, logits and positions ``rows_per_prompt`` times."""
    batch, length = ids.shape
    config = model.config
    cache = init_cache(config, batch, length + max_new_tokens)
    key_mask = jnp.concatenate([mask, jnp.ones((batch, max_new_tokens), mask.dtype)], axis=1)
    positions = positions_from_mask(mask)
    with _per_row(adapters, 1):
        logits, cache = model.step(ids, positions, key_mask, cache, jnp.int32(0))
    next_position = positions[:, -1] + 1

    def repeat(x):
        return jnp.repeat(x, rows_per_prompt, axis=0)

    return repeat(logits), jax.tree.map(repeat, cache), repeat(key_mask), repeat(next_position)


def _sample(model, ids, mask, rng, adapters, settings: Decoding) -> jax.Array:
    batch, length = ids.shape
    vocab = model.config.vocab_size
    eos = jnp.asarray(settings.eos_token_ids or (-1,), jnp.int32)
    logits, cache, key_mask, next_position = _prefill(model, ids, mask, adapters, 1, settings.max_new_tokens)
    pad_block = jnp.full((batch, settings.max_new_tokens), settings.pad_token_id, jnp.int32)
    sequences = jnp.concatenate([ids, pad_block], axis=1)

    def choose(logits, sequences, cur_len, key):
        if settings.no_repeat_ngram_size:
            banned = banned_ngram_tokens(sequences, cur_len, settings.no_repeat_ngram_size, vocab)
            logits = jnp.where(banned, -jnp.inf, logits)
        if settings.temperature == 0.0:
            return jnp.argmax(logits, axis=-1).astype(jnp.int32)
        logits = logits / settings.temperature
        if settings.top_p < 1.0:
            logits = _top_p_filter(logits, settings.top_p)
        return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)

    def cond(carry):
        step, _, _, _, finished, _ = carry
        return (step < settings.max_new_tokens) & ~jnp.all(finished)

    def body(carry):
        step, logits, cache, sequences, finished, key = carry
        key, sub = jax.random.split(key)
        cur_len = length + step
        token = choose(logits, sequences, cur_len, sub)
        token = jnp.where(finished, settings.pad_token_id, token)
        sequences = jax.lax.dynamic_update_slice(sequences, token[:, None], (0, cur_len))
        finished = finished | jnp.isin(token, eos)
        with _per_row(adapters, 1):
            logits, cache = model.step(token[:, None], (next_position + step)[:, None], key_mask, cache, cur_len)
        return step + 1, logits, cache, sequences, finished, key

    carry = (jnp.int32(0), logits, cache, sequences, jnp.zeros((batch,), bool), rng)
    _, _, _, sequences, _, _ = jax.lax.while_loop(cond, body, carry)
    return sequences[:, length:]


def _beam_search(model, ids, mask, adapters, settings: Decoding) -> jax.Array:
    """transformers' vectorised beam search (``early_stopping=False``) over a KV cache of ``B · num_beams`` rows."""
    batch, length = ids.shape
    beams, vocab = settings.num_beams, model.config.vocab_size
    total = length + settings.max_new_tokens
    keep = max(2, 1 + len(settings.eos_token_ids)) * beams
    top_beam_mask = jnp.arange(keep) < beams
    eos = jnp.asarray(settings.eos_token_ids or (-1,), jnp.int32)
    logits, cache, key_mask, next_position = _prefill(model, ids, mask, adapters, beams, settings.max_new_tokens)
    pad_block = jnp.full((batch, settings.max_new_tokens), settings.pad_token_id, jnp.int32)
    running = jnp.repeat(jnp.concatenate([ids, pad_block], axis=1)[:, None], beams, axis=1)  # (B, nb, S)
    running_scores = jnp.where(jnp.arange(beams) == 0, 0.0, NEG)[None].repeat(batch, axis=0).astype(jnp.float32)
    finished = running
    finished_scores = jnp.full((batch, beams), NEG, jnp.float32)
    finished_flags = jnp.zeros((batch, beams), bool)
    improvable = jnp.ones((batch, 1), bool)

    def gather(x, index):  # x (B, K, ...), index (B, k) -> (B, k, ...)
        return jnp.take_along_axis(x, index.reshape(index.shape + (1,) * (x.ndim - 2)), axis=1)

    def cond(carry):
        step, *_, improvable, hits = carry
        return (step < settings.max_new_tokens) & jnp.any(improvable) & ~jnp.all(hits)

    def body(carry):
        step, logits, cache, running, running_scores, finished, finished_scores, finished_flags, improvable, _ = carry
        cur_len = length + step
        log_probs = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        if settings.no_repeat_ngram_size:
            flat_running = running.reshape(batch * beams, total)
            banned = banned_ngram_tokens(flat_running, cur_len, settings.no_repeat_ngram_size, vocab)
            log_probs = jnp.where(banned, -jnp.inf, log_probs)
        log_probs = log_probs.reshape(batch, beams, vocab) + running_scores[:, :, None]
        top_log_probs, top_index = jax.lax.top_k(log_probs.reshape(batch, beams * vocab), keep)
        source_beam, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
        candidates = gather(running, source_beam)
        candidates = jax.lax.dynamic_update_slice(candidates, token[:, :, None], (0, 0, cur_len))
        hits = jnp.isin(token, eos) | (cur_len + 1 >= total)
        # the best num_beams candidates that did not finish keep running
        running_log_probs = top_log_probs + hits.astype(jnp.float32) * NEG
        chosen = jax.lax.top_k(running_log_probs, beams)[1]
        running, running_scores = gather(candidates, chosen), gather(running_log_probs, chosen)
        parent = gather(source_beam, chosen)
        # finished hypotheses among the top num_beams candidates join the kept ones if they score higher
        scores = top_log_probs / ((cur_len + 1 - length) ** settings.length_penalty)
        just_finished = hits & top_beam_mask[None, :]
        scores = scores + (~improvable).astype(jnp.float32) * NEG + (~just_finished).astype(jnp.float32) * NEG
        merged = jnp.concatenate([finished, candidates], axis=1)
        merged_scores = jnp.concatenate([finished_scores, scores], axis=1)
        merged_flags = jnp.concatenate([finished_flags, just_finished], axis=1)
        best = jax.lax.top_k(merged_scores, beams)[1]
        finished, finished_scores, finished_flags = (
            gather(merged, best),
            gather(merged_scores, best),
            gather(merged_flags, best),
        )
        rows = (jnp.arange(batch)[:, None] * beams + parent).reshape(-1)
        cache = jax.tree.map(lambda x: x[rows], cache)
        tokens = jax.lax.dynamic_index_in_dim(running, cur_len, axis=2, keepdims=False).reshape(-1, 1)
        with _per_row(adapters, beams):  # row b·beams + j is a beam of prompt b
            logits, cache = model.step(tokens, (next_position + step)[:, None], key_mask, cache, cur_len)
        best_running = running_scores[:, :1] / ((cur_len + 1 - length) ** settings.length_penalty)
        worst_finished = jnp.where(finished_flags, jnp.min(finished_scores, axis=1, keepdims=True), NEG)
        improvable = improvable & jnp.any(best_running > worst_finished, axis=-1, keepdims=True)
        return (
            step + 1, logits, cache, running, running_scores, finished, finished_scores, finished_flags, improvable,
            hits,
        )  # fmt: skip

    carry = (
        jnp.int32(0), logits, cache, running, running_scores, finished, finished_scores, finished_flags, improvable,
        jnp.zeros((batch, keep), bool),
    )  # fmt: skip
    carry = jax.lax.while_loop(cond, body, carry)
    finished = carry[5]
    return finished[:, 0, length:]
