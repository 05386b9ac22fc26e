"""What machine a result came from: CPU model and the instruction-set features that change
float arithmetic (bf16 autocast where the CPU has AVX512-BF16/AMX, kernel choice), torch's thread
count and versions. Recorded in every stage's metrics and the report's provenance, because
`precision: auto` and `engine.dtype: auto` resolve differently on different CPUs
(docs/reproducibility.md)."""

from __future__ import annotations

import os
import platform
from functools import cache
from pathlib import Path

# Flags that decide which kernels (and so which rounding) torch/oneDNN use on x86.
CPU_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_tile")


@cache
def _cpuinfo() -> tuple[str, frozenset[str]]:
    """(model name, flags) from /proc/cpuinfo; ('', {}) where there is none (macOS, Windows)."""
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return platform.processor(), frozenset()
    name, flags = "", frozenset()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not name:
            name = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = frozenset(value.split())
    return name, flags


def cpu_bf16_native() -> bool:
    """True where torch treats bf16 as native on this CPU (what `auto` precision/dtype follow)."""
    import torch

    native = getattr(torch.cpu, "_is_avx512_bf16_supported", None)
    return bool(native is not None and native())


def machine_info() -> dict:
    """CPU model, its float-relevant flags, bf16 support, threads, GPU and versions."""
    import torch

    name, flags = _cpuinfo()
    cuda = torch.cuda.is_available()
    return {"cpu": name or platform.machine(),
            "cpu_flags": [f for f in CPU_FLAGS if f in flags],
            "cpu_bf16_native": cpu_bf16_native(),
            "cpus": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if cuda else None,
            "torch": torch.__version__, "python": platform.python_version()}
