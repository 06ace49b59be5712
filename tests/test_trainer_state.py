"""A CausalLMTrainer killed after a save resumes from it and ends where the uninterrupted run ends (one real
SmolLM2 layer, FourierFT on q/v, warmup/decay schedule); a save killed half-way leaves the previous state; a
state of another rate is refused."""

from __future__ import annotations

import itertools

import jax
import numpy as np
import pytest
import smollm2

import fourier_flax as ff
from fourier_flax import nnx as ffnnx
from fourier_flax.finetune.causal_lm import CausalLMTrainer, encode_batches, encode_chat
from fourier_flax.finetune.trainer_state import restore_trainer_state, save_trainer_state
from fourier_flax.models import llama

pytest.importorskip("gguf")
PAIRS = [
    ("name=The Eagle | food=Chinese", "The Eagle serves Chinese food."),
    ("name=Zizzi | eatType=pub", "Zizzi is a pub."),
    ("name=Cotto | near=The Bakers", "Cotto is near The Bakers."),
    ("name=Alimentum | area=city centre", "Alimentum is in the city centre."),
]
STEPS = 6


@pytest.fixture(scope="module")
def batches():
    examples = encode_chat(smollm2.tokenizer(), PAIRS)
    return [next(encode_batches(examples, 2, shuffle=True, seed=0, epoch=e)) for e in range(STEPS)]


def new_trainer(rate: float = 1e-2) -> CausalLMTrainer:
    model = llama.from_gguf(smollm2.gguf_path(), num_hidden_layers=1)
    config = ff.FourierFTConfig(target_modules=["q_proj", "v_proj"], n_frequency=50, scaling=50.0)
    ffnnx.apply_adapter(model, config, jax.random.key(0))
    return CausalLMTrainer(model, learning_rate=rate, scaling=50.0, warmup_steps=2, total_steps=STEPS)


def test_a_resumed_run_ends_where_the_uninterrupted_run_ends(batches, tmp_path):
    whole = new_trainer()
    whole_losses = [whole.step(batch) for batch in batches]

    first = new_trainer()
    losses = [first.step(batch) for batch in batches[:2]]
    save_trainer_state(tmp_path, first, arrays={"best": first.snapshot()}, meta={"trace": [[2, 1.5]]})
    first.step(batches[2])  # a step after the save, lost with the killed process
    best_then = first.snapshot()
    del first

    resumed = new_trainer()
    arrays, meta = restore_trainer_state(tmp_path, resumed, arrays_like={"best": resumed.snapshot()})
    assert resumed.steps_taken == 2 and meta == {"trace": [[2, 1.5]]}
    assert not np.array_equal(jax.tree.leaves(arrays["best"])[0], jax.tree.leaves(best_then)[0])
    losses += [resumed.step(batch) for batch in itertools.islice(batches, resumed.steps_taken, None)]
    # the same rates (schedule position), moments and data; XLA on CPU varies in the last bits from run to run
    # (measured: 1e-7 relative on these losses, between two identical processes), hence the tolerance
    np.testing.assert_allclose(losses, whole_losses, rtol=1e-6)
    for a, b in zip(jax.tree.leaves(resumed.params), jax.tree.leaves(whole.params), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_a_killed_save_leaves_the_previous_state_and_other_runs_are_refused(batches, tmp_path, monkeypatch):
    import orbax.checkpoint as ocp

    trainer = new_trainer()
    trainer.step(batches[0])
    save_trainer_state(tmp_path, trainer)
    trainer.step(batches[1])

    def killed(self, *args, **kwargs):
        raise KeyboardInterrupt("killed while writing")

    monkeypatch.setattr(ocp.CheckpointManager, "save", killed)
    with pytest.raises(KeyboardInterrupt):
        save_trainer_state(tmp_path, trainer)
    monkeypatch.undo()
    partial = tmp_path / "2.orbax-checkpoint-tmp-1764700000000000"  # what a process killed mid-write leaves
    (partial / "state").mkdir(parents=True)
    (partial / "state" / "half_written").write_bytes(b"\0" * 100)
    fresh = new_trainer()
    assert restore_trainer_state(tmp_path, fresh) is not None and fresh.steps_taken == 1
    save_trainer_state(tmp_path, trainer)  # the next save completes and clears the leftovers
    assert sorted(p.name for p in tmp_path.iterdir()) == ["2"]
    assert restore_trainer_state(tmp_path, fresh) is not None and fresh.steps_taken == 2
    with pytest.raises(ValueError, match="rate 0.01 .* not this trainer's 0.003"):
        restore_trainer_state(tmp_path, new_trainer(rate=3e-3))
    assert restore_trainer_state(tmp_path / "nothing-here", fresh) is None
