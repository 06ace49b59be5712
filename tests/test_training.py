"""Trainable masks, the params split, the optimizer (state, learning rates, schedule), losses and the steps."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import torch
from flax import traverse_util
from transformers import get_linear_schedule_with_warmup

from fourier_flax import (
    init_adapter,
    intercept,
    merge_params,
    param_labels,
    print_trainable_parameters,
    split_params,
    trainable_mask,
    trainable_parameter_summary,
)
from fourier_flax.finetune import (
    classification_loss,
    linear_warmup_decay,
    make_eval_step,
    make_optimizer,
    make_train_step,
    regression_loss,
)
from fourier_flax.methods.fourierft import FourierFTConfig
from fourier_flax.methods.lora import LoraConfig
from fourier_flax.models.hf import load_minilm

D, N, LABELS, R = 6, 5, 3, 2


def bert_like(adapter: str = "fourier", seed: int = 0) -> dict:
    """A 2-layer BERT-shaped tree (hidden D) with adapter leaves beside the query/value kernels."""
    rng = np.random.default_rng(seed)

    def arr(*shape):
        return jnp.asarray(rng.standard_normal(shape), jnp.float32)

    def dense(d_in, d_out, adapted=False):
        module = {"kernel": arr(d_in, d_out), "bias": arr(d_out)}
        if adapted and adapter == "fourier":
            module["fourierft_spectrum"] = arr(N)
        if adapted and adapter == "lora":
            module["lora_a"], module["lora_b"] = arr(d_in, R), arr(R, d_out)
        return module

    def layer_norm():
        return {"scale": arr(D), "bias": arr(D)}

    layers = {
        str(i): {
            "attention": {
                "self": {"query": dense(D, D, True), "key": dense(D, D), "value": dense(D, D, True)},
                "output": {"dense": dense(D, D), "LayerNorm": layer_norm()},
            },
            "intermediate": {"dense": dense(D, 2 * D)},
            "output": {"dense": dense(2 * D, D), "LayerNorm": layer_norm()},
        }
        for i in range(2)
    }
    return {
        "bert": {
            "embeddings": {"word_embeddings": {"embedding": arr(11, D)}, "LayerNorm": layer_norm()},
            "encoder": {"layer": layers},
            "pooler": {"dense": dense(D, D)},
        },
        "classifier": dense(D, LABELS),
    }


def trained_paths(params, mask) -> set[str]:
    return {".".join(k) for k, v in traverse_util.flatten_dict(mask).items() if v}


ADAPTED = [f"bert.encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")]
SPECTRA = {f"{m}.fourierft_spectrum" for m in ADAPTED}
HEAD = {"classifier.kernel", "classifier.bias"}
ADAPTED_BIASES = {f"{m}.bias" for m in ADAPTED}


def all_biases(params) -> set[str]:
    return {".".join(k) for k in traverse_util.flatten_dict(params) if k[-1] == "bias"}


def fourier_config(**kwargs) -> FourierFTConfig:
    return FourierFTConfig(target_modules=["query", "value"], modules_to_save=["classifier"], **kwargs)


class TestMask:
    def test_bias_none(self):
        params = bert_like()
        assert trained_paths(params, trainable_mask(params, fourier_config())) == SPECTRA | HEAD

    def test_bias_all_includes_every_bias_layer_norm_too(self):
        params = bert_like()
        expected = SPECTRA | HEAD | all_biases(params)
        assert "bert.encoder.layer.0.output.LayerNorm.bias" in expected
        assert trained_paths(params, trainable_mask(params, fourier_config(bias="all"))) == expected

    def test_bias_fourier_only(self):
        params = bert_like()
        mask = trainable_mask(params, fourier_config(bias="fourier_only"))
        assert trained_paths(params, mask) == SPECTRA | HEAD | ADAPTED_BIASES

    def test_without_modules_to_save_only_spectra(self):
        params = bert_like()
        mask = trainable_mask(params, FourierFTConfig(target_modules=["query", "value"]))
        assert trained_paths(params, mask) == SPECTRA

    def test_saved_module_includes_its_submodules(self):
        params = bert_like()
        params["classifier"] = {"dense": params["classifier"], "out_proj": dict(params["classifier"])}
        expected = SPECTRA | {f"classifier.{s}.{leaf}" for s in ("dense", "out_proj") for leaf in ("kernel", "bias")}
        assert trained_paths(params, trainable_mask(params, fourier_config())) == expected

    def test_variables_dict_with_params_collection(self):
        params = bert_like()
        stats = {"classifier": {"mean": jnp.zeros(LABELS)}}  # another collection: never trained
        mask = trainable_mask({"params": params, "batch_stats": stats}, fourier_config(bias="fourier_only"))
        assert trained_paths(params, mask["params"]) == SPECTRA | HEAD | ADAPTED_BIASES
        assert mask["batch_stats"] == {"classifier": {"mean": False}}

    def test_stacked_layers(self):
        params = bert_like()
        stacked = {"layers": {"query": {"kernel": jnp.zeros((2, D, D)), "fourierft_spectrum": jnp.zeros((2, N))}}}
        params["bert"]["encoder"] = stacked
        mask = trainable_mask(params, fourier_config())
        assert trained_paths(params, mask) == {"bert.encoder.layers.query.fourierft_spectrum"} | HEAD

    @pytest.mark.parametrize("bias, extra", [("none", set()), ("lora_only", ADAPTED_BIASES), ("all", None)])
    def test_lora(self, bias, extra):
        params = bert_like("lora")
        config = LoraConfig(target_modules=["query", "value"], modules_to_save=["classifier"], bias=bias)
        extra = all_biases(params) if extra is None else extra
        factors = {f"{m}.lora_{ab}" for m in ADAPTED for ab in "ab"}
        assert trained_paths(params, trainable_mask(params, config)) == factors | HEAD | extra

    def test_labels(self):
        params = bert_like()
        labels = traverse_util.flatten_dict(param_labels(params, fourier_config(bias="fourier_only")))
        by_label = {lab: {".".join(k) for k, v in labels.items() if v == lab} for lab in ("adapter", "head")}
        assert by_label == {"adapter": SPECTRA, "head": HEAD | ADAPTED_BIASES}
        assert set(labels.values()) == {"adapter", "head", "frozen"}

    def test_missing_adapter_leaves(self):
        with pytest.raises(ValueError, match="init_adapter"):
            trainable_mask(bert_like("none"), fourier_config())
        with pytest.raises(ValueError, match="'lora_a' / 'lora_b'"):
            trainable_mask(bert_like("fourier"), LoraConfig(target_modules=["query"]))

    def test_unmatched_modules_to_save(self):
        config = FourierFTConfig(target_modules=["query"], modules_to_save=["score"])
        with pytest.raises(ValueError, match=r"matches no module(.|\n)*bert.pooler.dense"):
            trainable_mask(bert_like(), config)


class TestSplit:
    def test_round_trip_keeps_the_same_arrays(self):
        params = bert_like()
        trainable, frozen = split_params(params, trainable_mask(params, fourier_config()))
        flat_t, flat_f = traverse_util.flatten_dict(trainable), traverse_util.flatten_dict(frozen)
        assert {".".join(k) for k in flat_t} == SPECTRA | HEAD
        assert not flat_t.keys() & flat_f.keys()
        merged = traverse_util.flatten_dict(merge_params(trainable, frozen))
        for key, leaf in traverse_util.flatten_dict(params).items():
            if key in flat_t:  # a copy: donating it to a train step must not delete the caller's array
                assert merged[key] is not leaf
                np.testing.assert_array_equal(np.asarray(merged[key]), np.asarray(leaf))
            else:
                assert merged[key] is leaf

    def test_mask_mismatch(self):
        params = bert_like()
        mask = trainable_mask(bert_like("lora"), LoraConfig(target_modules=["query"]))
        with pytest.raises(ValueError, match="different leaves"):
            split_params(params, mask)

    def test_merge_overlap(self):
        params = bert_like()
        trainable, _ = split_params(params, trainable_mask(params, fourier_config()))
        with pytest.raises(ValueError, match="both hold"):
            merge_params(trainable, trainable)


def test_summary_against_hand_count(capsys):
    params = bert_like()
    per_layer = 4 * (D * D + D) + 2 * 2 * D + (D * 2 * D + 2 * D) + (2 * D * D + D) + 2 * N
    total = 11 * D + 2 * D + 2 * per_layer + (D * D + D) + (D * LABELS + LABELS)
    trainable = 4 * N + D * LABELS + LABELS
    count, all_count, pct = trainable_parameter_summary(params, trainable_mask(params, fourier_config()))
    assert (count, all_count) == (trainable, total)
    assert pct == pytest.approx(100 * trainable / total)
    print_trainable_parameters(params, trainable_mask(params, fourier_config()))
    expected = f"trainable params: {trainable} || all params: {total:,} || trainable%: {100 * trainable / total:.4f}"
    assert capsys.readouterr().out == expected + "\n"


def test_summary_counts_params_collection_and_shapes_only():
    params = bert_like()
    mask = trainable_mask(params, fourier_config())
    expected = trainable_parameter_summary(params, mask)
    shapes = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), params)
    assert trainable_parameter_summary(shapes, mask) == expected
    variables = {"params": params, "batch_stats": {"classifier": {"mean": jnp.zeros(100)}}}
    assert trainable_parameter_summary(variables, trainable_mask(variables, fourier_config())) == expected


def state_sizes(state) -> int:
    """Elements in the optimizer state's non-scalar arrays (moments), step counters excluded."""
    return sum(x.size for x in jax.tree.leaves(state) if np.ndim(x) > 0)


class TestOptimizer:
    def test_state_covers_trainable_only(self):
        params = bert_like()
        mask = trainable_mask(params, fourier_config(bias="all"))
        trainable, _ = split_params(params, mask)
        count, total, _ = trainable_parameter_summary(params, mask)
        optimizer = make_optimizer(spectrum_lr=0.1, head_lr=0.01, total_steps=10)
        assert state_sizes(optimizer.init(trainable)) == 2 * count  # Adam's mu and nu, nothing else
        # Optimising the full tree with explicit labels: frozen leaves still carry no moments.
        full = make_optimizer(
            spectrum_lr=0.1, head_lr=0.01, total_steps=10, labels=param_labels(params, fourier_config(bias="all"))
        )
        assert state_sizes(full.init(params)) == 2 * count < total

    def test_first_update_is_each_groups_lr(self):
        """Adam's first step is -lr · g / (|g| + eps) ≈ -lr · sign(g) for every leaf with |g| ≫ eps."""
        params = bert_like()
        trainable, _ = split_params(params, trainable_mask(params, fourier_config()))
        grads = jax.tree.map(lambda x: jnp.full_like(x, 0.5) * jnp.sign(x), trainable)
        optimizer = make_optimizer(spectrum_lr=0.3, head_lr=2e-3, total_steps=10, warmup_ratio=0.0)
        updates, _ = jax.jit(optimizer.update)(grads, optimizer.init(trainable), trainable)
        flat = traverse_util.flatten_dict(updates)
        for key, update in flat.items():
            lr = 0.3 if key[-1] == "fourierft_spectrum" else 2e-3
            expected = -lr * np.sign(np.asarray(traverse_util.flatten_dict(trainable)[key]))
            # float32 bias corrections (1 - 0.999 is off by 5e-5 relative) limit agreement to ~1e-5.
            np.testing.assert_allclose(np.asarray(update), expected, rtol=1e-4)

    def test_weight_decay_is_decoupled(self):
        params = {"q": {"kernel": jnp.ones((2, 2)), "fourierft_spectrum": jnp.asarray([2.0, -4.0])}}
        optimizer = make_optimizer(spectrum_lr=0.1, head_lr=1e-3, total_steps=10, warmup_ratio=0.0, weight_decay=0.5)
        trainable = {"q": {"fourierft_spectrum": params["q"]["fourierft_spectrum"]}}
        grads = {"q": {"fourierft_spectrum": jnp.asarray([1.0, 1.0])}}
        updates, _ = optimizer.update(grads, optimizer.init(trainable), trainable)
        # torch.optim.AdamW: p ← p - lr·wd·p - lr·m̂/(√v̂ + eps), with m̂/√v̂ = sign(g) on step 1.
        np.testing.assert_allclose(
            np.asarray(updates["q"]["fourierft_spectrum"]), [-0.1 * (1 + 0.5 * 2), -0.1 * (1 - 0.5 * 4)], rtol=1e-4
        )

    def test_warmup_starts_at_zero_learning_rate(self):
        trainable = {"q": {"fourierft_spectrum": jnp.ones(3)}}
        optimizer = make_optimizer(spectrum_lr=0.1, head_lr=1e-3, total_steps=100)
        updates, _ = optimizer.update(trainable, optimizer.init(trainable), trainable)
        np.testing.assert_array_equal(np.asarray(updates["q"]["fourierft_spectrum"]), 0.0)


@pytest.mark.parametrize("total, ratio", [(100, 0.06), (37, 0.1), (10, 0.06), (20, 0.0)])
def test_schedule_matches_transformers(total, ratio):
    """Against Hugging Face's get_linear_schedule_with_warmup on a torch optimizer (the paper's scheduler)."""
    peak = 0.05
    weight = torch.nn.Parameter(torch.zeros(1))
    torch_opt = torch.optim.SGD([weight], lr=peak)
    torch_schedule = get_linear_schedule_with_warmup(torch_opt, ratio * total, total)
    expected = []
    for _ in range(total + 5):
        expected.append(torch_opt.param_groups[0]["lr"])
        torch_opt.step()
        torch_schedule.step()
    schedule = linear_warmup_decay(peak, total, ratio)
    got = [float(schedule(s)) for s in range(total + 5)]
    np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-9)


def test_schedule_hand_values():
    schedule = linear_warmup_decay(0.2, total_steps=50, warmup_ratio=0.1)  # 5 warm-up steps
    hand = {0: 0.0, 2: 0.2 * 2 / 5, 5: 0.2, 30: 0.2 * 20 / 45, 50: 0.0, 60: 0.0}
    for step, lr in hand.items():
        assert float(schedule(step)) == pytest.approx(lr, abs=1e-8)


@pytest.mark.parametrize("total, ratio", [(0, 0.06), (10, 1.0), (10, -0.1)])
def test_schedule_rejects_bad_input(total, ratio):
    with pytest.raises(ValueError, match="total_steps|warmup_ratio"):
        linear_warmup_decay(0.1, total, ratio)


class LossTest(chex.TestCase):
    @chex.variants(with_jit=True, without_jit=True)
    def test_classification_against_float64(self):
        logits = np.random.default_rng(0).standard_normal((7, 4)).astype(np.float32)
        labels = np.asarray([0, 3, 1, 1, 2, 0, 3], np.int32)
        shifted = logits.astype(np.float64) - logits.max(-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
        expected = -log_probs[np.arange(7), labels].mean()
        with jax.numpy_dtype_promotion("strict"):
            got = self.variant(classification_loss)(jnp.asarray(logits), jnp.asarray(labels))
        np.testing.assert_allclose(float(got), expected, rtol=1e-6)

    @chex.variants(with_jit=True, without_jit=True)
    def test_regression_against_float64(self):
        rng = np.random.default_rng(1)
        logits = rng.standard_normal((5, 1)).astype(np.float32)
        labels = rng.uniform(0, 5, 5).astype(np.float32)
        expected = np.mean((logits[:, 0].astype(np.float64) - labels) ** 2)
        with jax.numpy_dtype_promotion("strict"):
            got = self.variant(regression_loss)(jnp.asarray(logits), jnp.asarray(labels))
        np.testing.assert_allclose(float(got), expected, rtol=1e-6)

    def test_regression_rejects_several_outputs(self):
        with pytest.raises(ValueError, match="num_labels=1"):
            regression_loss(jnp.zeros((2, 3)), jnp.zeros(2))


def toy_apply(params, batch, rng, train):
    """A 2-layer model that reads the spectra (as a rank-one change of the query kernels) and the head."""
    h = batch["x"]
    for i in range(2):
        query = params["bert"]["encoder"]["layer"][str(i)]["attention"]["self"]["query"]
        kernel = query["kernel"] + jnp.outer(query["fourierft_spectrum"][:1].repeat(D), jnp.ones(D))
        h = jnp.tanh(h @ kernel + query["bias"])
    if train:
        h = jnp.where(jax.random.bernoulli(rng, 0.9, h.shape), h / 0.9, 0.0)
    return h @ params["classifier"]["kernel"] + params["classifier"]["bias"]


def toy_batch(seed=0):
    rng = np.random.default_rng(seed)
    return {
        "x": jnp.asarray(rng.standard_normal((8, D)), jnp.float32),
        "labels": jnp.asarray(rng.integers(0, LABELS, 8), jnp.int32),
    }


class TestSteps:
    @pytest.mark.parametrize("donate", [True, False])
    def test_step_changes_only_trainable(self, donate):
        params = bert_like()
        mask = trainable_mask(params, fourier_config(bias="fourier_only"))
        trainable, frozen = split_params(params, mask)
        before = jax.tree.map(np.array, params)
        optimizer = make_optimizer(spectrum_lr=0.1, head_lr=0.01, total_steps=10, warmup_ratio=0.0)
        opt_state = optimizer.init(trainable)
        step = make_train_step(toy_apply, classification_loss, optimizer, donate=donate)
        # Not under strict promotion: optax's Adam bias correction computes ``b1 ** int32_count``.
        trainable, opt_state, metrics = step(trainable, opt_state, frozen, toy_batch(), jax.random.key(0))
        after = traverse_util.flatten_dict(merge_params(trainable, frozen))
        for key, old in traverse_util.flatten_dict(before).items():
            new = np.asarray(after[key])
            if traverse_util.flatten_dict(mask)[key] and "value" not in key:  # value leaves get no gradient
                assert not np.array_equal(new, old), key
            elif not traverse_util.flatten_dict(mask)[key]:
                np.testing.assert_array_equal(new, old)
                assert new.dtype == old.dtype
        assert np.isfinite(metrics["loss"]) and metrics["grad_norm"] > 0

    def test_full_tree_optimizer_keeps_frozen_bit_identical(self):
        params = bert_like()
        labels = param_labels(params, fourier_config())
        optimizer = make_optimizer(spectrum_lr=0.1, head_lr=0.01, total_steps=10, labels=labels)
        grads = jax.tree.map(jnp.ones_like, params)
        updates, _ = optimizer.update(grads, optimizer.init(params), params)
        new = traverse_util.flatten_dict(optax.apply_updates(params, updates))
        for key, lab in traverse_util.flatten_dict(labels).items():
            if lab == "frozen":
                np.testing.assert_array_equal(np.asarray(new[key]), np.asarray(traverse_util.flatten_dict(params)[key]))

    def test_steps_lower_the_loss_and_eval_matches(self):
        params = bert_like()
        trainable, frozen = split_params(params, trainable_mask(params, fourier_config()))
        optimizer = make_optimizer(spectrum_lr=0.05, head_lr=0.05, total_steps=30, warmup_ratio=0.0)
        opt_state = optimizer.init(trainable)
        step = make_train_step(toy_apply, classification_loss, optimizer)
        evaluate = make_eval_step(toy_apply, classification_loss)
        batch = toy_batch()
        first = evaluate(trainable, frozen, batch)
        for i in range(30):
            trainable, opt_state, _ = step(trainable, opt_state, frozen, batch, jax.random.key(i))
        last = evaluate(trainable, frozen, batch)
        assert float(last["loss"]) < 0.5 * float(first["loss"])
        direct = toy_apply(merge_params(trainable, frozen), batch, None, False)
        np.testing.assert_allclose(np.asarray(last["logits"]), np.asarray(direct), rtol=1e-6)


@pytest.fixture(scope="module")
def minilm_classifier():
    """The real all-MiniLM-L6-v2, first 2 layers, with a fresh 2-way head (offline: see conftest.py)."""
    return load_minilm(num_labels=2, num_hidden_layers=2)


@pytest.mark.parametrize(
    "config, spectrum_lr",
    [
        (FourierFTConfig(target_modules=["query", "value"], modules_to_save=["classifier"], scaling=150.0), 1.0),
        (LoraConfig(target_modules=["query", "value"], modules_to_save=["classifier"], r=4, lora_alpha=8.0), 0.1),
    ],
    ids=["fourierft", "lora"],
)
def test_minilm_steps_lower_the_loss(minilm_classifier, config, spectrum_lr):
    """Six steps on a fixed batch of the real MiniLM lower the loss and leave the frozen leaves bit-identical.

    The two classes differ in their token ranges. Random-token sentences pool to nearly the same feature, so
    the head alone barely moves the loss in six steps: the adapter must change the features, and over so few
    steps FourierFT needs a larger rate than the paper's (0.05-0.12 over thousands of steps).
    """
    model, pretrained = minilm_classifier
    params = init_adapter(pretrained, config, jax.random.key(0))
    mask = trainable_mask(params, config)
    count, total, _ = trainable_parameter_summary(params, mask)
    adapter_size = 4 * (1000 if isinstance(config, FourierFTConfig) else 4 * (384 + 384))
    pretrained_size = sum(leaf.size for leaf in jax.tree.leaves(pretrained))
    assert (count, total) == (adapter_size + 384 * 2 + 2, pretrained_size + adapter_size)

    trainable, frozen = split_params(params, mask)
    frozen_before = jax.tree.map(np.array, frozen)

    def apply_fn(params, batch, rng, train):
        with intercept(config):
            return model(
                batch["input_ids"], batch["attention_mask"], params=params, dropout_rng=rng, train=train
            ).logits

    rng = np.random.default_rng(0)
    ids = np.concatenate([rng.integers(1000, 1500, (4, 16)), rng.integers(7000, 7500, (4, 16))])
    batch = {
        "input_ids": jnp.asarray(ids, jnp.int32),
        "attention_mask": jnp.ones((8, 16), jnp.int32),
        "labels": jnp.asarray([0] * 4 + [1] * 4, jnp.int32),
    }
    optimizer = make_optimizer(spectrum_lr=spectrum_lr, head_lr=1e-2, total_steps=6, warmup_ratio=0.0)
    opt_state = optimizer.init(trainable)
    step = make_train_step(apply_fn, classification_loss, optimizer)
    evaluate = make_eval_step(apply_fn, classification_loss)
    first = float(evaluate(trainable, frozen, batch)["loss"])
    for i in range(6):
        trainable, opt_state, _ = step(trainable, opt_state, frozen, batch, jax.random.key(i))
    last = float(evaluate(trainable, frozen, batch)["loss"])
    assert last < 0.85 * first
    chex.assert_trees_all_equal(frozen, frozen_before)
