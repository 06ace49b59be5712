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
