"""PEFT interop against the real thing: FourierFT adapters saved by Hugging Face PEFT (PyTorch, real MiniLM-L6
weights, 2 layers) run in our Flax twin with the same outputs, and ours load into PEFT. The error tests and a
file-level round trip run on a tiny params tree without torch."""

import copy
import json
import pathlib
import warnings

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import safetensors.numpy
from flax import traverse_util

from fourier_flax import export_peft, import_peft, init_adapter, intercept, merge_adapter
from fourier_flax.checkpoint import AdapterMismatchError
from fourier_flax.methods.fourierft import FourierFTConfig

BOOKKEEPING = {"auto_mapping", "base_model_name_or_path", "peft_version", "revision", "task_type"}


def rel_err(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(0)
    ids = rng.integers(1000, 30000, size=(2, 12))
    ids[:, 0], ids[0, 8:] = 101, 0
    return ids, (ids != 0).astype(np.int64)


def torch_forward(model, inputs):
    import torch

    ids, mask = inputs
    with torch.no_grad():
        out = model(input_ids=torch.tensor(ids), attention_mask=torch.tensor(mask))
    return (out.logits if hasattr(out, "logits") else out.last_hidden_state).numpy()


def flax_forward(model, params, inputs):
    ids, mask = inputs
    out = model(ids.astype(np.int32), attention_mask=mask.astype(np.int32), params=params)
    return np.asarray(out.logits if hasattr(out, "logits") else out.last_hidden_state)


def peft_wrap(torch_model, **fields):
    """A PEFT FourierFT model on a copy of ``torch_model`` with N(0, 1) spectra (init_weights=False)."""
    import peft
    import torch

    torch.manual_seed(0)
    config = peft.FourierFTConfig(init_weights=False, **fields)
    return peft.get_peft_model(copy.deepcopy(torch_model), config).eval()


def peft_load(torch_model, adapter_dir):
    import peft

    return peft.PeftModel.from_pretrained(copy.deepcopy(torch_model), str(adapter_dir)).eval()


@pytest.fixture(scope="module")
def classifier_twins(minilm2, minilm2_torch):
    """``(FlaxBertForSequenceClassification, its base params, BertForSequenceClassification)``, 3 labels, built
    from the 2-layer MiniLM twins; the two heads are independent random inits (the adapter carries the head)."""
    import torch
    import transformers

    model, params = minilm2
    config = copy.deepcopy(model.config)
    config.num_labels = 3
    flax_model = transformers.FlaxBertForSequenceClassification(config, _do_init=False)
    head = {"kernel": jnp.zeros((config.hidden_size, 3)), "bias": jnp.zeros((3,))}
    torch_config = copy.deepcopy(minilm2_torch.config)
    torch_config.num_labels = 3
    torch.manual_seed(1)
    torch_model = transformers.BertForSequenceClassification(torch_config).eval()
    torch_model.bert.load_state_dict(minilm2_torch.state_dict())
    return flax_model, {"bert": params, "classifier": head}, torch_model


# --- PEFT -> fourier_flax -------------------------------------------------------------------------------------


@pytest.mark.torch
def test_peft_adapter_runs_in_flax_with_pytorch_outputs(tmp_path, minilm2, minilm2_torch, inputs):
    """Square query/value 384x384 and non-square intermediate.dense 384->1536, per-module n, seed, scaling."""
    model, base = minilm2
    reference = peft_wrap(
        minilm2_torch,
        target_modules=["query", "value", "intermediate.dense"],
        n_frequency=300,
        n_frequency_pattern={"intermediate.dense": 500},
        scaling=123.0,
        random_loc_seed=2024,
    )
    reference.save_pretrained(tmp_path)
    config, params = import_peft(tmp_path, base)

    expected = torch_forward(reference, inputs)
    assert rel_err(flax_forward(model, base, inputs), expected) > 1e-2  # the adapter matters
    with intercept(config):
        assert rel_err(flax_forward(model, params, inputs), expected) <= 1e-4
    assert rel_err(flax_forward(model, merge_adapter(params, config), inputs), expected) <= 1e-4
    assert config.n_frequency_for("encoder.layer.1.intermediate.dense") == 500
    assert (config.scaling, config.random_loc_seed, config.entry_sampling) == (123.0, 2024, "peft")
    spectrum = params["encoder"]["layer"]["1"]["intermediate"]["dense"]["fourierft_spectrum"]
    torch_spectrum = reference.base_model.model.encoder.layer[1].intermediate.dense.fourierft_spectrum["default"]
    np.testing.assert_array_equal(np.asarray(spectrum), torch_spectrum.detach().numpy())


@pytest.mark.torch
def test_peft_classifier_with_head_and_biases_round_trips(tmp_path, classifier_twins, inputs):
    """PEFT -> import -> export -> PEFT: same logits at every stop, and our files are PEFT's files."""
    flax_model, base, torch_model = classifier_twins
    reference = peft_wrap(
        torch_model,
        target_modules=["query", "output.dense"],  # attention.output.dense 384x384, output.dense 1536->384
        n_frequency=200,
        scaling=150.0,
        random_loc_seed=7,
        modules_to_save=["classifier"],
        bias="fourier_only",
    )
    with_trained_parts = reference.base_model.model
    import torch

    with torch.no_grad():  # as if trained: the head and the adapted layers' biases move
        for name, parameter in with_trained_parts.named_parameters():
            if "modules_to_save" in name or ("base_layer.bias" in name):
                parameter.add_(torch.randn_like(parameter) * 0.5)
    reference.save_pretrained(tmp_path / "peft")
    expected = torch_forward(reference, inputs)

    config, params = import_peft(tmp_path / "peft", base)
    assert config.modules_to_save == ("classifier",) and config.bias == "fourier_only"
    with intercept(config):
        assert rel_err(flax_forward(flax_model, params, inputs), expected) <= 1e-4

    export_peft(params, config, tmp_path / "ours")
    assert rel_err(torch_forward(peft_load(torch_model, tmp_path / "ours"), inputs), expected) <= 1e-4
    theirs = safetensors.numpy.load_file(tmp_path / "peft" / "adapter_model.safetensors")
    ours = safetensors.numpy.load_file(tmp_path / "ours" / "adapter_model.safetensors")
    assert ours.keys() == theirs.keys()
    for key in theirs:
        np.testing.assert_array_equal(ours[key], theirs[key], err_msg=key)
    peft_json = json.loads((tmp_path / "peft" / "adapter_config.json").read_text())
    our_json = json.loads((tmp_path / "ours" / "adapter_config.json").read_text())
    assert comparable(our_json) == comparable(peft_json)


def comparable(adapter_config: dict) -> dict:
    """adapter_config.json without bookkeeping; PEFT writes target_modules from a set, in any order."""
    fields = {k: v for k, v in adapter_config.items() if k not in BOOKKEEPING}
    return {**fields, "target_modules": sorted(fields["target_modules"])}


@pytest.mark.torch
def test_module_map_and_explicit_targets(tmp_path, classifier_twins, minilm2, inputs):
    """An adapter of BertForSequenceClassification (keys ``bert.encoder...``, a regex target that only fits those
    keys) loads into FlaxBertModel with module_map={"bert": ""}; the config then names the modules explicitly."""
    _, _, torch_model = classifier_twins
    model, base = minilm2
    reference = peft_wrap(
        torch_model,
        target_modules=r"bert\.encoder\.layer\.\d\.attention\.self\.(query|value)",
        n_frequency=100,
        n_frequency_pattern={"value": 60},
        scaling=90.0,
    )
    reference.save_pretrained(tmp_path)
    config, params = import_peft(tmp_path, base, module_map={"bert": ""})
    assert config.target_modules == tuple(
        f"encoder.layer.{i}.attention.self.{m}" for i in range(2) for m in ("query", "value")
    )
    assert config.n_frequency_for("encoder.layer.1.attention.self.value") == 60
    expected = torch_forward(reference.base_model.model.bert, inputs)
    with intercept(config):
        assert rel_err(flax_forward(model, params, inputs), expected) <= 1e-4


@pytest.mark.torch
def test_gpt2_conv1d_adapter_both_ways(tmp_path):
    """GPT-2's Conv1D (fan_in_fan_out=True): PyTorch weight (in, out), Flax FlaxConv1D kernel (out, in)."""
    import peft
    import torch
    import transformers
    from transformers.modeling_flax_pytorch_utils import load_flax_weights_in_pytorch_model

    from fourier_flax.models.hf import dummy_inputs, tiny_model

    model, base = tiny_model("gpt2")
    with warnings.catch_warnings():  # transformers' converter trips torch's non-writable-NumPy warning
        warnings.simplefilter("ignore", UserWarning)
        torch_model = load_flax_weights_in_pytorch_model(transformers.GPT2Model(model.config), base).eval()
    feed = dummy_inputs(model)
    torch_inputs = {k: torch.tensor(np.asarray(v), dtype=torch.long) for k, v in feed.items()}
    torch.manual_seed(0)
    fields = {"target_modules": ["c_attn", "c_fc"], "n_frequency": 100, "scaling": 300.0, "random_loc_seed": 5}
    reference = peft.get_peft_model(
        copy.deepcopy(torch_model), peft.FourierFTConfig(fan_in_fan_out=True, init_weights=False, **fields)
    ).eval()
    reference.save_pretrained(tmp_path / "peft")
    with torch.no_grad():
        expected = reference(**torch_inputs).last_hidden_state.numpy()

    config, params = import_peft(tmp_path / "peft", base)
    assert config.fan_in_fan_out
    forward = jax.jit(lambda params: model(**feed, params=params).last_hidden_state)  # retraced under intercept
    with intercept(config):
        assert rel_err(forward(params), expected) <= 1e-4
    assert rel_err(forward(base), expected) > 1e-2

    export_peft(params, config, tmp_path / "ours")
    with torch.no_grad():
        loaded = peft_load(torch_model, tmp_path / "ours")(**torch_inputs).last_hidden_state.numpy()
    assert rel_err(loaded, expected) <= 1e-4

    edit_config(tmp_path / "peft", fan_in_fan_out=False)
    with pytest.raises(AdapterMismatchError, match=r"fan_in_fan_out=False .* is stored \(out, in\) like GPT-2's"):
        import_peft(tmp_path / "peft", base)


# --- fourier_flax -> PEFT -------------------------------------------------------------------------------------


@pytest.mark.torch
def test_our_adapter_loads_in_peft_with_our_outputs(tmp_path, minilm2, minilm2_torch, inputs):
    model, base = minilm2
    config = FourierFTConfig(
        target_modules=["key", "intermediate.dense"],
        n_frequency=250,
        n_frequency_pattern={"key": 150},
        scaling=80.0,
        random_loc_seed=31337,
        bias="fourier_only",
    )
    params = init_adapter(base, config, jax.random.key(0))
    flat = traverse_util.flatten_dict(params)
    rng = np.random.default_rng(0)
    for key in [k for k in flat if k[-1] == "bias" and k[-3:-1] in {("self", "key"), ("intermediate", "dense")}]:
        flat[key] = flat[key] + jnp.asarray(rng.standard_normal(flat[key].shape), jnp.float32)  # "trained" biases
    params = traverse_util.unflatten_dict(flat)
    with intercept(config):
        expected = flax_forward(model, params, inputs)
    assert rel_err(flax_forward(model, base, inputs), expected) > 1e-2

    export_peft(params, config, tmp_path)
    loaded = peft_load(minilm2_torch, tmp_path)
    assert rel_err(torch_forward(loaded, inputs), expected) <= 1e-4
    layer = loaded.base_model.model.encoder.layer[0].attention.self.key
    assert layer.fourierft_n_frequency["default"] == 150 and layer.fourierft_random_loc_seed["default"] == 31337


# --- without torch: file round trip and errors ----------------------------------------------------------------


def dense(rng, d_in, d_out):
    return {"kernel": jnp.asarray(rng.standard_normal((d_in, d_out)), jnp.float32), "bias": jnp.zeros((d_out,))}


def tiny_base() -> dict:
    rng = np.random.default_rng(0)
    layer = {"query": dense(rng, 4, 4), "value": dense(rng, 4, 4), "up": dense(rng, 4, 8)}
    return {"encoder": {"layer": {"0": layer, "1": copy.deepcopy(layer)}}, "classifier": dense(rng, 4, 3)}


TINY = FourierFTConfig(
    target_modules=["query", "up"],
    n_frequency=5,
    n_frequency_pattern={"up": 9},
    scaling=10.0,
    random_loc_seed=3,
    modules_to_save=["classifier"],
    bias="all",
)


@pytest.fixture
def exported(tmp_path, strict_jax) -> tuple[pathlib.Path, dict]:
    params = init_adapter(tiny_base(), TINY, jax.random.key(0))
    export_peft(params, TINY, tmp_path / "peft")
    return tmp_path / "peft", params


def edit_config(adapter_dir: pathlib.Path, **changes) -> None:
    path = adapter_dir / "adapter_config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


def test_export_then_import_is_bit_exact(exported):
    adapter_dir, params = exported
    config, imported = import_peft(adapter_dir, tiny_base())
    assert config == TINY
    chex.assert_trees_all_equal(imported, params, strict=True)


def test_export_writes_peft_names_and_torch_layouts(exported):
    adapter_dir, params = exported
    tensors = safetensors.numpy.load_file(adapter_dir / "adapter_model.safetensors")
    prefix = "base_model.model."
    assert tensors[prefix + "encoder.layer.1.up.fourierft_spectrum"].shape == (9,)
    assert prefix + "encoder.layer.1.up.base_layer.bias" in tensors  # an adapted layer's bias
    assert prefix + "encoder.layer.1.value.bias" in tensors  # bias="all": every bias
    np.testing.assert_array_equal(tensors[prefix + "classifier.weight"], np.asarray(params["classifier"]["kernel"]).T)
    assert all(v.dtype == np.float32 for v in tensors.values())
    assert json.loads((adapter_dir / "adapter_config.json").read_text())["peft_type"] == "FOURIERFT"


def test_export_names_modules_explicitly_when_patterns_would_not_match(tmp_path, strict_jax):
    config = FourierFTConfig(target_modules=r"encoder\.layer\.0\.query", n_frequency=5)
    params = init_adapter(tiny_base(), config, jax.random.key(0))
    export_peft(params, config, tmp_path, module_prefix="base_model.model.bert.")
    written = json.loads((tmp_path / "adapter_config.json").read_text())
    assert written["target_modules"] == ["bert.encoder.layer.0.query"]


def test_export_refuses_non_peft_entries(tmp_path, strict_jax):
    config = FourierFTConfig(target_modules=["query"], n_frequency=5, entry_sampling="uniform")
    params = init_adapter(tiny_base(), config, jax.random.key(0))
    with pytest.raises(ValueError, match="entry_sampling='uniform' has other entries, which PEFT's FourierFT cannot"):
        export_peft(params, config, tmp_path)


def test_export_refuses_methods_peft_lacks(tmp_path, strict_jax):
    from fourier_flax import FloraConfig

    config = FloraConfig(target_modules=["query"], r=2)
    with pytest.raises(ValueError, match="Hugging Face PEFT has no flora. Keep it in fourier_flax's own format"):
        export_peft(init_adapter(tiny_base(), config, jax.random.key(0)), config, tmp_path)


def test_export_refuses_stacked_spectra(tmp_path, strict_jax):
    tree = {"stack": {"query": {"kernel": jnp.zeros((3, 4, 4))}}}
    config = FourierFTConfig(target_modules=["query"], n_frequency=5)
    params = init_adapter(tree, config, jax.random.key(0), stacked_axes={"stack": 1})
    with pytest.raises(ValueError, match=r"stacked spectrum of shape \(3, 5\).*no PEFT equivalent"):
        export_peft(params, config, tmp_path)


def test_export_refuses_a_prefix_peft_cannot_load(tmp_path, strict_jax):
    params = init_adapter(tiny_base(), TINY, jax.random.key(0))
    with pytest.raises(ValueError, match="module_prefix must start with 'base_model.model.'"):
        export_peft(params, TINY, tmp_path, module_prefix="model.")


def test_import_refuses_other_peft_types(exported):
    edit_config(exported[0], peft_type="ADALORA")
    with pytest.raises(ValueError, match=r"holds a PEFT 'ADALORA' adapter; fourier_flax reads \['FOURIERFT', 'LORA'"):
        import_peft(exported[0], tiny_base())


def test_import_refuses_unsupported_options(exported):
    edit_config(exported[0], layer_replication=None, alpha_pattern={})  # unset options of newer PEFT: fine
    assert import_peft(exported[0], tiny_base())[0] == TINY
    edit_config(exported[0], use_dora=True)
    with pytest.raises(ValueError, match=r"sets PEFT options fourier_flax does not implement: \{'use_dora': True\}"):
        import_peft(exported[0], tiny_base())


def test_import_refuses_spectrum_length_mismatch(exported):
    edit_config(exported[0], n_frequency=6)
    with pytest.raises(AdapterMismatchError) as error:
        import_peft(exported[0], tiny_base())
    assert (
        "base_model.model.encoder.layer.0.query.fourierft_spectrum: 5 coefficients, but n_frequency for "
        "encoder.layer.0.query is 6" in error.value.mismatches[0]
    )


def test_import_lists_existing_modules_when_one_is_missing(exported):
    base = tiny_base()
    del base["encoder"]["layer"]["1"]
    with pytest.raises(AdapterMismatchError, match="module 'encoder.layer.1.query' is not in the base params") as error:
        import_peft(exported[0], base)
    assert "modules with a kernel in the base params:\n  classifier\n  encoder.layer.0.query" in str(error.value)


def test_import_refuses_fan_in_fan_out_contradicting_the_kernel_layout(exported):
    edit_config(exported[0], fan_in_fan_out=True)
    with pytest.raises(AdapterMismatchError, match=r"fan_in_fan_out=True .* \(4, 8\) with bias \(8,\) is stored \(in"):
        import_peft(exported[0], tiny_base())


def test_import_refuses_head_shape_mismatch(exported):
    base = tiny_base()
    base["classifier"] = dense(np.random.default_rng(0), 4, 2)
    with pytest.raises(
        AdapterMismatchError, match=r"classifier.weight: shape \(3, 4\) gives classifier.kernel \(4, 3\)"
    ):
        import_peft(exported[0], base)


def test_import_needs_both_files(exported):
    (exported[0] / "adapter_model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match=r"no \['adapter_model.safetensors'\]"):
        import_peft(exported[0], tiny_base())


def test_import_refuses_keys_outside_a_peft_model(exported):
    path = exported[0] / "adapter_model.safetensors"
    tensors = safetensors.numpy.load_file(path)
    safetensors.numpy.save_file({k.replace("base_model.model.", ""): v for k, v in tensors.items()}, path)
    with pytest.raises(ValueError, match="does not start with 'base_model.model.'; this is not a PeftModel"):
        import_peft(exported[0], tiny_base())
