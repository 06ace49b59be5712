"""The README's usage examples run as written, in order, in a scratch directory; their outputs agree."""

import os
import re
from pathlib import Path

import numpy as np

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_examples_run(capsys, tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) == 5, "README.md should hold the PEFT-verbs, functional-core, NNX, LLM and bank examples"
    monkeypatch.chdir(tmp_path)  # the examples write sst2_adapter/ and peft_dir/
    namespace: dict = {}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert "trainable params: 12,770" in capsys.readouterr().out
    assert sorted(os.listdir("sst2_adapter")) == ["adapter_config.json", "adapter_model.safetensors"]
    peft_model, batch = namespace["peft_model"], namespace["batch"]
    trained = peft_model(batch["input_ids"], batch["attention_mask"]).logits
    merged = namespace["merged_model"](batch["input_ids"], batch["attention_mask"]).logits
    np.testing.assert_allclose(trained, merged, rtol=1e-4, atol=1e-5)
    assert np.abs(np.asarray(trained) - np.asarray(namespace["base_logits"])).max() > 1e-4
    functional = namespace["out"]
    core_merged = namespace["model"](batch["input_ids"], batch["attention_mask"], params=namespace["merged"]).logits
    np.testing.assert_allclose(functional, core_merged, rtol=1e-4, atol=1e-5)
    from fourier_flax import nnx as ffnnx

    bert = namespace["bert"]
    assert sorted(ffnnx.adapted_layers(bert)) == [
        f"encoder.layer.{i}.attention.self.{m}" for i in range(6) for m in ("query", "value")
    ]
    assert all(layer.merged for layer in ffnnx.adapted_layers(bert).values())
    assert sorted(os.listdir("nnx_peft_dir")) == ["adapter_config.json", "adapter_model.safetensors"]
    lm = namespace["trainer"].model  # the LLM example trained its adapter and decoded with it
    assert sorted(ffnnx.adapted_layers(lm))[:2] == [
        "model.layers.0.self_attn.q_proj",
        "model.layers.0.self_attn.v_proj",
    ]
    assert np.isfinite(namespace["lm_loss"]) and namespace["new_tokens"].shape == (1, 24)
    served, requests, replies = namespace["served"], namespace["requests"], namespace["replies"]
    assert replies.shape == (3, 8)
    import fourier_flax as ff
    from fourier_flax.models import llama, smollm2_path

    plain = llama.from_gguf(smollm2_path(), quantized=True, num_hidden_layers=2)  # request 2 ran the base alone
    np.testing.assert_array_equal(replies[2], ff.generate(plain, requests[2:3], max_new_tokens=8, eos_token_id=2)[0])
    assert sorted(ffnnx.adapted_layers(served))[0] == "model.layers.0.self_attn.q_proj"
