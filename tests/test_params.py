"""params.yaml validation: typed sections, errors name file, line and key."""

import json
import typing
from pathlib import Path

import annotated_types
import pytest
import yaml
from click.testing import CliRunner
from pydantic import BaseModel

from selfreward.cli import main
from selfreward.config.errors import UserError
from selfreward.config.params import Params, load_params

ROOT = Path(__file__).resolve().parents[1]


def test_repo_params_load_with_paper_defaults_where_expected():
    p = load_params(ROOT / "params.yaml")
    assert p.responses.n == 4 and p.judge.samples == 3 and p.dpo.beta == 0.1
    assert p.prompts.generated_shots == 2 and p.judge.mode == "logprob"
    assert list(p.iterations) == ["1", "2"] and p.iterations["2"].next == "models/m3"
    assert p.models == {f"m{i}": f"models/m{i}" for i in range(4)}


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


def _models(model: type[BaseModel]) -> typing.Iterator[type[BaseModel]]:
    """`model` and every model its fields hold (nested, in dicts, lists or unions), once each."""
    seen, todo = [], [model]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.append(current)
        for info in current.model_fields.values():
            types, kinds = [info.annotation], []
            while types:
                tp = types.pop()
                kinds.append(tp)
                types += typing.get_args(tp)
            todo += [t for t in kinds if isinstance(t, type) and issubclass(t, BaseModel)]
    return iter(seen)


def _problems(model: type[BaseModel]) -> list[str]:
    """Fields of `model` (and the models below it) without a description, or numeric without
    a bound."""
    bounds = (annotated_types.Gt, annotated_types.Ge, annotated_types.Lt, annotated_types.Le)
    problems = []
    for current in _models(model):
        for name, info in current.model_fields.items():
            where = f"{current.__name__}.{name}"
            if not (info.description or "").strip():
                problems.append(f"{where}: no description")
            numeric = {int, float} & set(typing.get_args(info.annotation) or [info.annotation])
            if numeric and not any(isinstance(m, bounds) for m in info.metadata):
                problems.append(f"{where}: a number without a bound")
    return problems


def test_every_field_is_described_and_every_number_bounded():
    assert len(list(_models(Params))) > 20  # the walk reaches the nested sections
    assert _problems(Params) == []


def test_the_walker_finds_an_undescribed_or_unbounded_field():
    class Inner(BaseModel):
        count: int = 3

    class Outer(BaseModel):
        inner: dict[str, Inner] = {}

    assert _problems(Outer) == ["Outer.inner: no description", "Inner.count: no description",
                                "Inner.count: a number without a bound"]


@pytest.fixture(scope="module")
def schema(tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("schema") / "params.schema.json"
    res = CliRunner().invoke(main, ["params-schema", "--out", str(out)])
    assert res.exit_code == 0, res.output
    return json.loads(out.read_text())


def test_params_schema_command_documents_editor_use():
    res = CliRunner().invoke(main, ["params-schema", "--help"])
    assert res.exit_code == 0 and "yaml-language-server" in res.output and "--out" in res.output
    res = CliRunner().invoke(main, ["params-schema"])
    assert res.exit_code == 0 and json.loads(res.output) == Params.model_json_schema()


def test_schema_has_every_field_described_and_bounded(schema):
    def resolve(node: dict) -> dict:
        ref = node.get("$ref") or next((a["$ref"] for a in node.get("anyOf", []) if "$ref" in a),
                                       None)
        return schema["$defs"][ref.split("/")[-1]] if ref else node

    def check(node: dict, model: type[BaseModel], where: str) -> None:
        assert set(node["properties"]) == set(model.model_fields), where
        for name, info in model.model_fields.items():
            prop = node["properties"][name]
            assert prop["description"] == info.description, f"{where}.{name}"
            if prop.get("type") in ("integer", "number"):  # bounds as JSON Schema keywords
                assert {"minimum", "exclusiveMinimum", "maximum", "exclusiveMaximum"} & set(prop)
                assert not {"gt", "ge", "lt", "le"} & set(prop), f"{where}.{name}: {prop}"
            target = prop.get("additionalProperties", prop)
            nested = [t for t in typing.get_args(info.annotation) + (info.annotation,)
                      if isinstance(t, type) and issubclass(t, BaseModel)]
            if nested:
                check(resolve(target), nested[0], f"{where}.{name}")

    check(schema, Params, "params")


@pytest.mark.parametrize("profile", ["params.yaml", "params.gpu.yaml"])
def test_schema_validates_the_shipped_profiles(schema, profile):
    jsonschema = pytest.importorskip("jsonschema")  # the walk above covers the schema without it
    data = yaml.safe_load((ROOT / profile).read_text())
    jsonschema.validate(data, schema)
    data["sft"]["grad_accum"] = -1
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(data, schema)


@pytest.mark.parametrize("text, line, field, words", [
    ("iterations:\n  '1': {model: models/m2, next: models/m3}\n", 2, "iterations.1.model",
     "must be models/m1"),
    (("iterations:\n  '1': {model: models/m1, next: models/m2}\n"
      "  '2': {model: models/m1, next: models/m3}\n"), 3, "iterations.2.model",
     "must be models/m2"),
    ("iterations:\n  '1': {model: models/m1, next: models/m0}\n", 2, "iterations.1.next",
     "earlier"),
    # a missing `models` section: the line of the iteration whose next has no entry
    ("iterations:\n  1: {model: models/m1, next: models/m2}\n", 2, "models", "models/m2"),
    (("iterations:\n  1: {model: models/m1, next: models/m2}\n"
      "models: {m0: models/m0, m1: models/m1}\n"), 3, "models", "no entry for models/m2"),
    ("models:\n  m0: models/m0\n  m1: models/m1\n  m2: models/m2\n", 4, "models.m2",
     "no checkpoint the pipeline makes"),
    ("models:\n  m0: models/m0\n  m1: models/m1\n  again: models/m1\n", 4, "models.again",
     "twice"),
    ("models:\n  m0: models/m0\n", 1, "models.m1", "must be models/m1"),
    ("models:\n  m0: models/base\n  m1: models/m1\n", 2, "models.m0", "must be models/m0"),
    ("sft:\n  lora: {target_modules: 5}\n", 2, "sft.lora.target_modules",
     "expected string or list"),
    ("prompts:\n  blacklist: [map, 3]\n", 2, "prompts.blacklist[1]", "expected string"),
    ("dpo:\n  learning_rate: .inf\n", 2, "dpo.learning_rate", "finite"),
    ("engine:\n  batch_size: true\n", 2, "engine.batch_size", "expected integer"),
])
def test_bad_iterations_and_models_name_the_key(tmp_path, text, line, field, words):
    path = tmp_path / "params.yaml"
    path.write_text(text)
    with pytest.raises(UserError) as err:
        load_params(path)
    assert (err.value.line, err.value.field) == (line, field), str(err.value)
    assert words in str(err.value)


def test_models_follow_the_iterations(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("iterations:\n  1: {model: models/m1, next: models/m2}\n"
                    "models: {m0: models/m0, m1: models/m1, m2: models/m2}\n")
    p = load_params(path)
    assert list(p.iterations) == ["1"] and set(p.models) == {"m0", "m1", "m2"}
    assert load_params(_write(tmp_path, "{}\n")).models == {"m0": "models/m0", "m1": "models/m1"}


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return path
