"""PEFT's edge rules, each against real PEFT 0.21 where PEFT is involved: modules_to_save vs targets, GPT-2's
Conv1D flag, missing and unexpected keys, layer patterns, AutoPeftModel bookkeeping, and killed exports."""

import copy
import json
import os
import signal
import subprocess
import sys
import textwrap
import warnings

import jax
import numpy as np
import pytest
import safetensors.numpy
from flax import traverse_util

import fourier_flax as ff
from fourier_flax import FourierFTConfig, export_peft, import_peft, init_adapter, intercept
from fourier_flax.checkpoint import AdapterMismatchError

pytestmark = pytest.mark.torch


def rel_err(actual, expected) -> float:
    actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
    return float(np.abs(actual - expected).max() / np.abs(expected).max())


def torch_twin(flax_model, torch_class):
    import transformers
    from transformers.modeling_flax_pytorch_utils import load_flax_weights_in_pytorch_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return load_flax_weights_in_pytorch_model(
            getattr(transformers, torch_class)(flax_model.config), flax_model.params
        ).eval()


@pytest.fixture(scope="module")
def roberta_classifier():
    """Tiny random FlaxRobertaForSequenceClassification (its head has classifier.dense) and its torch twin."""
    import transformers

    from fourier_flax.models.hf import TINY_CONFIGS

    config = transformers.RobertaConfig(**TINY_CONFIGS["roberta"], num_labels=3)
    model = transformers.FlaxRobertaForSequenceClassification(config, seed=0)
    return model, torch_twin(model, "RobertaForSequenceClassification")


def ids(vocab=128, batch=2, length=9):
    return np.random.default_rng(1).integers(3, vocab, (batch, length))


def torch_logits(model, inputs):
    import torch

    with torch.no_grad():
        out = model(input_ids=torch.tensor(inputs))
    return (out.logits if hasattr(out, "logits") else out.last_hidden_state).numpy()


def test_modules_to_save_is_never_adapted_and_loads_in_peft(tmp_path, roberta_classifier):
    """target_modules=["dense"] + modules_to_save=["classifier"]: classifier.dense trains in full, as PEFT."""
    import peft

    model, torch_model = roberta_classifier
    config = FourierFTConfig(target_modules=["dense"], modules_to_save=["classifier"], n_frequency=40, scaling=50.0)
    params = init_adapter(model.params, config, jax.random.key(0))
    ours = set(ff.adapter_module_paths(params))
    assert ours and not any(p.startswith("classifier") for p in ours)
    reference = peft.get_peft_model(
        copy.deepcopy(torch_model),
        peft.FourierFTConfig(
            **{"target_modules": ["dense"], "modules_to_save": ["classifier"], "n_frequency": 40, "init_weights": False}
        ),
    )
    theirs = {
        name.removeprefix("base_model.model.")
        for name, m in reference.named_modules()
        if hasattr(m, "fourierft_spectrum")
    }
    assert ours == theirs
    flat = traverse_util.flatten_dict(params)  # "train" the head so that it matters
    for key in [k for k in flat if k[0] == "classifier"]:
        flat[key] = flat[key] + 0.05
    params = traverse_util.unflatten_dict(flat)
    with intercept(config):
        expected = np.asarray(model(ids(), params=params).logits)
    export_peft(params, config, tmp_path)
    loaded = peft.PeftModel.from_pretrained(copy.deepcopy(torch_model), str(tmp_path)).eval()
    assert rel_err(torch_logits(loaded, ids()), expected) <= 1e-4


def test_gpt2_conv1d_flag(tmp_path):
    """Without fan_in_fan_out the functional core refuses; get_peft_model sets it with a warning, as PEFT,
    and its adapter loads in PEFT with the same outputs."""
    import peft

    from fourier_flax.models.hf import tiny_model

    model, base = tiny_model("gpt2")
    config = FourierFTConfig(target_modules=["c_attn", "c_fc"], n_frequency=50, scaling=200.0)
    with pytest.raises(ValueError, match=r"stored \(out, in\), like GPT-2's FlaxConv1D.*Set fan_in_fan_out=True"):
        init_adapter(base, config, jax.random.key(0))
    with pytest.warns(UserWarning, match="Setting fan_in_fan_out to True"):
        peft_model = ff.get_peft_model(model, config, jax.random.key(0))
    assert peft_model.peft_config["default"].fan_in_fan_out
    adapted = peft_model.params
    for _path in ff.adapter_module_paths(adapted):
        with pytest.raises(ValueError, match="fan_in_fan_out=True"):
            ff.merge_adapter(adapted, config)
        break
    expected = np.asarray(peft_model(ids()).last_hidden_state)
    np.testing.assert_allclose(np.asarray(peft_model.merge_and_unload()(ids()).last_hidden_state), expected, atol=2e-5)
    peft_model.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "adapter_config.json").read_text())
    assert written["fan_in_fan_out"] is True and written["auto_mapping"]["base_model_class"] == "GPT2Model"
    torch_model = torch_twin(model, "GPT2Model")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = peft.PeftModel.from_pretrained(copy.deepcopy(torch_model), str(tmp_path)).eval()
    assert rel_err(torch_logits(loaded, ids()), expected) <= 1e-4
    assert rel_err(torch_logits(torch_model, ids()), expected) > 1e-3


def test_layers_to_transform_without_pattern_matches_nothing_on_gpt2():
    """PEFT needs a component before the layer list; GPT2Model's paths h.1.attn.c_attn have none."""
    import peft

    from fourier_flax.models.hf import tiny_model

    model, base = tiny_model("gpt2")
    config = FourierFTConfig(target_modules=["c_attn"], layers_to_transform=[1], fan_in_fan_out=True, n_frequency=10)
    with pytest.raises(ValueError, match="matches none"):
        init_adapter(base, config, jax.random.key(0))
    with pytest.raises(ValueError, match="not found in the base model|No modules were targeted"):
        peft.get_peft_model(
            torch_twin(model, "GPT2Model"),
            peft.FourierFTConfig(
                target_modules=["c_attn"], layers_to_transform=[1], fan_in_fan_out=True, n_frequency=10
            ),
        )
    patterned = FourierFTConfig(
        target_modules=["c_attn"], layers_to_transform=[1], layers_pattern="h", fan_in_fan_out=True, n_frequency=10
    )
    assert ff.adapter_module_paths(init_adapter(base, patterned, jax.random.key(0))) == ["h.1.attn.c_attn"]


@pytest.fixture
def peft_saved(tmp_path, minilm2_torch):
    """A real PEFT FourierFT adapter on the 2-layer MiniLM (query and value), and its model."""
    import peft
    import torch

    torch.manual_seed(0)
    reference = peft.get_peft_model(
        copy.deepcopy(minilm2_torch),
        peft.FourierFTConfig(target_modules=["query", "value"], n_frequency=120, scaling=90.0, init_weights=False),
    ).eval()
    reference.save_pretrained(tmp_path / "peft")
    return tmp_path / "peft", reference


def test_missing_keys_are_refused_or_random_as_peft(peft_saved, minilm2, minilm2_torch):
    import peft

    adapter_dir, _ = peft_saved
    path = adapter_dir / "adapter_model.safetensors"
    tensors = safetensors.numpy.load_file(path)
    dropped = "base_model.model.encoder.layer.1.attention.self.value.fourierft_spectrum"
    del tensors[dropped]
    safetensors.numpy.save_file(tensors, path, metadata={"format": "pt"})
    with pytest.warns(UserWarning, match="Found missing adapter keys"):  # PEFT itself
        peft.PeftModel.from_pretrained(copy.deepcopy(minilm2_torch), str(adapter_dir))
    _, base = minilm2
    with pytest.raises(
        AdapterMismatchError, match=r"have no spectrum in the file.*encoder.layer.1.attention.self.value"
    ):
        import_peft(adapter_dir, base)
    with pytest.warns(UserWarning, match="Found missing adapter keys"):
        config, params = import_peft(adapter_dir, base, on_missing="random", rng=jax.random.key(0))
    assert set(config.target_modules) == {"query", "value"}  # not rewritten to hide the gap
    assert len(ff.adapter_module_paths(params)) == 4


def test_untargeted_spectra_are_ignored_and_outputs_equal_peft(peft_saved, minilm2, minilm2_torch):
    """A config naming fewer modules than the file holds: PEFT ignores the rest; so do we (with a warning)."""
    import peft

    adapter_dir, _ = peft_saved
    config_path = adapter_dir / "adapter_config.json"
    written = json.loads(config_path.read_text())
    config_path.write_text(json.dumps({**written, "target_modules": ["query"]}))
    model, base = minilm2
    with pytest.warns(UserWarning, match="ignored 2 adapter tensors"):
        config, params = import_peft(adapter_dir, base)
    assert ff.adapter_module_paths(params) == [f"encoder.layer.{i}.attention.self.query" for i in (0, 1)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = peft.PeftModel.from_pretrained(copy.deepcopy(minilm2_torch), str(adapter_dir)).eval()
    with intercept(config):
        ours = np.asarray(model(ids(30000), params=params).last_hidden_state)
    assert rel_err(ours, torch_logits(loaded, ids(30000))) <= 1e-4
    config_path.write_text(json.dumps({**written, "target_modules": ["key"]}))
    with (
        pytest.raises(AdapterMismatchError, match="holds no fourierft_spectrum for any module its config targets"),
        pytest.warns(UserWarning),
    ):
        import_peft(adapter_dir, base)


def test_exports_carry_what_autopeftmodel_needs(tmp_path):
    """save_pretrained of a FlaxBertForSequenceClassification: AutoPeftModelForSequenceClassification loads it
    with nothing else given, and computes our logits."""
    import peft

    from fourier_flax.models.hf import load_minilm

    model, _ = load_minilm(num_labels=2)
    config = FourierFTConfig(
        target_modules=["query", "value"], modules_to_save=["classifier"], n_frequency=100, scaling=40.0
    )
    peft_model = ff.get_peft_model(model, config, jax.random.key(0))
    peft_model.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "adapter_config.json").read_text())
    assert written["task_type"] == "SEQ_CLS" and written["base_model_name_or_path"] and written["peft_version"]
    inputs = ids(30000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loaded = peft.AutoPeftModelForSequenceClassification.from_pretrained(str(tmp_path)).eval()
    expected = np.asarray(peft_model(inputs).logits)
    assert rel_err(torch_logits(loaded, inputs), expected) <= 1e-4
    with pytest.raises(ValueError, match="task_type must be one of"):
        export_peft(peft_model.params, config, tmp_path / "bad", task_type="CLASSIFY")


KILLER = textwrap.dedent(
    """
    import os, signal, sys, jax, numpy as np, safetensors.numpy
    from fourier_flax import FourierFTConfig, export_peft, init_adapter
    rng = np.random.default_rng(0)
    base = {m: {"kernel": rng.standard_normal((16, 24)).astype(np.float32)} for m in ("query", "value")}
    config = FourierFTConfig(target_modules=["query", "value"], n_frequency=20, scaling=float(sys.argv[2]))
    params = init_adapter(base, config, jax.random.key(int(sys.argv[2])))
    if sys.argv[3] == "after_weights":
        original = safetensors.numpy.save_file
        def save_then_die(*args, **kwargs):
            original(*args, **kwargs)
            os.kill(os.getpid(), signal.SIGKILL)
        safetensors.numpy.save_file = save_then_die
    elif sys.argv[3] == "before_swap":
        import fourier_flax.atomic_dir as atomic_dir
        atomic_dir._exchange = lambda a, b: os.kill(os.getpid(), signal.SIGKILL)
    export_peft(params, config, sys.argv[1])
    """
)


@pytest.mark.parametrize("kill_at", ["after_weights", "before_swap"])
def test_killed_export_leaves_the_previous_adapter_whole(tmp_path, kill_at):
    import peft

    script = tmp_path / "export.py"
    script.write_text(KILLER)
    target = tmp_path / "adapter"
    env = {**os.environ, "JAX_PLATFORMS": "cpu"}
    subprocess.run([sys.executable, str(script), str(target), "10", "none"], check=True, env=env)
    before = {p.name: p.read_bytes() for p in target.iterdir()}
    done = subprocess.run([sys.executable, str(script), str(target), "30", kill_at], env=env)
    assert done.returncode == -signal.SIGKILL
    assert {p.name: p.read_bytes() for p in target.iterdir()} == before  # the old export, both files
    assert peft.PeftConfig.from_pretrained(str(target)).scaling == 10.0
    assert list(tmp_path.glob(".adapter.tmp-*"))  # the killed writer's staging directory ...
    subprocess.run([sys.executable, str(script), str(target), "30", "none"], check=True, env=env)
    assert not list(tmp_path.glob(".adapter.*"))  # ... is removed by the next export
    assert json.loads((target / "adapter_config.json").read_text())["scaling"] == 30.0


def test_cli_errors_are_one_line_with_the_fix(tmp_path, capsys):
    from fourier_flax.cli import main

    assert main(["inspect", str(tmp_path / "nowhere")]) == 1
    assert "no such file or directory" in capsys.readouterr().err
    rng = np.random.default_rng(0)
    base = {m: {"kernel": rng.standard_normal((16, 24)).astype(np.float32)} for m in ("query", "value")}
    config = FourierFTConfig(target_modules=["query", "value"], n_frequency=20, scaling=10.0)
    export_peft(init_adapter(base, config, jax.random.key(0)), config, tmp_path / "adapter")
    weights = tmp_path / "adapter" / "adapter_model.safetensors"
    weights.write_bytes(weights.read_bytes()[:50])
    assert main(["inspect", str(tmp_path / "adapter")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "not a readable safetensors file" in err and "export or save it again" in err
