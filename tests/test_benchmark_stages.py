"""The optional external-evaluation stages (pipelines/external_evals/dvc.yaml) exist only for the
models listed in params: a plain `dvc repro`, which reads every dvc.yaml in the repository, must
not need AlpacaEval's data, an annotator key or the hub on the default profile."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from selfreward.config.errors import UserError
from selfreward.config.params import load_params

ROOT = Path(__file__).resolve().parents[1]
DVC = [sys.executable, "-m", "dvc"]


def _stages(tmp_path: Path, params: dict) -> set[str]:
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "dvc.yaml", repo)
    shutil.copytree(ROOT / "pipelines", repo / "pipelines")
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run([*DVC, "init", "-q"], cwd=repo, check=True)
    out = subprocess.run([*DVC, "stage", "list", "--all"], cwd=repo, check=True,
                         capture_output=True, text=True).stdout
    return {line.split()[0] for line in out.splitlines() if line.strip()}


def test_default_profiles_have_no_benchmark_stages(tmp_path):
    for name in ("params.yaml", "params.gpu.yaml"):
        params = yaml.safe_load((ROOT / name).read_text())
        assert params["alpaca_eval"]["models"] == [] and params["lm_eval"]["models"] == [], name
    stages = _stages(tmp_path, yaml.safe_load((ROOT / "params.yaml").read_text()))
    assert "sft" in stages and "report" in stages
    assert not {s for s in stages if re.search(r"alpaca|lm_eval", s)}


def test_listed_models_get_their_stages(tmp_path):
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["alpaca_eval"]["models"] = ["m2"]
    params["lm_eval"]["models"] = ["m0", "m1"]
    bench = {s.split(":")[-1] for s in _stages(tmp_path, params) if "pipelines/" in s}
    assert bench == {"alpaca_outputs@m2", "alpaca_eval@m2", "lm_eval@m0", "lm_eval@m1"}


@pytest.mark.parametrize("models", ["[models/m1]", "[m1, m1]", "[best]"])
def test_model_names_are_validated(tmp_path, models):
    path = tmp_path / "params.yaml"
    path.write_text(f"lm_eval: {{models: {models}}}\n")
    with pytest.raises(UserError, match=r"lm_eval\.models"):
        load_params(path)
