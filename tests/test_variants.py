"""benchmarks/variants.py (issue 19 item 5): the `dvc exp run` of a variant and seed, and the
table read back from hand-made metrics (the full comparison itself is not run in tests)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def variants():
    spec = importlib.util.spec_from_file_location("variants", ROOT / "benchmarks" / "variants.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_exp_command_sets_overrides_and_seeds(variants, tmp_path):
    path = tmp_path / "v.yaml"
    path.write_text("plain: {}\nlonger: {pairs.tie_break: shortest, responses.n: 6}\n")
    loaded = variants.load_variants(path)
    assert loaded == {"plain": {}, "longer": {"pairs.tie_break": "shortest", "responses.n": 6}}
    cmd = variants.exp_command("longer", loaded["longer"], 2)
    assert cmd[:5] == ["dvc", "exp", "run", "--name", "longer-s2"]
    assert "evaluate@1" in cmd and "verify@m2" in cmd
    sets = [cmd[i + 1] for i, arg in enumerate(cmd) if arg == "-S"]
    assert sets == ['pairs.tie_break="shortest"', "responses.n=6", "dpo.seed=2", "pairs.seed=2"]
    path.write_text("- not a mapping\n")
    with pytest.raises(SystemExit):
        variants.load_variants(path)


def test_figures_and_table_from_metrics(variants, tmp_path):
    def write(rel: str, obj: dict) -> None:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text(json.dumps(obj))

    write("metrics/iter1/eval.json", {
        "reward_gain": {"gain": 0.09, "length_controlled": {"intercept": 0.01}},
        "fixed_judge_gain": {"vs_prev": {"gain": 0.05}}, "answers_changed": {"share": 0.5},
        "ifeval_paired": {"vs_prev": {"prompt_level_loose": {"diff": -0.025}}}})
    write("metrics/verify/models/m2.json", {"strict": {"selection_gain": {"mean": -0.005}}})
    write("metrics/models/m2.json", {"length": {"mean_words": 37.9},
                                     "judge_agreement": {"pairwise_accuracy": 0.6},
                                     "relevance": {"accuracy": 0.9}})
    one = variants.read_figures(tmp_path, 61.23)
    assert one["at equal length"] == 0.01 and one["IFEval loose vs M1 (points)"] == -2.5
    assert one["selection gain M2 (points)"] == -0.5 and one["wall s"] == 61.2
    other = {**one, "reward gain": 0.11, "at equal length": None}
    md = variants.table({"plain": [one, other]})
    assert md.splitlines()[2].startswith("| plain | 2 | +0.100 (+0.090, +0.110) | +0.010 (+0.010) |")
