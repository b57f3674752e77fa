"""A shared DVC cache on S3, against a real S3 server on 127.0.0.1 (moto's, started and stopped
by this module, with IAM checks on, so that wrong credentials are refused as on AWS).

Machine A runs the small pipeline (download@mnist -> train@simple_cnn), pushes its outputs and
run-cache (`dvc push --run-cache`) and its commits to a bare git repo, then loses its cache.
Machine B is a fresh clone: `dvc pull`, then `dvc repro` runs nothing. Machine C, another
fresh clone, runs an experiment with `dvc exp run --pull --allow-missing` and shares it with
`dvc exp push origin`; A gets it with `dvc exp pull origin`. Then the failures: wrong
credentials, an endpoint nobody listens on, an object missing from the bucket, each with DVC's
error and a cache whose every file still has the md5 it is named by.

Nothing leaves the machine: the endpoint is set on every remote, the AWS variables and config
files of the environment are dropped, the EC2 metadata lookup is off and 127.0.0.1 bypasses
any proxy."""
import hashlib
import json
import logging
import os
import shutil
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest
from small_pipeline import dvc, git, make

from helpers import closed_port, run_tool, stage_env

pytestmark = pytest.mark.e2e

BUCKET = "dvc-cache"
SHARED_LR = 0.004   # an experiment machine A ran and shared through the run-cache
PROXIES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy")
OUTPUTS = ("data/raw/mnist/train.pt", "data/raw/mnist/val.pt", "models/simple_cnn.pt")


@dataclass
class S3:
    endpoint: str
    key_id: str
    secret: str
    client: object

    def keys(self, prefix):
        pages = self.client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return [obj["Key"] for page in pages for obj in page.get("Contents", ())]


def moto_auth(endpoint, count):
    """Requests moto serves before it checks signatures and IAM policies (0: check all)."""
    request = urllib.request.Request(f"{endpoint}/moto-api/reset-auth", data=str(count).encode(),
                                     method="POST", headers={"Content-Type": "text/plain"})
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 200


@pytest.fixture(scope="module")
def s3():
    import boto3  # requirements-test.txt
    from moto.server import ThreadedMotoServer

    quiet = logging.getLogger("werkzeug")  # one log line per request otherwise
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    port = closed_port()
    endpoint = f"http://127.0.0.1:{port}"
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    local = pytest.MonkeyPatch()  # this process's own requests (boto3, urllib) skip any proxy
    for name in ("NO_PROXY", "no_proxy"):
        local.setenv(name, "127.0.0.1,localhost")
    try:
        setup = {"endpoint_url": endpoint, "region_name": "us-east-1",
                 "aws_access_key_id": "setup", "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName="dvc")
        key = iam.create_access_key(UserName="dvc")["AccessKey"]
        iam.put_user_policy(UserName="dvc", PolicyName="dvc-cache", PolicyDocument=json.dumps(
            {"Version": "2012-10-17",
             "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}))
        boto3.client("s3", **setup).create_bucket(Bucket=BUCKET)
        moto_auth(endpoint, 0)  # from here on, only the user's key is let in
        client = boto3.client("s3", **dict(setup, aws_access_key_id=key["AccessKeyId"],
                                           aws_secret_access_key=key["SecretAccessKey"]))
        yield S3(endpoint, key["AccessKeyId"], key["SecretAccessKey"], client)
    finally:
        try:
            moto_auth(endpoint, "inf")
        finally:
            server.stop()
            quiet.setLevel(level)
            local.undo()


def s3_env(base, tmp, **extra):
    """`base` without AWS settings, proxies or config files of this machine."""
    env = {k: v for k, v in base.items() if not k.startswith("AWS_") and k not in PROXIES}
    env.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(tmp / "no-aws-config"),
               AWS_SHARED_CREDENTIALS_FILE=str(tmp / "no-aws-credentials"),
               NO_PROXY="127.0.0.1,localhost", no_proxy="127.0.0.1,localhost")
    env.update(extra)
    return env


def md5(path):
    return hashlib.md5(Path(path).read_bytes()).hexdigest()


def cache_files(project):
    """{object name: md5 of its content} of the project's DVC cache."""
    root = Path(project) / ".dvc/cache/files/md5"
    return {f"{p.parent.name}{p.name.removesuffix('.dir')}": md5(p)
            for p in (root.rglob("*") if root.exists() else ()) if p.is_file()}


def assert_cache_sound(project):
    files = cache_files(project)
    assert all(name == digest for name, digest in files.items()), files
    return files


@dataclass
class Shared:
    base: Path
    origin: Path
    a: Path
    b: Path
    env: dict       # no credentials: machine A keeps them in .dvc/config.local
    creds: dict     # the clones' environment: credentials in AWS_* variables
    pushed: dict    # {output: md5} on machine A
    push: object
    pull: object
    repro: object
    seconds: dict

    def clone(self, name):
        git(self.base, "clone", "-q", str(self.origin), name, env=self.env)
        return self.base / name


@pytest.fixture(scope="module")
def shared(tmp_path_factory, mirror, s3):
    base = tmp_path_factory.mktemp("s3")
    env = s3_env(stage_env(mirror.resolve()), base)
    creds = dict(env, AWS_ACCESS_KEY_ID=s3.key_id, AWS_SECRET_ACCESS_KEY=s3.secret)
    a = make(base / "a", env)
    dvc(a, "repro", "train@simple_cnn", env=env)
    git(a, "add", "-A", env=env)
    git(a, "commit", "-q", "-m", "results", env=env)
    # the README's commands
    dvc(a, "remote", "add", "-d", "storage", f"s3://{BUCKET}/store", env=env)
    dvc(a, "remote", "modify", "storage", "endpointurl", s3.endpoint, env=env)
    dvc(a, "remote", "modify", "--local", "storage", "access_key_id", s3.key_id, env=env)
    dvc(a, "remote", "modify", "--local", "storage", "secret_access_key", s3.secret, env=env)
    assert s3.secret not in (a / ".dvc/config").read_text()
    status = git(a, "status", "--porcelain", env=env).stdout
    assert " M .dvc/config" in status and "config.local" not in status, status
    git(a, "commit", "-q", "-m", "DVC remote", ".dvc/config", env=env)
    origin = base / "origin.git"
    git(base, "init", "-q", "--bare", "-b", "main", str(origin), env=env)
    git(a, "remote", "add", "origin", str(origin), env=env)
    git(a, "push", "-q", "origin", "main", env=env)
    # an experiment of A's that the class will ask for again: its run goes to the run-cache
    dvc(a, "exp", "run", "--temp", "-S", f"simple_cnn.lr={SHARED_LR}", "train@simple_cnn",
        env=env)
    seconds = {}
    start = time.monotonic()
    push = dvc(a, "push", "--run-cache", env=env)
    seconds["push"] = time.monotonic() - start
    # `make share`: the outputs of every run in the run-cache too (DVC's push sends only the
    # workspace's)
    shared_runs = run_tool("push_runs", cwd=a, env=env)
    assert "pushed the run-cache (3 runs) and " in shared_runs.stdout, shared_runs.stdout
    pushed = {path: md5(a / path) for path in OUTPUTS}
    shutil.rmtree(a / ".dvc/cache")  # machine A loses its cache: only the bucket has the data
    b = base / "b"
    git(base, "clone", "-q", str(origin), "b", env=env)
    start = time.monotonic()
    pull = dvc(b, "pull", env=creds)
    seconds["pull"] = time.monotonic() - start
    repro = dvc(b, "repro", env=creds)
    return Shared(base, origin, a, b, env, creds, pushed, push, pull, repro, seconds)


def test_push_sends_outputs_and_run_cache(shared, s3):
    objects = s3.keys("store/")
    files = {key for key in objects if key.startswith("store/files/md5/")}
    assert {f"store/files/md5/{d[:2]}/{d[2:]}" for d in shared.pushed.values()} <= files
    assert any(key.startswith("store/runs/") for key in objects)  # download@mnist's run
    print(f"\npush --run-cache: {len(objects)} objects in {shared.seconds['push']:.1f} s")


def test_fresh_clone_pulls_and_repro_runs_nothing(shared):
    b = shared.b
    assert not (b / ".dvc/config.local").exists()  # its credentials come from the environment
    assert {path: md5(b / path) for path in shared.pushed} == shared.pushed
    assert "Running stage" not in shared.repro.stdout, shared.repro.stdout
    assert "Data and pipelines are up to date." in shared.repro.stdout
    status = dvc(b, "status", env=shared.creds)
    assert "Data and pipelines are up to date." in status.stdout
    assert_cache_sound(b)
    print(f"\nfresh clone: pull {shared.seconds['pull']:.1f} s")


def test_run_cache_comes_back_with_pull(shared):
    b = shared.b
    dvc(b, "pull", "--run-cache", env=shared.creds)
    runs = [p for p in (b / ".dvc/cache/runs").rglob("*") if p.is_file()]
    assert runs, "no run-cache entry pulled"


def test_an_experiment_someone_ran_is_pulled_not_trained(shared):
    """The README's "share results" recipe: A pushed its runs once (`make share`); a fresh
    clone pulls the run-cache, and `dvc exp run --pull` with A's params restores the run
    instead of training."""
    d = shared.clone("pupil")
    dvc(d, "pull", "--run-cache", env=shared.creds)
    start = time.monotonic()
    ran = dvc(d, "exp", "run", "--pull", "-S", f"simple_cnn.lr={SHARED_LR}",
              "train@simple_cnn", env=shared.creds)
    seconds = time.monotonic() - start
    assert "Stage 'train@simple_cnn' is cached - skipping run" in ran.stdout, ran.stdout
    assert "Running stage 'train@simple_cnn'" not in ran.stdout and "epoch " not in ran.stdout
    assert md5(d / "models/simple_cnn.pt") != shared.pushed["models/simple_cnn.pt"]
    assert f"lr: {SHARED_LR}" in (d / "params.yaml").read_text()
    assert_cache_sound(d)
    print(f"\nexp run restored from the pulled run-cache in {seconds:.1f} s")


def test_experiments_across_machines(shared):
    c = shared.clone("c")  # nothing pulled: --pull fetches what the experiment needs
    ran = dvc(c, "exp", "run", "--pull", "--allow-missing", "-n", "lr-3e-3",
              "-S", "simple_cnn.lr=0.003", "train@simple_cnn", env=shared.creds)
    assert "Stage 'download@mnist' didn't change, skipping" in ran.stdout
    assert "Running stage 'train@simple_cnn'" in ran.stdout
    model = md5(c / "models/simple_cnn.pt")
    assert model != shared.pushed["models/simple_cnn.pt"]
    dvc(c, "exp", "push", "origin", "lr-3e-3", env=shared.creds)
    refs = git(shared.base, "ls-remote", str(shared.origin), env=shared.env).stdout
    assert "/lr-3e-3" in refs
    # machine A (credentials in its config.local, no cache left) takes the experiment
    a = shared.a
    dvc(a, "exp", "pull", "origin", "lr-3e-3", env=shared.env)
    assert "lr-3e-3" in dvc(a, "exp", "show", "--csv", env=shared.env).stdout
    dvc(a, "exp", "apply", "lr-3e-3", env=shared.env)
    assert "lr: 0.003" in (a / "params.yaml").read_text()
    assert md5(a / "models/simple_cnn.pt") == model
    metrics = "metrics/simple_cnn.json"
    assert (a / metrics).read_text() == (c / metrics).read_text()
    assert_cache_sound(a)


def test_wrong_credentials(shared):
    wrong = dict(shared.creds, AWS_ACCESS_KEY_ID="AKIAWRONGWRONGWRONG0",
                 AWS_SECRET_ACCESS_KEY="wrong")
    before = assert_cache_sound(shared.b)
    push = dvc(shared.b, "push", env=wrong, check=False)
    assert push.returncode != 0
    assert "ERROR" in push.stderr and "403" in push.stderr, push.stderr
    assert assert_cache_sound(shared.b) == before
    d = shared.clone("d")
    pull = dvc(d, "pull", env=wrong, check=False)
    assert pull.returncode != 0
    assert "ERROR: failed to" in pull.stderr and "403" in pull.stderr, pull.stderr
    assert assert_cache_sound(d) == {}
    assert not (d / "data").exists()
    dvc(d, "pull", env=shared.creds)  # with the right key, the same clone pulls
    assert {path: md5(d / path) for path in shared.pushed} == shared.pushed
    assert_cache_sound(d)


def test_unreachable_endpoint(shared):
    # one try per request (AWS_MAX_ATTEMPTS=1): the same errors, without the retries' backoff
    env = dict(shared.creds, AWS_MAX_ATTEMPTS="1")
    dead = f"http://127.0.0.1:{closed_port()}"
    before = assert_cache_sound(shared.b)
    dvc(shared.b, "remote", "add", "dead", f"s3://{BUCKET}/store", env=env)
    dvc(shared.b, "remote", "modify", "--local", "dead", "endpointurl", dead, env=env)
    push = dvc(shared.b, "push", "-r", "dead", env=env, check=False)
    assert push.returncode != 0
    assert f'Could not connect to the endpoint URL: "{dead}/' in push.stderr, push.stderr
    assert assert_cache_sound(shared.b) == before
    e = shared.clone("e")
    dvc(e, "remote", "modify", "--local", "storage", "endpointurl", dead, env=env)
    pull = dvc(e, "pull", env=env, check=False)
    assert pull.returncode != 0
    assert "ERROR: failed to connect to s3" in pull.stderr and dead in pull.stderr, pull.stderr
    assert assert_cache_sound(e) == {}
    assert not (e / "data").exists()


def test_missing_object_is_named(shared, s3):
    b = shared.b
    dvc(b, "remote", "add", "partial", f"s3://{BUCKET}/partial", env=shared.creds)
    dvc(b, "remote", "modify", "partial", "endpointurl", s3.endpoint, env=shared.creds)
    dvc(b, "push", "-r", "partial", env=shared.creds)
    lost = shared.pushed["data/raw/mnist/train.pt"]
    s3.client.delete_object(Bucket=BUCKET, Key=f"partial/files/md5/{lost[:2]}/{lost[2:]}")
    f = shared.clone("f")
    dvc(f, "remote", "add", "--local", "partial", f"s3://{BUCKET}/partial", env=shared.creds)
    dvc(f, "remote", "modify", "--local", "partial", "endpointurl", s3.endpoint,
        env=shared.creds)
    pull = dvc(f, "pull", "-r", "partial", env=shared.creds, check=False)
    assert pull.returncode != 0
    assert f"ERROR: failed to transfer '{lost}'" in pull.stderr, pull.stderr
    assert "NoSuchKey" in pull.stderr
    status = dvc(f, "status", "--cloud", "-r", "partial", env=shared.creds, check=False)
    assert "data/raw/mnist/train.pt" in status.stdout, status.stdout
    files = assert_cache_sound(f)
    assert lost not in files and files  # the rest came, intact
    assert not (f / "data/raw/mnist/train.pt").exists()


def test_no_aws_settings_of_this_machine_leak_in(shared):
    assert not any(k in shared.env for k in ("AWS_ACCESS_KEY_ID", "AWS_PROFILE", "HTTPS_PROXY"))
    assert shared.env["AWS_EC2_METADATA_DISABLED"] == "true"
    assert "127.0.0.1" in shared.env["NO_PROXY"]
    assert os.path.exists(shared.env["AWS_CONFIG_FILE"]) is False


def test_an_object_key_that_leaves_the_cache_is_refused_by_make_pull(shared, s3, tmp_path):
    """`dvc pull --run-cache` writes an object keyed runs/aa/<key>/../../../../<path> to that
    path outside the cache (docs/sharing.md: a reproduction); `make pull` refuses the key and
    writes nothing."""
    escape = tmp_path / "escaped"
    key = "a" * 64
    hops = "/".join([".."] * (len(Path(shared.b).parts) + 6))
    s3.client.put_object(Bucket=BUCKET, Key=f"evil/runs/aa/{key}/{hops}{escape}", Body=b"x")
    g = shared.clone("g")
    dvc(g, "remote", "add", "--local", "evil", f"s3://{BUCKET}/evil", env=shared.creds)
    dvc(g, "remote", "modify", "--local", "evil", "endpointurl", s3.endpoint, env=shared.creds)
    result = run_tool("pull_runs", "-r", "evil", cwd=g, env=shared.creds, check=False)
    assert result.returncode == 1 and result.stderr.count("\n") == 1, result.stderr
    assert "refuses, nothing was pulled" in result.stderr
    assert "is not runs/<hash>/<hash>" in result.stderr
    assert not escape.exists() and not (g / ".dvc/cache/runs").exists()
