"""The E2E NLG Challenge's five metrics, computed as its official ``measure_scores.py`` computes them.

* **BLEU** — MT-Eval v13a: corpus BLEU-4 over all references of each MR, case-insensitive (ASCII letters, as
  ``mteval-v13a.pl`` lowercases), v13a tokenization, closest reference length (ties: the shorter); computed by
  ``sacrebleu`` with its 13a tokenizer. Scale 0–1.
* **NIST** — MT-Eval v13a's NIST-5 as the challenge's edited ``mteval-v13a-sig.pl`` computes it with a varying
  number of references per MR (:func:`nist`, written here: no package computes that variant). Information
  weights come from n-gram counts over every reference of the corpus; the length penalty compares the output
  length with the average reference length.
* **METEOR** 1.5, **ROUGE_L** and **CIDEr** — the MS-COCO caption evaluation (``pycocoevalcap``, whose Java
  METEOR 1.5 and Stanford PTB tokenizer need ``java``), on PTB-tokenized, lowercased text as ``COCOEvalCap``.

``tests/test_e2e_metrics.py`` checks all five against scores the official script gave on the test set.

Example::

  scores = e2e_scores(read_e2e("testset_w_refs.csv"), outputs)  # outputs: one string per MR, in order
  scores["BLEU"], scores["NIST"], scores["METEOR"], scores["ROUGE_L"], scores["CIDEr"]
"""

from __future__ import annotations

import math
import pathlib
import shutil
from collections import Counter
from collections.abc import Sequence

from fourier_flax.data.e2e import MeaningRepresentation, read_e2e

METRICS = ("BLEU", "NIST", "METEOR", "ROUGE_L", "CIDEr")
NIST_ORDER = 5
# mteval-v13a.pl lowercases ASCII letters only (tr/[A-Z]/[a-z]/).
_ASCII_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


def mteval_tokens(text: str) -> list[str]:
    """MT-Eval v13a's normalisation: ASCII lowercase, then the 13a tokenizer (``sacrebleu``'s)."""
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()(text.translate(_ASCII_LOWER)).split()


def bleu(refs: Sequence[Sequence[str]], outputs: Sequence[str]) -> float:
    """Corpus BLEU-4 (0–1) with every MR's references (``sacrebleu``, v13a tokenization, lowercased)."""
    from sacrebleu.metrics import BLEU

    width = max(len(group) for group in refs)
    # MRs have different numbers of references: missing ones are None (sacrebleu skips them; the official
    # scorer's empty padding references do not count either).
    streams = [[group[k] if k < len(group) else None for group in refs] for k in range(width)]
    lowered = [[None if text is None else text.translate(_ASCII_LOWER) for text in stream] for stream in streams]
    metric = BLEU(tokenize="13a", smooth_method="none", lowercase=False)
    return metric.corpus_score([o.translate(_ASCII_LOWER) for o in outputs], lowered).score / 100.0


def _ngrams(tokens: Sequence[str], order: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for n in range(1, order + 1) for i in range(len(tokens) - n + 1))


def nist(refs: Sequence[Sequence[str]], outputs: Sequence[str], order: int = NIST_ORDER) -> float:
    """NIST-``order`` as the challenge's ``mteval-v13a-sig.pl`` computes it over MRs with varying references.

    ``info(w1…wn) = −log2(count(w1…wn) / count(w1…wn−1))`` (unigrams: over the total reference words), counts
    over all references; the score sums, per n, the information of the output's n-grams clipped by their most
    frequent count in one reference, divided by the output's n-gram count, times ``exp(−β log²(ratio))`` with
    ``ratio`` = output words / (reference words / mean references per MR) and β such that a ratio of 2/3 gives
    0.5.
    """
    ref_tokens = [[mteval_tokens(r) for r in group if r != ""] for group in refs]
    counts: Counter = Counter()
    total_words = 0
    for group in ref_tokens:
        for tokens in group:
            total_words += len(tokens)
            counts.update(_ngrams(tokens, order))

    def info(ngram: tuple[str, ...]) -> float:
        context = counts[ngram[:-1]] if len(ngram) > 1 else total_words
        return -math.log(counts[ngram] / context) / math.log(2)

    matched_info = [0.0] * (order + 1)
    output_ngrams = [0] * (order + 1)
    ref_words = ref_count = 0
    for group, output in zip(ref_tokens, outputs, strict=True):
        tokens = mteval_tokens(output)
        for n in range(1, order + 1):
            output_ngrams[n] += max(len(tokens) - n + 1, 0)
        most: Counter = Counter()
        for ref in group:
            ref_words += len(ref)
            for ngram, count in _ngrams(ref, order).items():
                most[ngram] = max(most[ngram], count)
        ref_count += len(group)
        for ngram, count in _ngrams(tokens, order).items():
            if ngram in most:
                matched_info[len(ngram)] += info(ngram) * min(count, most[ngram])
    score = sum(matched_info[n] / max(output_ngrams[n], 1) for n in range(1, order + 1))
    ratio = output_ngrams[1] / (ref_words / (ref_count / len(ref_tokens)))
    return score * _nist_length_penalty(ratio)


def _nist_length_penalty(ratio: float) -> float:
    if ratio >= 1:
        return 1.0
    if ratio <= 0:
        return 0.0
    beta = -math.log(0.5) / math.log(1.5) ** 2
    return math.exp(-beta * math.log(ratio) ** 2)


def coco_scores(refs: Sequence[Sequence[str]], outputs: Sequence[str]) -> dict[str, float]:
    """METEOR 1.5, ROUGE_L and CIDEr of the MS-COCO caption evaluation on PTB-tokenized text.

    Raises:
      RuntimeError: ``java`` is not installed (METEOR and the PTB tokenizer run on it).
    """
    if shutil.which("java") is None:
        raise RuntimeError("METEOR and the PTB tokenizer need Java: apt-get install default-jre-headless.")
    from pycocoevalcap.cider.cider import Cider
    from pycocoevalcap.meteor.meteor import Meteor
    from pycocoevalcap.rouge.rouge import Rouge
    from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

    keys = [f"inst-{i}" for i in range(len(outputs))]
    tokenizer = PTBTokenizer()
    references = tokenizer.tokenize({k: [{"caption": r} for r in group] for k, group in zip(keys, refs, strict=True)})
    candidates = tokenizer.tokenize({k: [{"caption": o}] for k, o in zip(keys, outputs, strict=True)})
    meteor = Meteor()
    try:
        scores = {"METEOR": float(meteor.compute_score(references, candidates)[0])}
    finally:
        _stop(meteor.meteor_p)
    scores["ROUGE_L"] = float(Rouge().compute_score(references, candidates)[0])
    scores["CIDEr"] = float(Cider().compute_score(references, candidates)[0])
    return scores


def _stop(process) -> None:
    """Ends METEOR's Java process and closes its pipes (pycocoevalcap leaves that to garbage collection)."""
    for stream in (process.stdin, process.stdout, process.stderr):
        if stream is not None:
            stream.close()
    process.kill()
    process.wait()


def e2e_scores(mrs: Sequence[MeaningRepresentation], outputs: Sequence[str]) -> dict[str, float]:
    """The five official metrics of ``outputs`` (one per MR, in order) against the MRs' references.

    Raises:
      ValueError: a different number of outputs than MRs.
    """
    if len(outputs) != len(mrs):
        raise ValueError(f"{len(outputs)} outputs for {len(mrs)} MRs: give one output line per MR, in order.")
    refs = [list(m.refs) for m in mrs]
    scores = {"BLEU": bleu(refs, outputs), "NIST": nist(refs, outputs), **coco_scores(refs, outputs)}
    return {name: scores[name] for name in METRICS}


def read_outputs(path: str | pathlib.Path) -> list[str]:
    """System outputs, one per line, stripped (as the official scorer reads them)."""
    return [line.strip() for line in pathlib.Path(path).read_text(encoding="utf-8").splitlines()]


def score_files(refs_csv: str | pathlib.Path, outputs_txt: str | pathlib.Path) -> dict[str, float]:
    """:func:`e2e_scores` of an outputs file against a references CSV."""
    return e2e_scores(read_e2e(refs_csv), read_outputs(outputs_txt))
