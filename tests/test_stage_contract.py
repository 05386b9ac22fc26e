"""One stage contract (stages/__init__.py): stage `x_y` of every dvc.yaml runs `selfreward x-y`,
whose command calls `run_x_y` of stages/x_y.py; every module of stages/ is such a stage; stage
modules never import each other; entry functions take keyword-only arguments; no function of
the package has a one-letter parameter name."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from test_dvc_deps import PIPELINES, PKG, SRC, _imports, _module_name, cli_commands

STAGES = PKG / "stages"
# config/params.py is being rewritten on pydantic in another branch (issue 18, item 4).


def dvc_stages() -> dict[str, str]:
    """Stage name -> the cmd it runs, over every dvc.yaml of the project."""
    out = {}
    for pipeline in PIPELINES:
        for name, stage in yaml.safe_load(pipeline.read_text())["stages"].items():
            out[name] = stage.get("do", stage)["cmd"]
    return out


def stage_modules(folder: Path = STAGES) -> dict[str, Path]:
    return {path.stem: path for path in folder.glob("*.py") if path.name != "__init__.py"}


def cross_stage_imports(folder: Path = STAGES) -> list[str]:
    """`module -> module` for every import, module-level or inside a function, of one stage
    module by another (or of the stages package itself)."""
    found = []
    for name, path in sorted(stage_modules(folder).items()):
        module = f"selfreward.stages.{name}"
        for imported in sorted(_imports(ast.parse(path.read_text()), module, False)):
            if imported == "selfreward.stages" or imported.startswith("selfreward.stages."):
                found.append(f"{module} -> {imported}")
    return found


def test_every_stage_runs_its_command_module_and_entry():
    commands = cli_commands()
    for stage, cmd in dvc_stages().items():
        command = stage.replace("_", "-")
        assert re.match(rf"selfreward {command}(\s|$)", cmd), (stage, cmd)
        module = STAGES / f"{stage}.py"
        assert module.is_file(), f"stage {stage}: no {module.relative_to(SRC.parent)}"
        tree = ast.parse(module.read_text())
        assert f"run_{stage}" in {node.name for node in tree.body
                                  if isinstance(node, ast.FunctionDef)}, (stage, module)
        assert f"selfreward.stages.{stage}" in commands[command], (
            f"`selfreward {command}` does not call stages/{stage}.py")


def test_every_stage_module_is_a_dvc_stage():
    assert set(stage_modules()) == set(dvc_stages())


def test_stage_modules_never_import_each_other():
    assert cross_stage_imports() == []


def test_a_planted_cross_stage_import_is_caught(tmp_path):
    """The check above on a copy of stages/ where one stage imports another inside a function."""
    for path in stage_modules().values():
        (tmp_path / path.name).write_text(path.read_text())
    planted = tmp_path / "pairs.py"
    planted.write_text(planted.read_text() + "\n\ndef helper():\n"
                       "    from .judge import run_judge\n    return run_judge\n")
    assert cross_stage_imports(tmp_path) == [
        "selfreward.stages.pairs -> selfreward.stages.judge"]


@pytest.mark.parametrize("stage", sorted(stage_modules()))
def test_entry_takes_keyword_only_arguments(stage):
    tree = ast.parse((STAGES / f"{stage}.py").read_text())
    entry = next(node for node in tree.body
                 if isinstance(node, ast.FunctionDef) and node.name == f"run_{stage}")
    assert not entry.args.posonlyargs and not entry.args.args and entry.args.kwonlyargs, stage
    if stage != "report":  # the report rewrites its files from whatever metrics exist
        assert "stage_outputs" in ast.unparse(entry), f"run_{stage} skips core.outputs"


def test_no_one_letter_parameter_names():
    found = []
    for path in sorted(PKG.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args
                names = [a.arg for a in (*args.posonlyargs, *args.args, *args.kwonlyargs,
                                         args.vararg, args.kwarg) if a is not None]
                found += [f"{_module_name(path)}.{node.name}({name})" for name in names
                          if len(name) == 1 and name != "_"]
    assert found == []
