"""The E2E NLG Challenge data (restaurant meaning representations → English): reading, grouping, splitting.

A CSV has columns ``mr`` and ``ref``; consecutive rows with the same MR are its references. :func:`read_e2e`
groups them as the challenge's scorer (``measure_scores.py`` of ``tuetschek/e2e-metrics``) does, including its
repairs of a few mis-encoded characters (``Ł``/``Â£`` → ``£``, ``Ã©``/``ã©`` → ``é``), so references read here
are the ones the official metrics use. :func:`split_mrs` holds out whole MRs (not single references) for
choosing the stopping point; :func:`mr_prompt` is the instruction every row of the E2E table is given.

Example::

  test = read_e2e("../shared/data/e2e/original/testset_w_refs.csv")  # 630 MRs, 4,693 references
  train, select = split_mrs(read_e2e(".../devset.csv"), fraction=0.1, seed=0)
"""

from __future__ import annotations

import csv
import dataclasses
import io
import pathlib

import numpy as np

# The official scorer's repairs of mis-encoded characters in reference files.
REPAIRS = (("Ł", "£"), ("Â£", "£"), ("Ã©", "é"), ("ã©", "é"))
INSTRUCTION = "Write one sentence describing the restaurant from this meaning representation:"
SYSTEM = "You write short, fluent restaurant descriptions that mention every given attribute."


@dataclasses.dataclass(frozen=True)
class MeaningRepresentation:
    """One MR with its human references."""

    mr: str
    refs: tuple[str, ...]


def _repaired(text: str) -> str:
    for bad, good in REPAIRS:
        text = text.replace(bad, good)
    return text


def read_e2e(path: str | pathlib.Path) -> list[MeaningRepresentation]:
    """MRs in file order, each with its consecutive references.

    Raises:
      ValueError: the file has no ``mr`` and ``ref`` columns.
    """
    text = _repaired(pathlib.Path(path).read_text(encoding="utf-8").replace("\ufeff", ""))
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"mr", "ref"} <= set(reader.fieldnames):
        raise ValueError(f"{path}: expected columns 'mr' and 'ref', got {reader.fieldnames}.")
    groups: list[tuple[str, list[str]]] = []
    for row in reader:
        if groups and groups[-1][0] == row["mr"]:
            groups[-1][1].append(row["ref"])
        else:
            groups.append((row["mr"], [row["ref"]]))
    return [MeaningRepresentation(mr, tuple(refs)) for mr, refs in groups]


def split_mrs(
    mrs: list[MeaningRepresentation], *, fraction: float, seed: int
) -> tuple[list[MeaningRepresentation], list[MeaningRepresentation]]:
    """``(train, held_out)``: a random ``fraction`` of the MRs (whole MRs, every reference with them) held out."""
    order = np.random.default_rng(seed).permutation(len(mrs))
    held = set(order[: round(fraction * len(mrs))].tolist())
    return [m for i, m in enumerate(mrs) if i not in held], [m for i, m in enumerate(mrs) if i in held]


def mr_prompt(mr: str) -> str:
    """The user turn for one MR (the same for zero-shot and fine-tuned rows)."""
    return f"{INSTRUCTION} {mr}"


def training_pairs(mrs: list[MeaningRepresentation]) -> list[tuple[str, str]]:
    """(prompt, reference) pairs: one example per reference."""
    return [(mr_prompt(m.mr), ref) for m in mrs for ref in m.refs]
