"""What an edit reruns (issue 31): in a `git clone` of the project whose every stage is up to
date, edit one file or one param and ask `dvc status` which stages changed. One table says, for
each edit, the stages it may mark: an edit to one model marks that model's stages only, the
t-SNE code the t-SNE stages, a wording file the report, the training engine the training
stages; a setting that gives the same bytes (transfer.num_workers, transfer.resident_mb)
marks none.

Stand-in: no stage runs here. Every output is a placeholder file and `dvc commit` records
the stages as done (what `dvc status` compares against is dvc.lock's hashes of the deps and
params, whatever the outputs hold); the deps are the real ones of the clone."""
import json
import subprocess

import pytest
import yaml
from readme_commands import clone_project

from helpers import stage_env

pytestmark = pytest.mark.e2e

MODELS = {"train@simple_cnn", "tsne@simple_cnn", "train@alexnet", "tsne@alexnet"}
RESNET = {"transfer@scratch", "transfer@finetune", "transfer@finetune_aug"}

# edit -> the stages `dvc status` must name (their code, data or params changed). What reads
# their outputs reruns after them (dvc repro); those are listed in the comments.
EXPECTED = {
    "stages/lib/models/alexnet.py": {"train@alexnet", "tsne@alexnet", "report"},
    "stages/lib/models/simple_cnn.py": {"train@simple_cnn", "tsne@simple_cnn"},  # then report
    # then svm (features' output) and report
    "stages/lib/models/resnet50.py": RESNET | {"features", "compare"},
    "stages/lib/analysis.py": {"tsne@simple_cnn", "tsne@alexnet", "compare", "report"},
    # the training loop; then the t-SNE stages, compare and the report read new models
    "stages/lib/core/engine.py": {"train@simple_cnn", "train@alexnet"} | RESNET,
    "stages/lib/evaluation.py": {"train@simple_cnn", "train@alexnet", "svm", "report"} | RESNET,
    # what a training stage writes besides its model; the report draws with it too
    "stages/lib/plots.py": {"train@simple_cnn", "train@alexnet", "svm", "report"} | RESNET,
    "stages/lib/figures.py": {"report"},
    "stages/templates/wording/es.yaml": {"report"},
    "stages/templates/report.md.j2": {"report"},
    "stages/svm.py": {"svm"},                                                 # then report
    "params.yaml:alexnet.lr": {"train@alexnet"},          # then tsne@alexnet and report
    "params.yaml:simple_cnn.train_samples": {"train@simple_cnn"},
    "params.yaml:tsne.perplexity": {"tsne@simple_cnn", "tsne@alexnet", "compare"},
    "params.yaml:transfer.svm.C": {"svm"},
    "params.yaml:transfer.finetune.lr": {"transfer@finetune"},
    "params.yaml:transfer.val_samples": RESNET | {"features", "compare"},
    "params.yaml:transfer.train_samples": RESNET | {"features"},
    "params.yaml:report.language": {"report"},
    "params.yaml:transfer.num_workers": set(),   # the same bytes (tests/test_images.py)
    "params.yaml:transfer.resident_mb": set(),
}


def dvc(project, env, *args):
    result = subprocess.run(["dvc", *args], cwd=project, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, f"dvc {' '.join(args)}: {result.stdout}{result.stderr}"
    return result.stdout


def placeholders(project, env):
    """A placeholder for every output and every dependency that is not in the clone (a file
    inside an output folder: data/features/val.pt)."""
    from dvc.repo import Repo

    with Repo(str(project)) as repo:
        outs = [out.def_path for stage in repo.index.stages for out in stage.outs]
        deps = [dep.def_path for stage in repo.index.stages for dep in stage.deps]
    for path in outs + deps:   # outputs first: a dep inside an output folder comes after it
        target = project / path
        if target.is_file():
            continue
        if path in DIRECTORIES or "." not in target.name:
            target.mkdir(parents=True, exist_ok=True)
            (target / "placeholder").write_text(path)
        else:
            target.parent.mkdir(parents=True, exist_ok=True)   # (files kept in git stay)
            target.write_text(json.dumps({"placeholder": path}))


DIRECTORIES = {"data/raw/mnist", "data/raw/cifar10", "data/raw/hymenoptera", "data/features",
               "reports", "metrics/tsne/transfer"}


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    base = tmp_path_factory.mktemp("blast")
    env = stage_env()
    project = clone_project(base / "project", env)
    placeholders(project, env)
    dvc(project, env, "commit", "--force", "--quiet")
    assert stages_marked(project, env) == set(), "the committed placeholders are not up to date"
    return project, env


def stages_marked(project, env):
    return set(json.loads(dvc(project, env, "status", "--json") or "{}"))


def edit(project, what):
    """Change a file (a comment line at its end: new bytes, the same behaviour) or a param
    (its value doubled, 100 for `all`, or the other language)."""
    path, _, key = what.partition(":")
    target = project / path
    if not key:
        comment = "{# edited #}" if path.endswith(".j2") else "# edited"
        target.write_text(target.read_text() + f"\n{comment}\n")
        return
    params = yaml.safe_load(target.read_text())
    *parents, last = key.split(".")
    node = params
    for part in parents:
        node = node[part]
    node[last] = "es" if key == "report.language" else 100 if node[last] == "all" \
        else node[last] * 2
    target.write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.parametrize("what", list(EXPECTED))
def test_an_edit_marks_exactly_the_stages_it_affects(project, what):
    project, env = project
    edit(project, what)
    try:
        marked = stages_marked(project, env)
    finally:
        subprocess.run(["git", "checkout", "--", what.partition(":")[0]], cwd=project,
                       check=True)
    assert marked == EXPECTED[what], f"{what}: {sorted(marked)}"


def test_every_model_and_strategy_module_is_in_the_table():
    """A model module added to the project gets a row here (its stages, nothing else)."""
    from helpers import ROOT

    modules = {p.relative_to(ROOT).as_posix() for p in (ROOT / "stages/lib/models").glob("*.py")
               if p.name != "__init__.py"}
    assert modules <= EXPECTED.keys()
