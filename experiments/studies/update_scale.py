"""How much FourierFT's random initial ΔW damages a pretrained encoder before any training, by scaling.

Command::

  .venv/bin/python experiments/studies/update_scale.py     # ~5 min on this 2-core CPU; writes results/update_scale.md

The real all-MiniLM-L6-v2 gets FourierFT (n = 1000 on query/value, PEFT's entries, N(0, 1) coefficients as in
the paper and PEFT) at each scaling; we report the median and max ‖ΔW‖_F/‖W0‖_F over the 12 adapted layers and the
zero-shot STS-B dev score of the perturbed encoder (Spearman ×100 of the cosine between the two sentences'
mean-pooled embeddings — the task this sentence encoder was trained for, so a drop is damage to the pretrained
model), over 3 initialisation seeds. This is what ``fourier_flax.update_scale.WARN_RATIO`` is set from.
The paper's RoBERTa-base scalings (29–151) map to MiniLM's 384×384 kernels by a factor (384/768)² = 1/4.
"""

from __future__ import annotations

import pathlib
import sys
import warnings

import jax
import numpy as np

import fourier_flax as ff
from fourier_flax.data import load_glue_split
from fourier_flax.data.bucketing import bucket_lengths, bucketed_batches
from fourier_flax.data.metrics import spearman
from fourier_flax.finetune import default_data_dir, load_tokenizer
from fourier_flax.models.hf import load_minilm
from fourier_flax.update_scale import WARN_RATIO, update_norm_ratios

RESULTS = pathlib.Path(__file__).resolve().parents[1] / "results" / "update_scale.md"
SCALINGS = (0.0, 5.0, 12.0, 35.0, 70.0, 140.0, 300.0)
SEEDS = (0, 1, 2)


def embed(model, params, config, arrays) -> np.ndarray:
    """Mean-pooled last hidden states ``(N, 384)`` in the rows' original order."""

    @jax.jit
    def pooled(params, batch):
        with ff.intercept(config):
            hidden = model(batch["input_ids"], batch["attention_mask"], params=params).last_hidden_state
        mask = batch["attention_mask"][..., None].astype(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1)

    out = np.zeros((len(arrays["input_ids"]), 384), np.float32)
    for batch in bucketed_batches(arrays, 64, bucket_lengths(128), shuffle=False):
        inputs = {k: batch[k] for k in ("input_ids", "attention_mask")}
        vectors = np.asarray(pooled(params, inputs))
        out[batch["index"][batch["mask"]]] = vectors[batch["mask"]]
    return out


def main() -> int:
    tokenizer = load_tokenizer()
    dev = load_glue_split("stsb", "dev", default_data_dir())
    sides = [
        tokenizer(list(dev[f]), truncation=True, max_length=128, padding="max_length", return_tensors="np")
        for f in ("sentence1", "sentence2")
    ]
    sides = [{k: np.asarray(s[k], np.int32) for k in ("input_ids", "attention_mask")} for s in sides]
    model, base = load_minilm()
    rows = []
    for scaling in SCALINGS:
        # scaling 0 is the unperturbed encoder: zero coefficients (init_weights=True), one seed suffices.
        config = ff.FourierFTConfig(target_modules=["query", "value"], scaling=scaling, init_weights=scaling == 0.0)
        scores, medians, maxima = [], [], []
        for seed in SEEDS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the guardrail's own warning: this script measures it
                params = ff.init_adapter(base, config, jax.random.key(seed))
            ratios = list(update_norm_ratios(params, config).values())
            a, b = (embed(model, params, config, side) for side in sides)
            cosine = (a * b).sum(1) / np.linalg.norm(a, axis=1) / np.linalg.norm(b, axis=1)
            scores.append(100 * spearman(cosine, dev["label"]))
            medians.append(np.median(ratios))
            maxima.append(np.max(ratios))
            if scaling == 0.0:
                break
        rows.append((scaling, np.mean(medians), np.mean(maxima), np.mean(scores), np.std(scores)))
        print(rows[-1], flush=True)
    lines = [
        "# FourierFT's initial ΔW vs the pretrained encoder (written by experiments/studies/update_scale.py)",
        "",
        "all-MiniLM-L6-v2, FourierFT n = 1000 on query/value (12 layers, 384x384), N(0, 1) coefficients,",
        f"seeds {list(SEEDS)}. Zero-shot STS-B dev (1,500 pairs): Spearman x100 of the cosine of mean-pooled",
        "embeddings, before any training. Ratio = ‖ΔW‖_F / ‖W0‖_F per layer (median and max over layers).",
        "",
        "| scaling | median ratio | max ratio | STS-B Spearman (mean ± sd over seeds) |",
        "|---|---|---|---|",
    ]
    for scaling, median, maximum, mean, sd in rows:
        lines.append(f"| {scaling:g} | {median:.4f} | {maximum:.4f} | {mean:.2f} ± {sd:.2f} |")
    lines += [
        "",
        f"Warning threshold in fourier_flax.update_scale: WARN_RATIO = {WARN_RATIO} "
        "(largest layer ratio; justified in its comment).",
    ]
    RESULTS.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
