"""Causal-LM fine-tuning on prompt → response data: loss on response tokens only, length buckets, a
cross-entropy in token chunks, and a jitted adapter train step with traced rates and scaling.

* :func:`encode_chat` turns (prompt, response) pairs into token ids through the tokenizer's chat template, with a
  loss mask on the response and the turn's end token (``<|im_end|>`` for SmolLM2: the model learns to stop);
* :func:`encode_batches` cuts them into right-padded, length-bucketed batches (:mod:`fourier_flax.data.bucketing`);
* :func:`chunked_cross_entropy` computes the loss from the final hidden states ``chunk`` tokens at a time, each
  chunk's logits rebuilt in the backward pass (``jax.checkpoint``), so the ``(B, T, vocab)`` float32 logits never
  exist at once (:func:`logits_bytes` says how much that is); the loss tokens are gathered first and chunks
  without one are skipped, so the output layer runs on the response tokens, not on the prompt and padding;
* :class:`CausalLMTrainer` trains the adapter leaves (:class:`fourier_flax.nnx.AdapterParam`) of a model adapted
  with :func:`fourier_flax.nnx.apply_adapter`; the learning rate and the update's scale (FourierFT's scaling,
  LoRA's alpha / r) are traced inputs of one compiled step (changing them does not recompile), as in the GLUE
  :class:`~fourier_flax.finetune.Trainer`.

Example::

  model = llama.from_gguf(smollm2_path(), quantized=True)
  apply_adapter(model, FourierFTConfig(target_modules=["q_proj", "v_proj"], n_frequency=1000), jax.random.key(0))
  examples = encode_chat(tokenizer, [("name=Alimentum | food=Chinese", "Alimentum serves Chinese food.")])
  trainer = CausalLMTrainer(model, learning_rate=3e-3, scaling=150.0)  # trainer.model: the trained model
  for batch in encode_batches(examples, batch_size=8, shuffle=True, seed=0, epoch=0):
      loss = trainer.step(batch)
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from fourier_flax.data.bucketing import bucket_lengths, bucketed_batches
from fourier_flax.methods import check_scale_override
from fourier_flax.nnx import AdapterParam, adapted_layers

Example = tuple[np.ndarray, np.ndarray]  # token ids (L,) int32, loss mask (L,) bool (True: predict this token)


def chat_prompt(tokenizer: Any, prompt: str, *, system: str | None = None) -> list[int]:
    """The chat template's tokens for one user turn, ending with the assistant's opening (the generation prompt)."""
    messages = ([{"role": "system", "content": system}] if system else []) + [{"role": "user", "content": prompt}]
    text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_chat(
    tokenizer: Any, pairs: Sequence[tuple[str, str]], *, system: str | None = None, max_length: int = 512
) -> list[Example]:
    """Token ids and response-only loss masks of (prompt, response) pairs.

    Each example is the chat template's prompt (:func:`chat_prompt`), the response's tokens and the tokenizer's
    ``eos_token_id`` (the end of the assistant turn); the mask is True on the response and that end token.

    Raises:
      ValueError: an example longer than ``max_length`` tokens, or a tokenizer without an EOS token.
    """
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no eos_token_id to end the response with.")
    examples = []
    for prompt, response in pairs:
        head = chat_prompt(tokenizer, prompt, system=system)
        tail = list(tokenizer(response, add_special_tokens=False)["input_ids"]) + [tokenizer.eos_token_id]
        ids = np.asarray(head + tail, np.int32)
        if len(ids) > max_length:
            raise ValueError(f"an example has {len(ids)} tokens, more than max_length={max_length}: {prompt[:60]!r}")
        examples.append((ids, np.arange(len(ids)) >= len(head)))
    return examples


def encode_batches(
    examples: Sequence[Example],
    batch_size: int,
    *,
    shuffle: bool,
    seed: int = 0,
    epoch: int = 0,
    drop_remainder: bool = False,
    smallest_bucket: int = 32,
    bucket_multiple: int | None = None,
) -> Iterator[dict[str, np.ndarray]]:
    """Right-padded batches ``{"input_ids", "attention_mask", "loss_mask"}`` ``(B, bucket)``, rows of similar
    length together (:func:`fourier_flax.data.bucketing.bucketed_batches`); padded rows have an all-zero mask.

    Bucket lengths are powers of two from ``smallest_bucket``, or with ``bucket_multiple`` every multiple of it
    up to the longest example (less padding, more compiled shapes). Less padding is not always less time: on
    E2E's 64–176-token examples multiples of 16 cut padding from 21% to 6% of the tokens but the step only 4%
    (``experiments/results/bench_e2e_step.md``).
    """
    if bucket_multiple is not None and bucket_multiple < 1:
        raise ValueError(f"bucket_multiple must be >= 1 (or None for powers of two), got {bucket_multiple}.")
    longest = max(len(ids) for ids, _ in examples)
    if bucket_multiple is None:
        width = max(smallest_bucket, 1 << (longest - 1).bit_length())
        buckets = bucket_lengths(width, smallest_bucket)
    else:
        width = -(-longest // bucket_multiple) * bucket_multiple
        buckets = tuple(range(bucket_multiple, width + 1, bucket_multiple))
    arrays = {
        "input_ids": np.zeros((len(examples), width), np.int32),
        "attention_mask": np.zeros((len(examples), width), np.int32),
        "loss_mask": np.zeros((len(examples), width), np.int32),
    }
    for row, (ids, mask) in enumerate(examples):
        arrays["input_ids"][row, : len(ids)] = ids
        arrays["attention_mask"][row, : len(ids)] = 1
        arrays["loss_mask"][row, : len(ids)] = mask
    for batch in bucketed_batches(
        arrays, batch_size, buckets, shuffle=shuffle, seed=seed, epoch=epoch, drop_remainder=drop_remainder
    ):
        yield {key: batch[key] for key in arrays}


def logits_bytes(batch: int, length: int, vocab: int) -> int:
    """Bytes of a batch's float32 logits ``(B, T, vocab)``: what :func:`chunked_cross_entropy` never holds."""
    return 4 * batch * length * vocab


def chunked_cross_entropy(
    logits_fn, hidden: jax.Array, targets: jax.Array, weights: jax.Array, *, chunk: int = 256
) -> tuple[jax.Array, jax.Array]:
    """Sum and count of ``−log p(target)`` over weighted tokens, ``chunk`` tokens of logits at a time.

    The weighted tokens are moved to the front (a stable order) and a chunk without one is skipped
    (``lax.cond``), so ``logits_fn`` runs on ``ceil(count / chunk)`` chunks, forward and backward: in
    prompt → response training most tokens are prompt or padding (on E2E about a fifth carry the loss).

    Args:
      logits_fn: hidden ``(chunk, H)`` → float32 logits ``(chunk, vocab)`` (the model's output layer).
      hidden: ``(N, H)`` hidden states (any leading shape is flattened).
      targets: ``(N,)`` int target ids.
      weights: ``(N,)`` loss weights (0 for prompt and padding).
      chunk: tokens per chunk; each chunk's logits are recomputed in the backward pass.

    Returns:
      ``(sum of weighted losses, sum of weights)``, float32 scalars.
    """
    hidden = hidden.reshape(-1, hidden.shape[-1])
    targets, weights = targets.reshape(-1), weights.reshape(-1).astype(jnp.float32)
    weighted_first = jnp.argsort(weights == 0, stable=True)
    hidden, targets, weights = hidden[weighted_first], targets[weighted_first], weights[weighted_first]
    size = hidden.shape[0]
    pad = (-size) % chunk
    hidden = jnp.pad(hidden, ((0, pad), (0, 0)))
    targets, weights = jnp.pad(targets, (0, pad)), jnp.pad(weights, (0, pad))
    steps = hidden.shape[0] // chunk

    def chunk_loss(h, t, w):
        logits = logits_fn(h)
        nll = jax.nn.logsumexp(logits, axis=-1) - jnp.take_along_axis(logits, t[:, None], axis=-1)[:, 0]
        return jnp.sum(nll * w).astype(jnp.float32)

    @jax.checkpoint
    def one(carry, piece):
        h, t, w = piece
        loss = jax.lax.cond(jnp.any(w != 0), chunk_loss, lambda *_: jnp.float32(0.0), h, t, w)
        return carry + loss, None

    pieces = (hidden.reshape(steps, chunk, -1), targets.reshape(steps, chunk), weights.reshape(steps, chunk))
    total, _ = jax.lax.scan(one, jnp.float32(0.0), pieces)
    return total, jnp.sum(weights)


def causal_lm_loss(model: nnx.Module, batch: dict[str, jax.Array], *, chunk: int = 256) -> jax.Array:
    """Mean next-token cross-entropy over the batch's loss-masked tokens (response tokens only)."""
    ids, mask = batch["input_ids"], batch["attention_mask"]
    hidden = model.hidden(ids[:, :-1], mask[:, :-1])
    weights = batch["loss_mask"][:, 1:] * mask[:, 1:]
    total, count = chunked_cross_entropy(model.logits, hidden, ids[:, 1:], weights, chunk=chunk)
    return total / jnp.maximum(count, 1.0)


class CausalLMTrainer:
    """Trains the adapter of an adapted causal LM: one compiled step per batch shape.

    The model is split once into its adapter leaves (:class:`fourier_flax.nnx.AdapterParam`) and the frozen rest;
    the step is a ``jax.jit`` of plain arrays, with the learning rate (``optax.inject_hyperparams``) and FourierFT's
    scaling as traced inputs. :attr:`model` returns the model with the trained leaves.

    Args:
      model: a model adapted with :func:`fourier_flax.nnx.apply_adapter` (float or 4-bit base).
      learning_rate: AdamW's peak rate.
      scaling: the update's scale factor in place of the config's (traced; None keeps the config's): FourierFT's
        ``scaling``, LoRA's, DoRA's and FLoRA's ``lora_alpha / r``. VeRA and SVFT have none (ValueError).
      weight_decay: AdamW's decay on the adapter leaves.
      chunk: tokens per cross-entropy chunk.
      warmup_steps / total_steps: linear warmup, then linear decay to 0 at ``total_steps`` (None: constant).
    """

    def __init__(
        self,
        model: nnx.Module,
        *,
        learning_rate: float,
        scaling: float | None = None,
        weight_decay: float = 0.0,
        chunk: int = 256,
        warmup_steps: int = 0,
        total_steps: int | None = None,
    ):
        if not adapted_layers(model):
            raise ValueError("the model has no adapter: call fourier_flax.nnx.apply_adapter(model, config, key) first.")
        self._model = model
        self.graphdef, self.params, self.frozen = nnx.split(model, AdapterParam, ...)
        self.scaling = self._traced_scaling(scaling)
        self.tx = optax.inject_hyperparams(optax.adamw)(learning_rate=learning_rate, weight_decay=weight_decay)
        self.opt_state = self.tx.init(self.params)
        self.base_rate, self.warmup_steps, self.total_steps = float(learning_rate), warmup_steps, total_steps
        self.chunk, self.steps_taken = chunk, 0
        self._train = jax.jit(self._train_step, static_argnums=(0, 1, 2), donate_argnums=(3, 5))
        self._eval = jax.jit(self._loss, static_argnums=(0, 1))

    def snapshot(self) -> Any:
        """A host copy of the adapter leaves (the device buffers are donated to the next step)."""
        return jax.tree.map(np.asarray, self.params)

    def restart(self, params: Any, *, learning_rate: float | None = None, scaling: float | None = None) -> None:
        """Starts over from adapter leaves ``params`` (e.g. a :meth:`snapshot` or a fresh initialisation) with a
        new rate and scaling, reusing the compiled step (both are traced): a sweep compiles once."""
        self.params = jax.tree.map(jnp.asarray, params)
        self.opt_state = self.tx.init(self.params)
        self.base_rate = self.base_rate if learning_rate is None else float(learning_rate)
        self.scaling = self.scaling if scaling is None else self._traced_scaling(scaling)
        self.steps_taken = 0

    def _traced_scaling(self, scaling: float | None) -> jax.Array | None:
        if scaling is None:
            return None
        for layer in adapted_layers(self._model).values():
            check_scale_override(layer.config, scaling)
        return jnp.float32(scaling)

    @property
    def model(self) -> nnx.Module:
        """The model holding the current adapter leaves."""
        nnx.update(self._model, self.params)
        return self._model

    def rate_at(self, step: int) -> float:
        """The learning rate of step ``step`` (0-based): ``base · (s + 1) / w`` for ``s < w`` warmup steps, then
        ``base · max(0, (T - s) / (T - w))``. Unlike Hugging Face's schedule
        (:func:`fourier_flax.finetune.training.linear_warmup_decay`), step 0 already moves (``base / w``)."""
        warmup, total = self.warmup_steps, self.total_steps
        if warmup and step < warmup:
            return self.base_rate * (step + 1) / warmup
        if total:
            return self.base_rate * max(0.0, (total - step) / max(1, total - warmup))
        return self.base_rate

    @staticmethod
    def _loss(graphdef, chunk, params, frozen, batch, scaling):
        model = nnx.merge(graphdef, params, frozen)
        if scaling is not None:
            for layer in adapted_layers(model).values():
                layer.scaling = scaling
        return causal_lm_loss(model, batch, chunk=chunk)

    @staticmethod
    def _train_step(graphdef, chunk, tx, params, frozen, opt_state, batch, scaling):
        loss_fn = lambda p: CausalLMTrainer._loss(graphdef, chunk, p, frozen, batch, scaling)  # noqa: E731
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def step(self, batch: dict[str, np.ndarray]) -> float:
        """One optimizer step on ``batch`` (from :func:`encode_batches`); returns the loss before the update."""
        self.opt_state.hyperparams["learning_rate"] = jnp.float32(self.rate_at(self.steps_taken))
        self.params, self.opt_state, loss = self._train(
            self.graphdef, self.chunk, self.tx, self.params, self.frozen, self.opt_state, _device_batch(batch),
            self.scaling,
        )  # fmt: skip
        self.steps_taken += 1
        return float(loss)

    def loss(self, batch: dict[str, np.ndarray]) -> float:
        """The response loss on ``batch`` without training."""
        return float(
            self._eval(self.graphdef, self.chunk, self.params, self.frozen, _device_batch(batch), self.scaling)
        )


def decode(
    model: nnx.Module,
    tokenizer: Any,
    prompts: Sequence[str],
    *,
    system: str | None = None,
    batch_size: int = 8,
    bucket: int = 32,
    **settings: Any,
) -> list[str]:
    """The model's answers to user ``prompts`` (chat template), decoded by :func:`fourier_flax.generate`.

    Prompts are sorted by length and cut into batches of ``batch_size``, each left-padded to a multiple of
    ``bucket`` tokens (few distinct shapes, so few compilations); ``settings`` go to ``generate`` (e.g.
    ``max_new_tokens``, ``num_beams``). Answers are stripped, on one line, in the order of ``prompts``.
    """
    from fourier_flax.generation import generate

    encoded = [chat_prompt(tokenizer, prompt, system=system) for prompt in prompts]
    order = sorted(range(len(encoded)), key=lambda i: len(encoded[i]))
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    answers: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        width = -(-max(len(encoded[i]) for i in rows) // bucket) * bucket
        ids = np.full((batch_size, width), pad, np.int32)
        mask = np.zeros((batch_size, width), np.int32)
        for slot, i in enumerate(rows):
            ids[slot, width - len(encoded[i]) :] = encoded[i]
            mask[slot, width - len(encoded[i]) :] = 1
        mask[len(rows) :, -1] = 1  # filler rows (a short last batch) hold one token
        new = np.asarray(generate(model, ids, attention_mask=mask, pad_token_id=pad, **settings))
        for slot, i in enumerate(rows):
            answers[i] = " ".join(tokenizer.decode(new[slot], skip_special_tokens=True).split())
    return answers


def _device_batch(batch: dict[str, np.ndarray]) -> dict[str, jax.Array]:
    return {key: jnp.asarray(batch[key]) for key in ("input_ids", "attention_mask", "loss_mask")}
