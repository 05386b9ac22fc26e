"""params.yaml validation: typed sections, errors name file, line and key."""

from pathlib import Path

import pytest

from selfreward.config.errors import UserError
from selfreward.config.params import load_params

ROOT = Path(__file__).resolve().parents[1]


def test_repo_params_load_with_paper_defaults_where_expected():
    p = load_params(ROOT / "params.yaml")
    assert p.responses.n == 4 and p.judge.samples == 3 and p.dpo.beta == 0.1
    assert p.prompts.generated_shots == 2 and p.judge.mode == "logprob"
    assert list(p.iterations) == ["1", "2"] and p.iterations["2"].next == "models/m3"


def test_gpu_profile_loads_and_carries_paper_numbers():
    p = load_params(ROOT / "params.gpu.yaml")
    assert p.judge.mode == "sample" and p.judge.samples == 3
    assert p.prompts.seed_shots == 6 and p.prompts.generated_shots == 2
    assert p.dpo.learning_rate == 1e-6 and p.dpo.final_learning_rate == 1e-7
    assert p.dpo.batch_size * p.dpo.grad_accum * p.launch.num_processes == 16
    assert p.sft.learning_rate == 5.5e-6 and p.sft.final_learning_rate == 1.1e-6


@pytest.mark.parametrize("text, line, field, words", [
    ("judge:\n  mode: logprob\n  sampels: 3\n", 3, "judge.sampels", "unknown key"),
    ("dpo:\n  beta: fast\n", 2, "dpo.beta", "expected number"),
    ("responses:\n  n: 4.5\n", 2, "responses.n", "expected integer"),
    ("judge:\n  mode: vibes\n", 2, "judge.mode", "one of"),
    ("promtps:\n  count: 3\n", 1, "promtps", "unknown key"),
    ("pairs:\n  min_margin: 0\n", 2, "pairs.min_margin", "ties"),
    ("responses:\n  n: 1\n", 2, "responses.n", "at least 2"),
    ("sft:\n  lora: {enabled: yes, r: many}\n", 2, "sft.lora.r", "expected integer"),
    ("iterations:\n  '1': {model: models/m1}\n", 2, "iterations.1", "incomplete"),
])
def test_bad_params_name_file_line_and_key(tmp_path, text, line, field, words):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        load_params(path)
    msg = err.value.format_message()
    assert f"{path}:{line}: field '{field}'" in msg and words in msg
    assert err.value.exit_code == 2


def test_invalid_yaml_reports_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("judge:\n  mode: [logprob\n")
    with pytest.raises(UserError, match=r"params.yaml:\d+: invalid YAML"):
        load_params(path)


def test_scientific_notation_without_dot_is_a_float(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("dpo:\n  learning_rate: 1e-6\n")
    assert load_params(path).dpo.learning_rate == 1e-6


def test_gpu_profile_resolves_every_dvc_yaml_interpolation(tmp_path):
    import shutil
    import subprocess
    import sys
    from pathlib import Path as P

    shutil.copy(ROOT / "dvc.yaml", tmp_path)
    shutil.copy(ROOT / "params.gpu.yaml", tmp_path / "params.yaml")
    dvc = P(sys.executable).parent / "dvc"
    subprocess.run([str(dvc), "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    out = subprocess.run([str(dvc), "stage", "list", "--name-only"], cwd=tmp_path, check=False,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert "dpo@2" in out.stdout.split() and "report" in out.stdout.split()
