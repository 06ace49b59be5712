"""Counting logic of ``experiments/paper/table1_params.py`` (the paper's Table 1) on small and real configs."""

from __future__ import annotations

from fractions import Fraction

import jax
import pytest
from experiment_scripts import load_experiment
from transformers import FlaxGPT2Model, FlaxLlamaModel, FlaxRobertaModel, GPT2Config, LlamaConfig, RobertaConfig

t1 = load_experiment("table1_params")


def tiny_roberta(layers: int = 2, hidden: int = 32) -> RobertaConfig:
    return RobertaConfig(
        vocab_size=64,
        hidden_size=hidden,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden,
        max_position_embeddings=40,
        type_vocab_size=1,
    )


def test_tiny_roberta_matches_closed_form():
    layers, hidden, r, n = 3, 32, 4, 10
    shapes = t1.abstract_param_shapes(FlaxRobertaModel, tiny_roberta(layers, hidden), add_pooling_layer=False)
    matrices = t1.adapted_matrices(shapes, ("query", "value"))
    assert [m.path for m in matrices] == [
        f"encoder.layer.{i}.attention.self.{name}" for i in range(layers) for name in ("query", "value")
    ]
    assert all((m.d_in, m.d_out) == (hidden, hidden) for m in matrices)
    # LoRA on q and v: per block 2 matrices x r x (d_in + d_out); FourierFT: n per adapted matrix.
    assert t1.lora_param_count(matrices, r) == layers * 2 * r * (hidden + hidden) == 1536
    assert t1.fourierft_param_count(matrices, n) == layers * 2 * n == 60
    assert t1.storage_bytes(60) == 240


def test_tiny_gpt2_fused_c_attn_is_split_into_q_and_v():
    layers, d, r, n = 2, 16, 2, 7
    config = GPT2Config(vocab_size=64, n_positions=32, n_embd=d, n_layer=layers, n_head=2)
    shapes = t1.abstract_param_shapes(FlaxGPT2Model, config)
    assert shapes["h.0.attn.c_attn.kernel"].shape == (3 * d, d)  # FlaxConv1D stores (out, in)
    qv = t1.adapted_matrices(shapes, ("c_attn",), "out_in", t1.GPT2_QV_OF_FUSED_C_ATTN)
    assert [m.path for m in qv] == [f"h.{i}.attn.c_attn[{k}/3]" for i in range(layers) for k in (0, 2)]
    assert all((m.d_in, m.d_out) == (d, d) for m in qv)
    whole = t1.adapted_matrices(shapes, ("c_attn",), "out_in")
    assert [(m.d_in, m.d_out) for m in whole] == [(d, 3 * d)] * layers
    # LoRA: 2 r (d + d) per block either way; FourierFT: n per q and v, or n per fused module.
    assert t1.lora_param_count(qv, r) == t1.lora_param_count(whole, r) == layers * 2 * r * (d + d)
    assert t1.fourierft_param_count(qv, n) == 2 * t1.fourierft_param_count(whole, n) == layers * 2 * n


def test_tiny_llama_with_grouped_kv_heads_counts_rectangular_v():
    layers, d, heads, kv_heads, r = 2, 32, 4, 2, 3
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=d,
        intermediate_size=48,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
    )
    shapes = t1.abstract_param_shapes(FlaxLlamaModel, config)
    matrices = t1.adapted_matrices(shapes, ("q_proj", "v_proj"))
    d_v = kv_heads * d // heads
    assert [(m.d_in, m.d_out) for m in matrices] == [(d, d), (d, d_v)] * layers
    assert t1.lora_param_count(matrices, r) == layers * r * ((d + d) + (d + d_v))


def test_roberta_base_lora_r8_closed_form():
    """12 blocks x 2 (q, v) x r=8 x (768 + 768) = 294,912; FourierFT n=1000: 24 x 1000."""
    shapes = t1.abstract_param_shapes(FlaxRobertaModel, t1.roberta_config("base"), add_pooling_layer=False)
    assert all(isinstance(leaf, jax.ShapeDtypeStruct) for leaf in shapes.values())  # nothing allocated
    matrices = t1.adapted_matrices(shapes, ("query", "value"))
    assert len(matrices) == 24
    assert t1.lora_param_count(matrices, 8) == 12 * 2 * 8 * (768 + 768) == 294_912
    assert t1.fourierft_param_count(matrices, 1000) == 24_000
    assert t1.storage_bytes(294_912) == 1_179_648  # 1.125 MiB, printed "1.13MB"
    # Embeddings (50265 + 514 + 1) x 768 + LayerNorm, plus 12 identical blocks.
    block = 4 * (768 * 768 + 768) + (768 * 3072 + 3072) + (3072 * 768 + 768) + 2 * 2 * 768
    assert t1.total_param_count(shapes) == (50265 + 514 + 1) * 768 + 2 * 768 + 12 * block == 124_055_040


def test_invalid_requests_raise():
    shapes = t1.abstract_param_shapes(FlaxRobertaModel, tiny_roberta(1, 8), add_pooling_layer=False)
    matrices = t1.adapted_matrices(shapes, ("query",))
    with pytest.raises(ValueError, match="does not fit"):
        t1.fourierft_param_count(matrices, 65)  # an 8 x 8 matrix has 64 entries
    with pytest.raises(ValueError, match="rank"):
        t1.lora_param_count(matrices, 0)
    with pytest.raises(ValueError, match="no kernel matched"):
        t1.adapted_matrices(shapes, ("q_proj",))


@pytest.mark.parametrize(
    "exact, printed, units, expected",
    [
        (1_179_648, "1.13MB", "binary", "match"),  # 1.125 rounds up
        (320_000, "312KB", "binary", "match"),  # 312.5: a tie may go either way
        (288_000, "282KB", "binary", "last digit"),  # 281.25 rounded up
        (33_554_432, "33.5M", "count", "last digit"),  # 33.55M truncated
        (393_216, "350K", "count", "differs"),
        (33_554_432, "32.8MB", "binary", "differs"),
        (33_554_432, "32.8MB", "mixed", "match"),  # 1000 x 1024 B "MB"
    ],
)
def test_agreement_with_printed_values(exact, printed, units, expected):
    divisors = {
        "count": t1.COUNT_UNITS,
        "binary": t1.BYTE_CONVENTIONS[t1.PRIMARY_BYTES],
        "mixed": t1.BYTE_CONVENTIONS["MB = 1000 x 1024 B"],
    }[units]
    assert t1.agreement(Fraction(exact), printed, divisors) == expected


def test_format_short():
    binary = t1.BYTE_CONVENTIONS[t1.PRIMARY_BYTES]
    assert t1.format_short(Fraction(33_554_432), t1.COUNT_UNITS) == "33.6M"
    assert t1.format_short(Fraction(4_800), t1.COUNT_UNITS) == "4.8K"
    assert t1.format_short(Fraction(96_000), binary) == "93.8KB"
    assert t1.format_short(Fraction(3_145_728), binary) == "3MB"


def test_paper_table_covers_every_model_twice_per_method():
    assert len(t1.PAPER_TABLE1) == 32
    for spec in t1.ARCHS:
        cells = [c for c in t1.PAPER_TABLE1 if c.model == spec.name]
        assert sorted(c.method for c in cells) == ["FourierFT", "FourierFT", "LoRA", "LoRA"]


@pytest.mark.slow
def test_main_writes_the_table(tmp_path):
    out = tmp_path / "table1.md"
    t1.main(["--output", str(out)])
    text = out.read_text()
    assert "| RoBERTa Base | 24 | LoRA | r=8 | ✓ | 294,912 | 295K | 295K |" in text
    assert "| LLaMA-2 13B | 80 | FourierFT | n=1000 | ✓ | 80,000 | 80K | 80K |" in text
