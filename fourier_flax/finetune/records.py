"""Append-only JSONL run records: each finished run writes one line; a rerun skips the runs already there.

A line is appended with one ``write`` of a complete line followed by ``fsync``, so a run killed mid-write leaves
at most a torn last line, which :func:`read_records` skips (and the run is redone).

Example::

  done = finished_keys(path, ("task", "method", "seed"))
  if ("mrpc", "fourierft", 0) not in done:
      append_record(path, {"task": "mrpc", "method": "fourierft", "seed": 0, "dev_metric": 84.1})
"""

from __future__ import annotations

import json
import os
import pathlib
from collections.abc import Sequence
from typing import Any


def read_records(path: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every complete JSON line of ``path`` (none if the file is missing; a torn last line is skipped)."""
    path = pathlib.Path(path)
    if not path.is_file():
        return []
    records = []
    for line in path.read_text().splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


def finished_keys(path: str | os.PathLike[str], fields: Sequence[str]) -> set[tuple[Any, ...]]:
    """The ``fields`` tuples of the records in ``path``."""
    return {tuple(record.get(f) for f in fields) for record in read_records(path)}


def append_record(path: str | os.PathLike[str], record: dict[str, Any]) -> None:
    """Appends ``record`` as one JSON line and flushes it to disk."""
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    line = json.dumps(record, sort_keys=True) + "\n"
    with open(path, "a") as file:
        if file.tell() > 0:
            with open(path, "rb") as check:  # a torn last line from a killed run: start on a fresh line
                check.seek(-1, os.SEEK_END)
                if check.read(1) != b"\n":
                    line = "\n" + line
        file.write(line)
        file.flush()
        os.fsync(file.fileno())
