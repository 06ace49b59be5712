"""What a benchmark ran on: CPU model, core count, library versions (for the results files)."""

from __future__ import annotations

import importlib.metadata
import os
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
