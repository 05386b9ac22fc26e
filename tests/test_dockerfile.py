"""The Dockerfile, read with a real Dockerfile parser (no Docker engine here): two targets,
non-root, no secrets, installed through the Makefile from requirements.lock, COPY sources and
make targets that exist, and a GPU lock consistent with the CPU one."""

from __future__ import annotations

import fnmatch
import re
import shlex
import subprocess
from pathlib import Path

import dockerfile
import pytest

ROOT = Path(__file__).resolve().parents[1]
SECRET_NAME = re.compile(r"KEY|SECRET|TOKEN|PASSW|CREDENTIAL|AUTH|PRIVATE|^AWS_|^HF_TOKEN",
                         re.IGNORECASE)
SECRET_VALUE = re.compile(r"AKIA[0-9A-Z]{12,}|ghp_[0-9A-Za-z]{20,}|hf_[0-9A-Za-z]{20,}")


def stages() -> dict[str, list]:
    """Instructions per build stage, keyed by the stage name (FROM ... AS name)."""
    out: dict[str, list] = {}
    current: list | None = None
    for cmd in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if cmd.cmd == "FROM":
            assert len(cmd.value) == 3 and cmd.value[1].upper() == "AS", cmd.original
            current = out.setdefault(cmd.value[2], [])
        elif current is not None:
            current.append(cmd)
    return out


def make_invocations(stage: list) -> list[list[str]]:
    """Every `make ...` argument list that RUN and CMD instructions of a stage execute."""
    calls = []
    for cmd in stage:
        if cmd.cmd == "RUN":
            lexer = shlex.shlex(" ".join(cmd.value), posix=True, punctuation_chars=True)
            lexer.whitespace_split = True
            command: list[str] = []
            for word in [*lexer, ";"]:
                if word in (";", "&&", "||", "|", "&"):
                    if command[:1] == ["make"]:
                        calls.append(command[1:])
                    command = []
                else:
                    command.append(word)
        elif cmd.cmd == "CMD" and cmd.value and cmd.value[0] == "make":
            calls.append(list(cmd.value[1:]))
    return calls


def lock(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[re.sub(r"[-_.]+", "-", name).lower()] = version
    return pins


def test_cpu_and_gpu_targets_exist():
    assert {"cpu", "gpu"} <= set(stages())


@pytest.mark.parametrize("target", ["cpu", "gpu"])
def test_final_user_is_not_root(target):
    users = [c.value[0] for c in stages()[target] if c.cmd == "USER"]
    assert users, f"{target}: no USER instruction (runs as root)"
    assert users[-1].split(":")[0] not in ("root", "0"), users[-1]
    # Nothing after the last USER switches back: installs run as that user too.
    last_user = max(i for i, c in enumerate(stages()[target]) if c.cmd == "USER")
    assert not any(c.cmd == "USER" for c in stages()[target][last_user + 1:])


def test_no_secrets_in_args_or_env():
    for cmd in dockerfile.parse_file(str(ROOT / "Dockerfile")):
        if cmd.cmd == "ARG":
            names = [cmd.value[0].split("=")[0]]
            values = [cmd.value[0].partition("=")[2]]
        elif cmd.cmd == "ENV":
            names, values = list(cmd.value[0::2]), list(cmd.value[1::2])
        else:
            if SECRET_VALUE.search(cmd.original):
                pytest.fail(f"line {cmd.start_line}: a credential-looking value: {cmd.original}")
            continue
        for name, value in zip(names, values):
            assert not SECRET_NAME.search(name), f"line {cmd.start_line}: {cmd.cmd} {name}"
            assert not SECRET_VALUE.search(value), f"line {cmd.start_line}: {cmd.cmd} {name}"


def test_secrets_and_local_state_stay_out_of_the_build_context():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    for path in (".git", ".dvc/config.local", ".env", ".venv", ".dvc/cache"):
        assert path in ignored, path


@pytest.mark.parametrize("target, make_target", [("cpu", "install"), ("gpu", "install-gpu")])
def test_installs_through_the_makefile_from_requirements_lock(target, make_target):
    stage = stages()[target]
    text = " ".join(" ".join(c.value) for c in stage if c.cmd == "RUN")
    assert "pip install" not in text, "install through the Makefile, not ad-hoc pip commands"
    assert [make_target, "VENV=/opt/venv"] == make_invocations(stage)[0][:2]
    copied = [v for c in stage if c.cmd == "COPY" for v in c.value[:-1]]
    assert "requirements.lock" in copied
    # The target really installs requirements.lock (GNU make expands the recipe; -n runs nothing).
    dry = subprocess.run(["make", "-n", "-B", make_target, "VENV=/opt/venv"], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert "-m pip install --quiet -r requirements.lock" in dry
    if target == "cpu":
        index = re.search(r"TORCH_INDEX=(\S+)", text)
        assert index and index.group(1).endswith("/whl/cpu"), "cpu image must get CPU-only torch"
        assert f"--index-url {index.group(1)}" in subprocess.run(
            ["make", "-n", "-B", "install", "VENV=/opt/venv", f"TORCH_INDEX={index.group(1)}"],
            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    else:
        assert "-r requirements-gpu.lock" in dry


def test_copied_files_exist_and_are_not_ignored():
    patterns = [p.strip() for p in (ROOT / ".dockerignore").read_text().splitlines()
                if p.strip() and not p.startswith("#")]
    for stage in stages().values():
        for cmd in stage:
            if cmd.cmd not in ("COPY", "ADD") or any(f.startswith("--from") for f in cmd.flags):
                continue
            for src in cmd.value[:-1]:
                assert (ROOT / src).exists(), f"line {cmd.start_line}: COPY {src}: no such file"
                if src != ".":
                    hits = [p for p in patterns if fnmatch.fnmatch(src, p.lstrip("/"))]
                    assert not hits, f"COPY {src} is excluded by .dockerignore {hits}"


def test_make_targets_run_by_the_image_exist():
    for name, stage in stages().items():
        calls = make_invocations(stage)
        assert calls, name
        for args in calls:
            # make -n fails with "No rule to make target" for a target the Makefile lacks.
            proc = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True,
                                  check=False)
            assert proc.returncode == 0, f"{name}: make {' '.join(args)}: {proc.stderr}"


def test_gpu_lock_agrees_with_requirements_lock():
    cpu, gpu = lock(ROOT / "requirements.lock"), lock(ROOT / "requirements-gpu.lock")
    torch_spec = re.search(r"^TORCH_SPEC \?= torch==(\S+)$", (ROOT / "Makefile").read_text(),
                           re.MULTILINE)
    assert torch_spec and gpu["torch"] == torch_spec.group(1)
    assert "vllm" in gpu and "torch" not in cpu
    overrides = {name for name in gpu if name in cpu and gpu[name] != cpu[name]}
    assert overrides == {"numpy"}, f"requirements-gpu.lock overrides {overrides}: document them"
    assert not {name for name in gpu if name in cpu and gpu[name] == cpu[name]}, \
        "requirements-gpu.lock repeats pins of requirements.lock"
