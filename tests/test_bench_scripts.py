"""Every benchmark script keeps running: each runs end to end at a tiny size (results to a scratch file)."""

from __future__ import annotations

import pathlib
import subprocess
import sys

import pytest

EXPERIMENTS = pathlib.Path(__file__).resolve().parents[1] / "experiments"


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
        "--out",
        str(out),
    )
    text = out.read_text()
    assert "spectral-per-example" in text and "dense-per-example" in text and "64×48" in text
