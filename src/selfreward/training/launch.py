"""Multi-GPU / multi-node training: `sft`, `seed-sft` and `dpo` re-execute themselves under
`accelerate launch`.

dvc.yaml keeps calling plain `selfreward sft ...`; params `launch.*` decide whether that command
trains in-process (one CPU or GPU) or hands the same arguments to `accelerate launch` with the
DDP, DeepSpeed ZeRO-3 or FSDP config shipped in selfreward/configs/.
"""

from __future__ import annotations

import logging
import os
import shlex
import sys
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from ..config.errors import UserError
from ..config.params import LaunchParams
from ..core.io import remove_outputs

log = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parents[1] / "configs"
# Set on the relaunched command so a child never launches again, whatever the launcher exports.
LAUNCHED_ENV = "SELFREWARD_LAUNCHED"
# Per-node value: params.yaml is shared by all nodes (and hashed by DVC), the rank is not.
MACHINE_RANK_ENV = "SELFREWARD_MACHINE_RANK"


def config_file(strategy: str) -> Path:
    """The accelerate config shipped for launch.strategy (ddp, zero3, fsdp)."""
    path = CONFIG_DIR / f"accelerate_{strategy}.yaml"
    if not path.is_file():
        raise UserError(f"no accelerate config {path.name} in {CONFIG_DIR}",
                        field="launch.strategy")
    return path


def needs_launcher(params: LaunchParams) -> bool:
    """One process with plain DDP trains in-process; anything else goes through accelerate."""
    return params.num_processes > 1 or params.strategy != "ddp"


def inside_launcher(env: Mapping[str, str] = os.environ) -> bool:
    """True in a process started by accelerate/torchrun/deepspeed (or by our own relaunch)."""
    return "LOCAL_RANK" in env or env.get(LAUNCHED_ENV) == "1"


def machine_rank(params: LaunchParams, env: Mapping[str, str] = os.environ) -> int:
    """launch.machine_rank, overridden per node by SELFREWARD_MACHINE_RANK."""
    raw = env.get(MACHINE_RANK_ENV)
    if raw is None:
        return params.machine_rank
    try:
        rank = int(raw)
    except ValueError:
        raise UserError(f"{MACHINE_RANK_ENV}={raw!r} is not an integer",
                        field="launch.machine_rank") from None
    if not 0 <= rank < params.num_machines:
        raise UserError(f"{MACHINE_RANK_ENV}={rank} is outside [0, {params.num_machines - 1}] "
                        f"(launch.num_machines={params.num_machines})", field="launch.machine_rank")
    return rank


def build_launch_command(argv: Sequence[str], params: LaunchParams, *,
                         python: str = sys.executable,
                         env: Mapping[str, str] = os.environ) -> list[str]:
    """The command that runs `selfreward <argv>` as params `launch` ask (plain for 1 + ddp)."""
    target = ["-m", "selfreward.cli", *argv]
    if not needs_launcher(params):
        return [python, *target]
    cmd = [python, "-m", "accelerate.commands.launch",
           "--config_file", str(config_file(params.strategy)),
           "--num_processes", str(params.num_processes),
           "--num_machines", str(params.num_machines),
           "--machine_rank", str(machine_rank(params, env)),
           "--main_process_port", str(params.main_process_port)]
    if params.num_machines > 1:
        cmd += ["--main_process_ip", str(params.main_process_ip)]
    return cmd + target


def maybe_relaunch(params: LaunchParams, cleanup: Iterable[str | Path | None] = (),
                   argv: Sequence[str] | None = None) -> None:
    """Re-execute this command under `accelerate launch` when params ask for it; else return.

    The stale outputs in `cleanup` are removed once here, by the rank-0 node only, so ranks never
    race to delete them (nor a late node a shared filesystem's fresh outputs).
    """
    if not needs_launcher(params) or inside_launcher():
        return
    cmd = build_launch_command(sys.argv[1:] if argv is None else argv, params)
    if machine_rank(params) == 0:
        remove_outputs(*(c for c in cleanup if c))
    log.info("launching %d process(es) on %d machine(s), strategy %s: %s", params.num_processes,
             params.num_machines, params.strategy, shlex.join(cmd))
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvpe(cmd[0], cmd, {**os.environ, LAUNCHED_ENV: "1"})
