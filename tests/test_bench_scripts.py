"""Every benchmark script keeps running: each runs end to end at a tiny size (results to a scratch file)."""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import pytest

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments" / "benchmarks"


def run(script: str, *args: str, timeout: int = 600) -> str:
    done = subprocess.run(
        [sys.executable, str(EXPERIMENTS / script), *args], capture_output=True, text=True, timeout=timeout
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@pytest.mark.torch
def test_bench_llm_smoke(tmp_path):
    pytest.importorskip("gguf")
    out = tmp_path / "bench_llm.md"
    run("bench_llm.py", "--layers", "1", "--batch", "2x16", "--new-tokens", "4", "--rounds", "1", "--out", str(out))
    text = out.read_text()
    assert "Ours / PEFT (float base)" in text and "tokens/s" in text and "4-bit" in text
    assert out.with_suffix(".json").is_file()
    run("bench_llm.py", "--loss-memory", "--layers", "1", "--batch", "2x16", "--out", str(out))
    assert "temp MiB" in (tmp_path / "bench_llm_loss_memory.md").read_text()


def test_bench_e2e_step_smoke(tmp_path):
    pytest.importorskip("gguf")
    out = tmp_path / "bench_e2e_step.md"
    run("bench_e2e_step.py", "--layers", "1", "--steps", "2", "--rounds", "1", "--batch", "2", "--mrs", "20",
        "--out", str(out))  # fmt: skip
    text = out.read_text()
    assert all(f"| {name} |" in text for name in ("pow2", "mult16", "mult16-all-tokens"))
    configs = json.loads(out.with_suffix(".json").read_text())["configs"]
    assert configs["mult16-all-tokens"]["loss_tokens"] > configs["mult16"]["loss_tokens"] > 0


def test_bench_e2e_decode_smoke(tmp_path):
    pytest.importorskip("gguf")
    out = tmp_path / "bench_e2e_decode.md"
    run("bench_e2e_decode.py", "--layers", "1", "--batches", "1", "--batch", "2", "--beams", "2",
        "--max-new-tokens", "4", "--rounds", "1", "--out", str(out))  # fmt: skip
    assert all(f"| {name} |" in out.read_text() for name in ("unmerged", "merged"))
    result = json.loads(out.with_suffix(".json").read_text())
    assert isinstance(result["same_outputs"], bool) and result["configs"]["merged"]["s_per_batch"] > 0


def test_bench_spectral_matmul_smoke(tmp_path):
    out = tmp_path / "bench_spectral_matmul.md"
    run(
        "bench_spectral_matmul.py",
        "--shapes",
        "64x48",
        "--rows",
        "2",
        "--tokens",
        "4",
        "--repeats",
        "2",
        "--crossover-shapes",
        "64x48",
        "--crossover-tokens",
        "1,8",
        "--out",
        str(out),
    )
    text = out.read_text()
    assert "spectral-per-example" in text and "dense-per-example" in text and "64×48" in text
    assert "| 64×48 | 1000 | 8 |" in text and "## Forward crossover" in text


def test_bench_backward_smoke(tmp_path):
    out = tmp_path / "bench_backward.md"
    run("bench_backward.py", "--shapes", "64x48,32x32", "--tokens", "8,16", "--n", "200", "--n-sweep", "400",
        "--repeats", "2", "--out", str(out))  # fmt: skip
    text = out.read_text()
    assert "grad w.r.t. (c, x), larger n" in text and "| 64 × 48 | 8 | 200 |" in text and "### Fit" in text


@pytest.mark.torch
def test_bench_delta_w_smoke(tmp_path):
    out = tmp_path / "bench_delta_w.md"
    run("bench_delta_w.py", "--shapes", "48x40", "--stacked-d", "48", "--repeats", "2", "--out", str(out))
    text = out.read_text()
    assert "| (48, 40) |" in text and "24 stacked 48×48 layers" in text


@pytest.mark.torch
def test_bench_train_step_smoke(tmp_path):
    out = tmp_path / "bench_train_step.md"
    run("bench_train_step.py", "--models", "tiny", "--batches", "2x128", "--repeats", "1", "--no-memory",
        "--out", str(out))  # fmt: skip
    text = out.read_text()
    for config in ("fourierft-dense", "fourierft-spectral", "lora", "head", "floor", "peft-fourierft", "peft-lora"):
        assert f"| {config} |" in text
    rss = run("bench_train_step.py", "--memory-worker", "jax", "tiny", "2", "lora")
    assert json.loads(rss.strip().splitlines()[-1])["rss_delta_mib"] > 0


@pytest.mark.torch
def test_bench_memory_smoke(tmp_path):
    out = tmp_path / "bench_memory.md"
    run("bench_memory.py", "--shapes", "tiny/2", "--configs", "fourierft-remat,peft-fourierft-gc", "--out", str(out))
    text = out.read_text()
    assert "| tiny | 2x128 | fourierft-remat |" in text and "| tiny | 2x128 | peft-fourierft-gc |" in text


def test_bench_mesh_smoke(tmp_path):
    run("bench_mesh.py", "mesh", "--tiny", "--devices", "1,2", "--n", "100", "--out-dir", str(tmp_path))
    text = (tmp_path / "bench_mesh.md").read_text()
    assert "llama-tiny-shaped" in text and "| fsdp | 2 |" in text
    run("bench_mesh.py", "delta_w", "--shapes", "32x48", "--ns", "50", "--repeats", "2", "--out-dir", str(tmp_path))
    assert "| 32×48 | 50 |" in (tmp_path / "bench_delta_w_impl.md").read_text()


def test_bench_sweep_smoke(tmp_path):
    out = tmp_path / "bench_sweep.md"
    run("bench_sweep.py", "--seeds", "2", "--steps", "2", "--out", str(out))
    assert "2 seeds, `jit(vmap(run_seed))`" in out.read_text()


def test_bench_many_adapters_smoke(tmp_path):
    pytest.importorskip("gguf")
    out = tmp_path / "bench_many_adapters.md"
    run("bench_many_adapters.py", "--minilm-layers", "1", "--llm-layers", "1", "--minilm-batch", "4",
        "--llm-batch", "2", "--distinct", "1,B", "--new-tokens", "2", "--rounds", "1", "--out", str(out))  # fmt: skip
    text = out.read_text()
    for config in ("base", "fourierft-bank", "lora-bank", "fourierft-merged"):
        assert f"| k = 4 = B | {config} |" in text and f"| k = 2 = B | {config} |" in text
    assert "Memory per adapter: FourierFT 8,000 B" in text  # 2 layers x n = 1000 float32
