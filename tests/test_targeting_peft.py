"""Our targeting rules against real PEFT 0.21's check_target_module_exists, path by path."""

import itertools

import pytest

from fourier_flax import FourierFTConfig, LoraConfig

peft_tuners = pytest.importorskip("peft.tuners.tuners_utils")
peft = pytest.importorskip("peft")

PATHS = [
    "encoder.layer.0.attention.self.query",
    "encoder.layer.0.attention.self.value",
    "encoder.layer.1.attention.self.query",
    "encoder.layer.11.attention.output.dense",
    "encoder.layer.1.intermediate.dense",
    "bert.encoder.layer.2.attention.self.query",
    "classifier.dense",
    "classifier.out_proj",
    "classifier",
    "pooler.dense",
    "h.0.attn.c_attn",
    "h.1.attn.c_attn",
    "h.1.mlp.c_proj",
    "transformer.h.1.attn.c_attn",
    "model.layers.3.mlp.experts.0.up_proj",
    "query",
]
CONFIGS = [
    {"target_modules": ["query", "value"]},
    {"target_modules": ["dense"]},
    {"target_modules": ["dense"], "modules_to_save": ["classifier"]},
    {"target_modules": ["dense", "out_proj"], "modules_to_save": ["classifier"]},
    {"target_modules": ["query"], "exclude_modules": ["bert.encoder.layer.2.attention.self.query"]},
    {"target_modules": r".*\.layer\.[01]\..*query"},
    {"target_modules": ["c_attn", "c_proj"], "layers_to_transform": [1]},
    {"target_modules": ["c_attn"], "layers_to_transform": [1], "layers_pattern": "h"},
    {"target_modules": ["query", "dense"], "layers_to_transform": [0, 1]},
    {"target_modules": ["query"], "layers_to_transform": 1, "layers_pattern": ["layer", "h"]},
    {"target_modules": ["up_proj"], "layers_to_transform": [3]},
    {"target_modules": ["encoder.layer.1.attention.self.query", "value"], "layers_to_transform": [0]},
]


@pytest.mark.torch
@pytest.mark.parametrize(("fields", "path"), list(itertools.product(CONFIGS, PATHS)))
def test_is_targeted_equals_peft(fields, path):
    ours = FourierFTConfig(**fields).is_targeted(path)
    theirs = peft_tuners.check_target_module_exists(peft.FourierFTConfig(**fields), path)
    theirs = bool(theirs) and not isinstance(theirs, peft_tuners._ExcludedModule)
    assert ours == theirs
    assert LoraConfig(**fields).is_targeted(path) == theirs
