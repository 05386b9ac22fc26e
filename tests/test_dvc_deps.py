"""dvc.yaml lists everything a stage reads, so `dvc repro` reruns every stage a change affects.

For every stage, the project modules its command imports (transitively, by static analysis of
`src/selfreward`) and the templates those modules read must be DVC dependencies of the stage.
`cli.py` itself is left out: it hosts every command, and a command only parses options and calls
its stage function. A folder dependency (`src/selfreward/core`) stands for the files under it
(`__pycache__` aside: .dvcignore); it is allowed where the stage reads at least half of those
files and every file of it that the stage does not read is read by a stage upstream of it, so an
edit there reruns this stage after that one anyway (test_folder_deps_are_justified). Also: the
package has no import cycles, and a real `dvc status` marks exactly the stages an edit affects.
"""

from __future__ import annotations

import ast
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PKG = SRC / "selfreward"
TEMPLATES = {p.stem: p for p in (PKG / "templates").glob("*.txt")}
# Templates a param can replace with the user's file: the stage then reads the param's file.
TEMPLATE_PARAMS = {"judge": "judge.template", "pairwise_judge": "eval.pairwise_template",
                   "meta_judge": "meta_judge.template"}
PIPELINES = [ROOT / "dvc.yaml", ROOT / "pipelines" / "external_evals" / "dvc.yaml"]


def module_file(name: str) -> Path | None:
    """The source file of module `selfreward.x.y` (a package's __init__.py), or None."""
    base = SRC.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _walk(tree: ast.AST):
    """ast.walk, minus `if TYPE_CHECKING:` blocks (imports for type hints only)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def _imports(tree: ast.AST, module: str, is_package: bool) -> set[str]:
    """Project modules imported anywhere in `tree` (function-level imports included)."""
    found: set[str] = set()
    package = module if is_package else module.rpartition(".")[0]
    for node in _walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{base}.{node.module}" if node.module else base
            else:
                base = node.module or ""
            if not base.startswith("selfreward"):
                continue
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.add(sub if module_file(sub) else base)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("selfreward")}
    return {m for m in found if module_file(m)}


def module_imports(module: str) -> set[str]:
    path = module_file(module)
    return _imports(ast.parse(path.read_text()), module, path.name == "__init__.py")


def closure(modules: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        module = todo.pop()
        if module not in seen:
            seen.add(module)
            todo += module_imports(module) - seen
    return seen


def templates_read(modules: set[str]) -> set[str]:
    """Template names a set of modules reads: string constants naming a template file, in the
    modules that load templates (those defining or importing `template` / `user_template`)."""
    names: set[str] = set()
    for module in modules:
        tree = ast.parse(module_file(module).read_text())
        loaders = {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)
                   for a in n.names} | {n.name for n in ast.walk(tree)
                                        if isinstance(n, ast.FunctionDef)}
        if not loaders & {"template", "user_template"}:
            continue
        docstrings = {id(n.body[0].value) for n in ast.walk(tree)
                      if isinstance(n, (ast.Module, ast.FunctionDef, ast.ClassDef)) and n.body
                      and isinstance(n.body[0], ast.Expr)}
        names |= {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)
                  and isinstance(n.value, str) and n.value in TEMPLATES
                  and id(n) not in docstrings}
    return names


def cli_commands() -> dict[str, set[str]]:
    """`selfreward` subcommand -> the project modules its function imports (cli.py's own
    module-level imports included, and those of the cli.py helpers it calls, e.g. `_relaunch`)."""
    tree = ast.parse((PKG / "cli.py").read_text())
    top = _imports(ast.Module(body=[n for n in tree.body if not isinstance(n, ast.FunctionDef)],
                              type_ignores=[]), "selfreward.cli", False)
    helpers = {node.name: _imports(node, "selfreward.cli", False) for node in tree.body
               if isinstance(node, ast.FunctionDef)}
    commands = {}
    for node in tree.body:
        for deco in getattr(node, "decorator_list", []):
            if (isinstance(deco, ast.Call) and isinstance(deco.func, ast.Attribute)
                    and deco.func.attr == "command"):
                name = deco.args[0].value if deco.args else node.name.replace("_", "-")
                called = {call.func.id for call in ast.walk(node) if isinstance(call, ast.Call)
                          and isinstance(call.func, ast.Name) and call.func.id in helpers}
                commands[name] = top | _imports(node, "selfreward.cli", False).union(
                    *(helpers[helper] for helper in called))
    return commands


COMMANDS = cli_commands()


def params_value(params: dict, dotted: str):
    value = params
    for part in dotted.split("."):
        value = value[part]
    return value


def resolve(text: str, params: dict) -> str | None:
    """`${a.b}` from params.yaml; None for a foreach `${item...}`/`${key}` (a model path)."""
    if re.search(r"\$\{(item|key)\b", text):
        return None
    return re.sub(r"\$\{([^}]+)\}", lambda m: str(params_value(params, m.group(1))), text)


def command_of(cmd: str) -> str:
    """The `selfreward` subcommand a stage's cmd runs."""
    return re.match(r"selfreward\s+([\w-]+)", cmd)[1]


def stages(params: dict) -> dict[str, dict]:
    """Every stage of both pipelines: {name: {command, deps}} (a foreach stage once)."""
    out = {}
    for pipeline in PIPELINES:
        for name, stage in yaml.safe_load(pipeline.read_text())["stages"].items():
            body = stage.get("do", stage)
            deps = {d for d in (resolve(str(dep), params) for dep in body.get("deps", [])) if d}
            out[f"{pipeline.relative_to(ROOT)}:{name}"] = {"command": command_of(body["cmd"]),
                                                           "deps": deps}
    return out


def required_files(command: str, params: dict) -> set[str]:
    """Repository paths of every module and template the command reads."""
    modules = closure(cli_commands()[command])
    files = {str(module_file(m).relative_to(ROOT)) for m in modules}
    for name in templates_read(modules):
        path = params_value(params, TEMPLATE_PARAMS[name]) if name in TEMPLATE_PARAMS else None
        files.add(path or str(TEMPLATES[name].relative_to(ROOT)))
    return files


def covered(path: str, deps: set[str]) -> bool:
    return any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps)


def _has_code(path: Path) -> bool:
    body = ast.parse(path.read_text()).body
    return bool(body[1:] if body and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant) else body)


def folder_files(folder: str) -> set[str]:
    """The files a folder dependency stands for: all under it but bytecode (.dvcignore) and a
    package's code-free __init__.py (nothing to read there)."""
    return {str(path.relative_to(ROOT)) for path in (ROOT / folder).rglob("*")
            if path.is_file() and "__pycache__" not in path.parts
            and not (path.name == "__init__.py" and not _has_code(path))}


def folder_deps(deps) -> set[str]:
    return {d for d in deps if d.startswith("src/") and (ROOT / d).is_dir()}


@pytest.fixture(scope="module")
def params() -> dict:
    return yaml.safe_load((ROOT / "params.yaml").read_text())


def test_analysis_sees_lazy_and_package_imports(params):
    judge = closure(cli_commands()["judge"])
    assert {"selfreward.stages.judge", "selfreward.generation.engines", "selfreward.generation.engines.hf",
            "selfreward.generation.engines.vllm", "selfreward.judge.rubric", "selfreward.core.models"} <= judge
    assert "selfreward.training.distill" not in judge
    assert templates_read(closure(cli_commands()["self-instruct"])) >= {
        "self_instruct_instances_output_first", "self_instruct_instances_input_first"}
    assert "src/selfreward/templates/judge_compact.txt" in required_files("sft", params)
    assert "prompt_generation" not in templates_read(closure(cli_commands()["sft"]))


def test_every_stage_lists_every_module_and_template_it_reads(params):
    missing = {}
    for name, stage in stages(params).items():
        lacking = sorted(f for f in required_files(stage["command"], params)
                         if not covered(f, stage["deps"]))
        if lacking:
            missing[name] = lacking
    assert not missing, f"dvc.yaml lacks dependencies: {missing}"


def test_every_listed_source_file_exists(params):
    for name, stage in stages(params).items():
        for dep in stage["deps"]:
            if dep.startswith("src/"):
                assert (ROOT / dep).exists(), f"{name}: {dep} does not exist"


# Every optional stage on: one Open Assistant export, AlpacaEval and lm-eval for one model.
ALL_STAGES = {"oasst": {"exports": {"x": "data/oasst/x.jsonl"}},
              "alpaca_eval": {"models": ["m1"]}, "lm_eval": {"models": ["m1"]}}


@pytest.fixture(scope="module")
def dag(tmp_path_factory) -> tuple[dict, dict[str, dict]]:
    """(params, every stage of both pipelines as DVC expands it with these params: foreach items
    resolved, optional stages on): {address: {command, deps, upstream}}, upstream = the
    addresses of the stages it depends on, directly or not."""
    import networkx as nx
    from dvc.repo import Repo

    repo = tmp_path_factory.mktemp("dag")
    shutil.copy(ROOT / "dvc.yaml", repo)
    shutil.copytree(ROOT / "pipelines", repo / "pipelines")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in ALL_STAGES.items():
        params[section].update(values)
    (repo / "params.yaml").write_text(yaml.safe_dump(params))
    _run(repo, str(Path(sys.executable).parent / "dvc"), "init", "-q", "--no-scm")
    with Repo(str(repo)) as dvc_repo:
        graph = dvc_repo.index.graph  # an edge runs from a stage to a stage it depends on
        def address(stage) -> str:
            return f"{stage.path_in_repo}:{stage.name}"

        return params, {address(stage): {
            "command": command_of(stage.cmd), "deps": {str(dep.def_path) for dep in stage.deps},
            "upstream": {address(up) for up in nx.descendants(graph, stage)}}
            for stage in dvc_repo.index.stages}


def test_folder_deps_are_justified(dag):
    """A folder stands for its files where the stage reads at least half of them and each file
    it does not read is read upstream: an edit there reruns that stage and this one after it."""
    params, expanded = dag
    reads = {name: required_files(stage["command"], params) for name, stage in expanded.items()}
    assert len(expanded) > 30 and {"seed_judge@x", "lm_eval@m1"} <= {
        name.rpartition(":")[2] for name in expanded}
    assert any(folder_deps(stage["deps"]) for stage in expanded.values())
    for name, stage in expanded.items():
        for folder in folder_deps(stage["deps"]):
            files = folder_files(folder)
            unread = files - reads[name]
            assert len(unread) * 2 <= len(files), (name, folder, sorted(unread))
            for file in unread:
                assert any(file in reads[up] for up in stage["upstream"]), (
                    f"{name}: {folder} stands for {file}, which neither it nor a stage "
                    "upstream of it reads")


def test_readme_advises_dvc_status_and_dag_and_analytics_are_off():
    """`dvc repro --dry` fails on a fresh clone (uncached outputs): the README says what to use."""
    readme = (ROOT / "README.md").read_text()
    assert "`dvc status`" in readme and "`dvc dag`" in readme
    assert "not `dvc repro --dry`" in readme
    config = (ROOT / ".dvc" / "config").read_text()
    assert re.search(r"^\[core\][^\[]*^\s*analytics = false$", config, re.MULTILINE)


def _import_graph(module_level_only: bool) -> dict[str, set[str]]:
    graph = {}
    for path in PKG.rglob("*.py"):
        module = _module_name(path)
        tree = ast.parse(path.read_text())
        if module_level_only:
            tree = ast.Module(body=[n for n in tree.body if isinstance(n, (ast.Import,
                                                                            ast.ImportFrom))],
                              type_ignores=[])
        graph[module] = _imports(tree, module, path.name == "__init__.py") - {module}
    return graph


@pytest.mark.parametrize("module_level_only", [True, False])
def test_no_import_cycles(module_level_only):
    graph = _import_graph(module_level_only)
    state: dict[str, int] = {}

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(graph.get(module, ())):
            if state.get(dep) == 1:
                raise AssertionError("import cycle: " + " -> ".join(path + [module, dep]))
            if dep not in state:
                visit(dep, path + [module])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [])


# -- the real `dvc status` after edits -------------------------------------------------------------
def _run(repo: Path, *cmd: str) -> str:
    done = subprocess.run(cmd, cwd=repo, capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"{cmd}: {done.stdout}\n{done.stderr}"
    return done.stdout


def _placeholder_outputs(repo: Path) -> None:
    """Every stage output as a small file or folder, so that `dvc commit` can record a lock."""
    from dvc.repo import Repo

    with Repo(str(repo)) as dvc_repo:
        outs = [Path(out.fs_path) for stage in dvc_repo.index.stages for out in stage.outs]
    for path in outs:
        if path.suffix:  # a file (metrics, plots, JSONL)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text("{}\n")
        else:  # a checkpoint or eval directory
            path.mkdir(parents=True, exist_ok=True)
            (path / "placeholder.txt").write_text("x\n")


@pytest.fixture(scope="module")
def locked_repo(tmp_path_factory) -> Path:
    """A git + DVC copy of the pipeline with a lock recorded over placeholder outputs."""
    repo = tmp_path_factory.mktemp("dvc-status") / "repo"
    repo.mkdir()
    for name in ("dvc.yaml", "params.yaml", ".dvcignore"):
        shutil.copy(ROOT / name, repo)
    shutil.copytree(ROOT / "data" / "seed", repo / "data" / "seed")
    shutil.copytree(PKG, repo / "src" / "selfreward", ignore=shutil.ignore_patterns("__pycache__"))
    dvc = str(Path(sys.executable).parent / "dvc")
    _run(repo, "git", "init", "-q")
    _run(repo, dvc, "init", "-q")
    _run(repo, dvc, "config", "core.analytics", "false")
    _placeholder_outputs(repo)
    _run(repo, dvc, "commit", "-f", "-q")
    assert "up to date" in _run(repo, dvc, "status")
    # Python caches what it imports next to the sources: no folder dependency may change
    cache = repo / "src" / "selfreward" / "core" / "__pycache__"
    cache.mkdir()
    (cache / "io.cpython-312.pyc").write_bytes(b"bytecode")
    assert "up to date" in _run(repo, dvc, "status")
    return repo


def _edits_mark_exactly_their_stages(repo: Path, params: dict, edits: list[str] | None) -> None:
    """Edit one file at a time: `dvc status` must mark exactly the stages whose command reads it
    (by the analysis above) and those with a folder dependency over it (each such file is read
    upstream of them: test_folder_deps_are_justified); never a stage through a file dependency
    it does not read. `edits` None = every module and template some stage reads."""
    from dvc.repo import Repo

    main = {name.split(":", 1)[1]: stage for name, stage in stages(params).items()
            if name.startswith("dvc.yaml:")}
    needs = {name: required_files(stage["command"], params) for name, stage in main.items()}
    folders = {name: folder_deps(stage["deps"]) for name, stage in main.items()}
    if edits is None:
        edits = sorted(set().union(*needs.values()))
        assert len(edits) > 30 and any(path.endswith(".txt") for path in edits)
    with Repo(str(repo)) as dvc_repo:
        # a foreach over an empty list (the seed stages by default) makes no stage
        known = {stage.addressing.rpartition(":")[2].split("@")[0]
                 for stage in dvc_repo.index.stages}
        needs = {name: files for name, files in needs.items() if name in known}
        for edited in edits:
            readers = {name for name, files in needs.items() if edited in files}
            if not readers:
                continue  # read only by stages that do not exist with these params
            file = repo / edited
            original = file.read_text()
            file.write_text(original + "\n# edited\n")
            status = dvc_repo.status()
            file.write_text(original)
            # in-process names carry the dvc.yaml path relative to the cwd: "<path>:stage@key"
            marked = {name.rpartition("dvc.yaml:")[2].split("@")[0]
                      for name, changes in status.items()
                      if any("changed deps" in c for c in changes if isinstance(c, dict))}
            expected = readers | {name for name in needs if covered(edited, folders[name])}
            assert marked == expected, (edited, marked ^ expected)


def test_dvc_status_marks_the_stages_an_edit_affects(locked_repo, params):
    """Modules and templates the old dvc.yaml missed for some stage (prompting.py for judge,
    engines/ for prompts, judge_compact.txt for sft, seed.py, evaluation.py, shards.py)."""
    _edits_mark_exactly_their_stages(locked_repo, params, [
        "src/selfreward/judge/rubric.py", "src/selfreward/generation/engines/hf.py",
        "src/selfreward/templates/prompt_generation.txt",
        "src/selfreward/templates/judge_compact.txt", "src/selfreward/data/seed.py",
        "src/selfreward/evaluation/metrics.py", "src/selfreward/core/shards.py"])


@pytest.mark.slow
def test_dvc_status_marks_the_stages_of_every_module_and_template(locked_repo, params):
    """The same for each of the ~45 files some stage reads (~3 min on 2 busy cores)."""
    _edits_mark_exactly_their_stages(locked_repo, params, None)
