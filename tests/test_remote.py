"""Remote storage for real: an S3 server (moto) on 127.0.0.1 with IAM auth enforced, a tiny DVC
pipeline pushed with `make push`, pulled into a fresh clone with `make pull`, `dvc repro --pull`
fetching only what changed stages need, and the failures (wrong keys, unreachable endpoint, no
remote) that must fail loudly with a hint and leave local files alone."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BUCKET = "selfreward-test"

STEP = '''"""prepare -> train -> evaluate, and an independent report stage."""
import json
import os
import sys

import yaml

params = yaml.safe_load(open("params.yaml"))
stage = sys.argv[1]
if stage == "prepare":
    open("data.txt", "w").write("".join(f"{i}\\n" for i in range(params["prepare"]["n"])))
elif stage == "train":
    os.makedirs("model", exist_ok=True)
    total = sum(int(x) for x in open("data.txt").read().split())
    open("model/weights.txt", "w").write(str(total * params["train"]["lr"]))
    open("model/config.txt", "w").write(f"lr={params['train']['lr']}\\n")
elif stage == "evaluate":
    json.dump({"score": float(open("model/weights.txt").read())}, open("metrics.json", "w"))
elif stage == "report":
    open("report.txt", "w").write("independent of train\\n")
'''

DVC_YAML = """stages:
  prepare:
    cmd: python step.py prepare
    deps: [step.py]
    params: [prepare]
    outs: [data.txt]
  train:
    cmd: python step.py train
    deps: [step.py, data.txt]
    params: [train]
    outs: [model]
  evaluate:
    cmd: python step.py evaluate
    deps: [step.py, model]
    metrics: [{metrics.json: {cache: false}}]
  report:
    cmd: python step.py report
    deps: [step.py]
    outs: [report.txt]
"""


@pytest.fixture(scope="module")
def s3():
    """A moto S3 server on 127.0.0.1 that checks signatures: one IAM user allowed s3:*."""
    import boto3
    from moto import settings
    from moto.core.responses import ActionAuthenticatorMixin
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    saved = settings.INITIAL_NO_AUTH_ACTION_COUNT
    # The next 4 requests (user, key, policy, bucket) go unchecked; every later one is verified.
    settings.INITIAL_NO_AUTH_ACTION_COUNT = 4
    ActionAuthenticatorMixin.request_count = 0
    try:
        boot = {"endpoint_url": endpoint, "region_name": "us-east-1",
                "aws_access_key_id": "bootstrap", "aws_secret_access_key": "bootstrap"}
        iam = boto3.client("iam", **boot)
        iam.create_user(UserName="pipeline")
        key = iam.create_access_key(UserName="pipeline")["AccessKey"]
        iam.put_user_policy(UserName="pipeline", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        boto3.client("s3", **boot).create_bucket(Bucket=BUCKET)
        client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1",
                              aws_access_key_id=key["AccessKeyId"],
                              aws_secret_access_key=key["SecretAccessKey"])
        yield {"endpoint": endpoint, "key": key["AccessKeyId"],
               "secret": key["SecretAccessKey"], "client": client}
    finally:
        settings.INITIAL_NO_AUTH_ACTION_COUNT = saved
        server.stop()


@pytest.fixture(scope="module")
def env(s3, tmp_path_factory):
    """Subprocess environment: credentials only in env vars, no user-level AWS/DVC/git config."""
    home = tmp_path_factory.mktemp("home")
    keep = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "DVC_", "GIT_"))}
    return {**keep, "HOME": str(home), "PATH": f"{Path(sys.executable).parent}{os.pathsep}"
            f"{keep['PATH']}", "AWS_ACCESS_KEY_ID": s3["key"],
            "AWS_SECRET_ACCESS_KEY": s3["secret"], "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": str(home / "none"),
            "AWS_SHARED_CREDENTIALS_FILE": str(home / "none"),
            # Without keys botocore would ask the EC2 metadata address: stay on 127.0.0.1.
            "AWS_EC2_METADATA_DISABLED": "true",
            "DVC_NO_ANALYTICS": "1", "DVC_GLOBAL_CONFIG_DIR": str(home / "dvc-global"),
            "DVC_SYSTEM_CONFIG_DIR": str(home / "dvc-system"),
            "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@example.org",
            "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@example.org",
            "MAKEFLAGS": ""}


def sh(args: list[str], cwd: Path, env: dict, ok: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=180,
                          check=False)
    if ok:
        assert proc.returncode == 0, f"{args}: {proc.stdout}\n{proc.stderr}"
    return proc


@pytest.fixture(scope="module")
def origin(s3, env, tmp_path_factory) -> Path:
    """The project repo: pipeline run once, remote set by `make remote`, pushed by `make push`."""
    repo = tmp_path_factory.mktemp("origin")
    for name in ("Makefile", "requirements.lock", "pyproject.toml"):
        shutil.copy2(ROOT / name, repo / name)
    (repo / "step.py").write_text(STEP)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    (repo / "params.yaml").write_text("prepare: {n: 10}\ntrain: {lr: 0.5}\n")
    sh(["git", "init", "-q", "-b", "main"], repo, env)
    sh(["dvc", "init", "-q"], repo, env)
    sh(["dvc", "repro", "-q"], repo, env)
    sh(["make", "remote", f"URL=s3://{BUCKET}/cache", f"ENDPOINT={s3['endpoint']}"], repo, env)
    sh(["git", "add", "-A"], repo, env)
    sh(["git", "commit", "-qm", "pipeline + remote"], repo, env)
    out = sh(["make", "push"], repo, env)
    assert "pushed" in out.stdout + out.stderr
    return repo


def cache_files(repo: Path) -> set[str]:
    """md5 hashes of the objects in a repo's DVC cache."""
    base = repo / ".dvc" / "cache" / "files" / "md5"
    return {p.parent.name + p.name for p in base.glob("*/*")} if base.is_dir() else set()


def lock_hashes(repo: Path) -> dict[str, str]:
    """Cached output path -> md5 (directories: the .dir object) from dvc.lock."""
    import yaml

    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o["md5"] for s in lock["stages"].values() for o in s.get("outs", [])
            if o["path"] != "metrics.json"}  # cache: false, never pushed


def snapshot(repo: Path) -> dict[str, str]:
    """Every file outside .git with its content hash (what 'nothing local is lost' compares)."""
    return {str(p.relative_to(repo)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in sorted(repo.rglob("*")) if p.is_file() and ".git" not in p.parts
            and "tmp" not in p.relative_to(repo).parts[:2]}


def remote_objects(s3) -> set[str]:
    listed = s3["client"].list_objects_v2(Bucket=BUCKET, Prefix="cache/").get("Contents", [])
    return {o["Key"].split("/")[-2] + o["Key"].split("/")[-1] for o in listed}


def test_push_stores_every_output_and_no_secret_in_git(origin, s3):
    outs = lock_hashes(origin)
    model = json.loads((origin / ".dvc/cache/files/md5" / outs["model"][:2] /
                        outs["model"][2:]).read_text())
    expected = set(outs.values()) | {f["md5"] for f in model}
    assert len(expected) == 5 and expected <= remote_objects(s3)
    config = (origin / ".dvc" / "config").read_text()
    assert s3["endpoint"] in config and f"s3://{BUCKET}/cache" in config
    tracked = subprocess.run(["git", "grep", "-l", "-F", s3["secret"]], cwd=origin,
                             capture_output=True, text=True, check=False)
    assert tracked.stdout == "", "a credential ended up in a git-tracked file"


def test_fresh_clone_pulls_and_is_up_to_date(origin, env, tmp_path):
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
    assert not (clone / "model").exists()
    sh(["make", "pull"], clone, env)
    status = sh(["dvc", "status", "--json"], clone, env)
    assert json.loads(status.stdout) == {}
    repro = sh(["dvc", "repro"], clone, env)
    assert "Running stage" not in repro.stdout
    for path in ("data.txt", "model/weights.txt", "model/config.txt", "report.txt"):
        assert (clone / path).read_bytes() == (origin / path).read_bytes(), path


def test_repro_pull_fetches_only_what_changed_stages_need(origin, env, tmp_path):
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
    assert cache_files(clone) == set()
    old = lock_hashes(origin)
    (clone / "params.yaml").write_text("prepare: {n: 10}\ntrain: {lr: 0.25}\n")
    out = sh(["dvc", "repro", "--pull", "--allow-missing"], clone, env).stdout
    ran = {line.split("'")[1] for line in out.splitlines() if line.startswith("Running stage")}
    assert ran == {"train", "evaluate"}
    cached = cache_files(clone)
    assert old["data.txt"] in cached  # train's input, pulled from the remote
    assert old["model"].removesuffix(".dir") + ".dir" not in cached  # retrained, not pulled
    old_model = json.loads((origin / ".dvc/cache/files/md5" / old["model"][:2] /
                            old["model"][2:]).read_text())
    assert not {f["md5"] for f in old_model} & cached
    assert old["report.txt"] not in cached and not (clone / "report.txt").exists()
    assert float(json.loads((clone / "metrics.json").read_text())["score"]) == 45 * 0.25


def test_wrong_credentials_fail_with_hint_and_keep_local_files(origin, env, tmp_path):
    bad = {**env, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    work = tmp_path / "work"
    sh(["git", "clone", "-q", str(origin), str(work)], tmp_path, env)
    sh(["make", "pull"], work, env)
    (work / "extra.txt").write_text("new local data, not on the remote yet\n")
    sh(["dvc", "add", "-q", "extra.txt"], work, env)
    before = snapshot(work)
    push = sh(["make", "push"], work, bad, ok=False)
    assert push.returncode != 0
    assert "ERROR" in push.stderr and "Forbidden" in push.stderr  # DVC's own message (HTTP 403)
    assert "hint: check the URL/endpoint" in push.stderr and "AWS_ACCESS_KEY_ID" in push.stderr
    assert snapshot(work) == before
    fresh = tmp_path / "fresh"
    sh(["git", "clone", "-q", str(origin), str(fresh)], tmp_path, env)
    cloned = snapshot(fresh)
    pull = sh(["make", "pull"], fresh, bad, ok=False)
    assert pull.returncode != 0 and "hint: check the URL/endpoint" in pull.stderr
    assert snapshot(fresh) == cloned
    sh(["make", "push"], work, env)  # with the right keys the same push goes through


def test_unreachable_endpoint_fails_with_hint(origin, env, tmp_path):
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
    (clone / "extra.txt").write_text("new local data\n")
    sh(["dvc", "add", "-q", "extra.txt"], clone, env)
    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    sh(["dvc", "remote", "modify", "--local", "storage", "endpointurl",
        f"http://127.0.0.1:{port}"], clone, env)
    before = snapshot(clone)
    # One attempt per request: botocore's retries (default 5, with back-off) only add minutes.
    push = sh(["make", "push"], clone, {**env, "AWS_MAX_ATTEMPTS": "1"}, ok=False)
    assert push.returncode != 0
    assert "Could not connect to the endpoint URL" in push.stderr
    assert "hint: check the URL/endpoint" in push.stderr
    assert snapshot(clone) == before


def test_missing_remote_fails_with_hint(env, tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("Makefile", "requirements.lock", "pyproject.toml"):
        shutil.copy2(ROOT / name, repo / name)
    sh(["git", "init", "-q"], repo, env)
    sh(["dvc", "init", "-q"], repo, env)
    (repo / "data.txt").write_text("local only\n")
    sh(["dvc", "add", "-q", "data.txt"], repo, env)
    before = snapshot(repo)
    push = sh(["make", "push"], repo, env, ok=False)
    assert push.returncode != 0
    assert "no remote specified" in push.stderr  # DVC's message
    assert "hint: no DVC remote is configured" in push.stderr and "make remote URL=" in push.stderr
    assert snapshot(repo) == before
    usage = sh(["make", "remote"], repo, env, ok=False)
    assert usage.returncode != 0 and "usage: make remote URL=s3://" in usage.stderr


def test_credentials_in_local_config_stay_out_of_git(origin, s3, env, tmp_path):
    """`dvc remote modify --local` keeps keys in .dvc/config.local, which git ignores."""
    clone = tmp_path / "clone"
    sh(["git", "clone", "-q", str(origin), str(clone)], tmp_path, env)
    no_keys = {k: v for k, v in env.items() if not k.startswith("AWS_ACCESS_KEY_ID")
               and k != "AWS_SECRET_ACCESS_KEY"}
    failed = sh(["make", "pull"], clone, no_keys, ok=False)
    assert failed.returncode != 0 and "Unable to locate credentials" in failed.stderr
    sh(["dvc", "remote", "modify", "--local", "storage", "access_key_id", s3["key"]], clone, env)
    sh(["dvc", "remote", "modify", "--local", "storage", "secret_access_key", s3["secret"]],
       clone, env)
    sh(["make", "pull"], clone, no_keys)
    assert (clone / "model" / "weights.txt").read_text() == "22.5"
    sh(["git", "check-ignore", "-q", ".dvc/config.local"], clone, env)
    assert sh(["git", "status", "--porcelain"], clone, env).stdout == ""
