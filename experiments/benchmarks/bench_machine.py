"""What a benchmark ran on (CPU model, core count, library versions) and how busy the machine is while it runs."""

from __future__ import annotations

import importlib.metadata
import json
import os
import pathlib
import platform
import time
from collections.abc import Callable, Sequence


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_summary(packages: tuple[str, ...] = ("jax", "jaxlib", "flax", "torch", "peft")) -> str:
    """One markdown line naming the CPU, its cores and the versions of ``packages``."""
    versions = []
    for name in packages:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return f"{cpu_model()}, {os.cpu_count()} cores, Python {platform.python_version()}; " + ", ".join(versions)


def others_running() -> int:
    """Runnable threads on the machine that are not this process's: ``procs_running`` minus our own threads in
    state R (the sampling thread, and XLA's or torch's pool when it is still spinning after a call)."""
    with open("/proc/stat") as stat:
        running = next(int(line.split()[1]) for line in stat if line.startswith("procs_running"))
    own = 0
    for task in pathlib.Path("/proc/self/task").iterdir():
        try:
            own += (task / "stat").read_text().rsplit(")", 1)[1].split()[0] == "R"
        except OSError:
            continue
    return max(running - own, 0)


def timed_rounds(names: Sequence[str], run: Callable[[str], float], rounds: int) -> dict[str, list[tuple[float, int]]]:
    """``rounds`` rounds of ``run(name)`` for every name in turn (the order reversed on odd rounds), each after
    sampling :func:`others_running`: ``{name: [(run's return value, others running), ...]}``."""
    times: dict[str, list[tuple[float, int]]] = {name: [] for name in names}
    for round_index in range(rounds):
        for name in names if round_index % 2 == 0 else reversed(names):
            time.sleep(0.3)  # let our own thread pools go idle before sampling the machine's load
            load = others_running()
            times[name].append((run(name), load))
    return times


def write_results(out: pathlib.Path, result: dict, report: str) -> None:
    """Writes ``report`` to ``out`` (markdown) and ``result`` beside it as ``.json``, and prints the report."""
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1))
    out.write_text(report)
    print(report)
