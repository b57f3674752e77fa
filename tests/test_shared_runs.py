"""Shared runs pulled through the project (`make pull`: tools/pull_runs.py) on a folder remote:
a classmate who can write the remote plants run-cache entries; each is refused before anything
is written, or taken out once its outputs fail the stages' checks, in one line. An honest
remote pulls whole. (The S3 object key with `..`: tests/test_s3_remote.py, on moto.)"""
import copy
import json
import shutil

import pytest
import yaml
from small_pipeline import dvc, git, make

from helpers import run_tool, stage_env

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def shared(tmp_path_factory, mirror):
    """Machine A ran download@mnist and train@simple_cnn and shared them (make share) on a
    folder remote; `origin` is its git repo."""
    base = tmp_path_factory.mktemp("shared")
    env = stage_env(mirror.resolve())
    a = make(base / "a", env)
    dvc(a, "repro", env=env)
    dvc(a, "remote", "add", "-d", "class", str(base / "remote"), env=env)
    git(a, "add", "-A", env=env)
    git(a, "commit", "-q", "-m", "results and remote", env=env)
    run_tool("push_runs", cwd=a, env=env)
    return base, a, env


def fresh(shared, name, remote=None):
    """A clone of A's repo, its remote pointed at `remote` (default: the honest one)."""
    base, a, env = shared
    b = base / name
    git(base, "clone", "-q", str(a), name, env=env)
    dvc(b, "remote", "modify", "class", "url", str(remote or base / "remote"), env=env)
    return b


def entries(remote):
    return sorted(p for p in (remote / "runs").rglob("*") if p.is_file())


def planted(shared, name, change):
    """A copy of the honest remote whose train@simple_cnn entry went through `change` (a
    function of the entry) and was saved under the name DVC would give it: a careful forger."""
    from dvc.stage.cache import _get_cache_hash

    base, _, _ = shared
    remote = shutil.copytree(base / "remote", base / f"remote-{name}")
    for path in entries(remote):
        entry = yaml.safe_load(path.read_text())
        if "stages.train" not in entry["cmd"]:
            continue
        path.unlink()
        entry = change(entry)
        key = _get_cache_hash(copy.deepcopy(entry), key=True)
        value = _get_cache_hash(copy.deepcopy(entry))
        target = remote / "runs" / key[:2] / key / value
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(entry, sort_keys=False))
    return remote


def pull(project, env):
    return run_tool("pull_runs", cwd=project, env=env, check=False)


def one_line(result, *pieces):
    assert result.returncode == 1, result.stdout
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr, result.stderr
    for piece in pieces:
        assert piece in result.stderr, result.stderr


def test_an_honest_remote_is_pulled_and_its_runs_restore(shared):
    _, _, env = shared
    b = fresh(shared, "honest")
    result = pull(b, env)
    assert result.returncode == 0, result.stderr
    assert "pulled 2 shared runs, checked" in result.stdout
    restored = dvc(b, "repro", "--pull", env=env)
    assert "Running stage" not in restored.stdout, restored.stdout


def test_an_extra_output_that_would_be_imported_is_refused_unwritten(shared):
    """The entry lists `yaml.py` as one more output: DVC would restore it into the project
    root, where the next stage's `import yaml` runs it."""
    _, _, env = shared

    def extra(entry):
        entry["outs"].append({"path": "yaml.py", "hash": "md5",
                              "md5": "0123456789abcdef0123456789abcdef", "size": 10})
        return entry

    b = fresh(shared, "extra", planted(shared, "extra", extra))
    result = pull(b, env)
    one_line(result, "refuses, nothing was pulled", "outputs that stage train@simple_cnn does "
             "not declare: +yaml.py")
    assert not (b / ".dvc/cache/runs").exists() or not entries(b / ".dvc/cache")


@pytest.mark.parametrize("path", ["../outside.py", "/tmp/outside.py"])
def test_an_output_outside_the_project_is_refused(shared, path):
    _, _, env = shared

    def outside(entry):
        entry["outs"][0]["path"] = path
        return entry

    b = fresh(shared, f"outside{len(path)}", planted(shared, f"outside{len(path)}", outside))
    one_line(pull(b, env), f"path {path!r} is outside the project")


def test_an_entry_edited_after_dvc_wrote_it_is_refused(shared):
    base, _, env = shared
    remote = shutil.copytree(base / "remote", base / "remote-edited")
    path = next(p for p in entries(remote) if "stages.train" in p.read_text())
    path.write_text(path.read_text().replace("epochs: 1", "epochs: 2"))
    b = fresh(shared, "edited", remote)
    one_line(pull(b, env), "its name is not the hash of its content")


def forged_output(shared, name, output, content):
    """A remote whose train@simple_cnn run names, for `output`, an object with `content`."""
    import hashlib

    base, _, _ = shared
    digest = hashlib.md5(content).hexdigest()

    def forge(entry):
        for out in entry["outs"]:
            if out["path"] == output:
                out.update(md5=digest, size=len(content))
        return entry

    remote = planted(shared, name, forge)
    target = remote / "files/md5" / digest[:2] / digest[2:]
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(content)
    return remote


@pytest.mark.parametrize("output, content, said", [
    ("metrics/simple_cnn.json", json.dumps({"accuracy": 1.7}).encode(),
     "metrics/simple_cnn.json: accuracy is 1.7, outside 0..1"),
    ("plots/simple_cnn/confusion.csv",
     b"actual,predicted,count\n</script><script>alert(1)</script>,0,3\n",
     "class names must not contain"),
    ("plots/simple_cnn/confusion.csv", b"actual,predicted,count\n=HYPERLINK(1),0,3\n",
     "nor start with = + - @"),
    ("models/simple_cnn.pt", b"\x80\x02c__builtin__\neval\nq\x00.",
     "models/simple_cnn.pt does not load with weights_only=True"),
])
def test_outputs_a_stage_would_never_write_take_the_run_out(shared, output, content, said):
    _, _, env = shared
    name = f"forged{abs(hash((output, content))) % 10_000}"
    b = fresh(shared, name, forged_output(shared, name, output, content))
    result = pull(b, env)
    one_line(result, "shared runs hold outputs no stage of this project writes", said)
    kept = entries(b / ".dvc/cache")
    assert len(kept) == 1 and "stages.train" not in kept[0].read_text()   # download@mnist's
    restored = dvc(b, "repro", "--pull", "train@simple_cnn", env=env, check=False)
    assert "is cached - skipping run" not in restored.stdout


def test_released_models_resolve_with_dvc_artifacts_get(shared, tmp_path):
    """`make release` (tools/release.py) tags each trained model's artifact with a version and
    pushes its weights; `dvc artifacts get <repository> <name>` then fetches the same bytes
    elsewhere. Before it, DVC finds no version; a release without a remote, or with
    uncommitted results, is refused in one line before any tag."""
    base, a, env = shared
    get = ["artifacts", "get", str(a), "simple-cnn-mnist", "-o", str(tmp_path / "got.pt")]
    before = dvc(tmp_path, *get, env=env, check=False)
    assert before.returncode != 0 and "Unable to find artifact" in before.stderr

    b = fresh(shared, "release-b")
    dvc(b, "remote", "remove", "class", env=env)
    git(b, "commit", "-qam", "no remote", env=env)
    refused = run_tool("release", cwd=b, env=env, check=False)
    assert refused.returncode == 1 and refused.stderr.strip() == (
        "release: error: no DVC remote (dvc remote add -d NAME URL): `dvc artifacts get` "
        "fetches the weights from it")
    (b / "params.yaml").write_text((b / "params.yaml").read_text() + "\n")
    refused = run_tool("release", cwd=b, env=env, check=False)
    assert refused.returncode == 1 and "uncommitted changes" in refused.stderr
    assert git(b, "tag", "-l", env=env).stdout == ""

    done = run_tool("release", cwd=a, env=env)
    assert "release: simple-cnn-mnist v0.0.1 (models/simple_cnn.pt)" in done.stdout
    assert "left out alexnet-cifar10 (models/alexnet.pt: no stage of dvc.yaml writes it)" \
        in done.stdout   # the trimmed graph trains simple_cnn only
    assert git(a, "tag", "-l", env=env).stdout.split() == ["simple-cnn-mnist@v0.0.1"]
    dvc(tmp_path, *get, env=env)
    assert (tmp_path / "got.pt").read_bytes() == (a / "models/simple_cnn.pt").read_bytes()


def test_share_from_a_clone_without_the_outputs_names_them(shared):
    """`make share` on a clone that has not pulled: the outputs dvc.lock names are in no cache
    there; they are named by path with the stage that computes them (DVC alone prints hashes),
    and the rest of the push goes on."""
    _, _, env = shared
    b = fresh(shared, "share-b")
    result = run_tool("push_runs", cwd=b, env=env)
    lines = result.stdout.splitlines()
    assert lines[0] == (
        "share: 2 outputs of dvc.lock are in no cache here and are not sent: data/raw/mnist "
        "(download@mnist), models/simple_cnn.pt (train@simple_cnn); `dvc repro download@mnist "
        "train@simple_cnn` computes them (or `dvc pull` them from a remote that has them)")
    assert "neither locally nor on remote" not in result.stdout + result.stderr
    assert lines[-1].startswith("pushed the run-cache (0 runs)")


def test_a_fresh_clone_reads_what_git_keeps_and_pull_names_what_no_remote_holds(shared):
    """The README's "what a fresh clone has": on a clone whose remote holds nothing, `dvc
    metrics show` and `dvc plots show` work from what git keeps; `dvc pull` and `dvc checkout`
    fail, naming the cached outputs."""
    base, _, env = shared
    b = fresh(shared, "fresh-b", remote=base / "empty-remote")
    shown = dvc(b, "metrics", "show", env=env)
    assert "metrics/simple_cnn.json" in shown.stdout
    dvc(b, "plots", "show", "-o", "page", env=env)
    assert (b / "page" / "index.html").is_file()
    for command in (["pull"], ["checkout"]):
        failed = dvc(b, *command, env=env, check=False)
        assert failed.returncode != 0
        assert "Checkout failed for following targets:" in failed.stderr
        assert "models/simple_cnn.pt" in failed.stderr


def test_verify_recomputes_a_shared_result(shared):
    """`make verify STAGE=...` (tools/verify.py): a pulled result computed again in a temporary
    clone; the same bytes verify it; a metric forged in a commit (dvc.lock updated to match)
    is refused on the same hardware; the workspace and `dvc exp list` are left as they were."""
    _, _, env = shared
    b = fresh(shared, "verify-b")
    dvc(b, "pull", env=env)
    result = run_tool("verify", "train@simple_cnn", cwd=b, env=env)
    assert result.stdout.splitlines()[-1] == \
        "verify: train@simple_cnn: verified, the same bytes (8 outputs; the run record, which " \
        "holds times, aside)", result.stdout
    assert dvc(b, "exp", "list", "--name-only", env=env).stdout.strip() == ""

    metrics = b / "metrics/simple_cnn.json"
    forged = json.loads(metrics.read_text())
    forged["accuracy"] = round(min(forged["accuracy"] + 0.2, 1.0), 4)
    metrics.write_text(json.dumps(forged, indent=2) + "\n")
    dvc(b, "commit", "-f", "train@simple_cnn", env=env)
    git(b, "commit", "-qam", "a better accuracy", env=env)
    result = run_tool("verify", "train@simple_cnn", cwd=b, env=env, check=False)
    assert result.returncode == 1
    assert result.stderr.strip().startswith(
        "verify: error: train@simple_cnn: not verified: on the same hardware (")
    assert "other bytes for metrics/simple_cnn.json" in result.stderr
    assert json.loads(metrics.read_text()) == forged          # the workspace untouched
    assert git(b, "status", "--porcelain", env=env).stdout == ""

    wrong = run_tool("verify", "train@nothing", cwd=b, env=env, check=False)
    assert wrong.returncode == 2 and wrong.stderr.startswith(
        "verify: error: no stage 'train@nothing' in dvc.yaml")
