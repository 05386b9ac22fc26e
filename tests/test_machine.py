"""core/machine.py: the machine facts recorded with every result (docs/reproducibility.md)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from selfreward.config.params import EngineParams
from selfreward.core.machine import CPU_FLAGS, machine_info


def test_machine_info_reads_this_machine():
    info = machine_info()
    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.is_file():
        pytest.skip("no /proc/cpuinfo on this system")
    lines = cpuinfo.read_text().splitlines()
    flags = set(next(x for x in lines if x.startswith("flags")).split(":", 1)[1].split())
    assert info["cpu_flags"] == [f for f in CPU_FLAGS if f in flags]
    name = next((x.split(":", 1)[1].strip() for x in lines if x.startswith("model name")), None)
    assert info["cpu"] == (name or info["cpu"])
    assert info["torch"] == torch.__version__ and info["cpus"] >= 1
    native = getattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)()
    assert info["cpu_bf16_native"] is bool(native)
    old = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        assert machine_info()["torch_threads"] == 1  # read when asked, not cached
    finally:
        torch.set_num_threads(old)


def test_auto_dtype_is_resolved_in_the_engine_key(monkeypatch):
    """Shards made under `engine.dtype: auto` in bf16 (a CPU with AVX512-BF16) are not those of
    fp32 (a CPU without): the key holds what `auto` became."""
    from selfreward.generation.engines import engine_key, hf

    here = engine_key(EngineParams(name="hf"))
    assert here["dtype"] == hf.auto_dtype() and here["dtype"] != "auto"
    other = "bfloat16" if here["dtype"] == "float32" else "float32"
    monkeypatch.setattr(hf, "auto_dtype", lambda: other)
    assert engine_key(EngineParams(name="hf"))["dtype"] == other
    assert engine_key(EngineParams(name="hf", dtype="float32"))["dtype"] == "float32"
