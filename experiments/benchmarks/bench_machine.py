"""What a benchmark ran on (CPU model, core count, library versions) and how busy the machine is while it runs."""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import platform


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
