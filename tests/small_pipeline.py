"""A small sub-graph of the project's pipeline in a temporary git repo, for the tests of DVC's
own machinery (the experiment queue, remotes): download@mnist -> train@simple_cnn on the tiny
mirror, one epoch, so that a run takes seconds. The stages, params and code are the project's;
only dvc.yaml loses the other stages (and the plots that show them), so that commands that act
on the whole pipeline (`dvc exp apply`, `dvc pull`, `dvc repro`) see no stage that never ran."""
import sys
from pathlib import Path

import yaml

from helpers import DELETE, copy_project, edit_params, run

KEEP = {"download": ["mnist"], "train": ["simple_cnn"]}
TINY = {"download.retries": 1, "simple_cnn.epochs": 1, "simple_cnn.batch_size": 32,
        "simple_cnn.eval_batch_size": 64,
        # train's foreach list is params.yaml's `models`; a section of no model is refused
        "models": {"simple_cnn": "mnist"}, "alexnet": DELETE}


def dvc(project, *args, env, check=True, timeout=600):
    return run([sys.executable, "-m", "dvc", *args], project, env, check=check, timeout=timeout)


def git(project, *args, env, check=True):
    return run(["git", *args], project, env, check=check)


def trim(project, keep=KEEP):
    path = Path(project) / "dvc.yaml"
    pipeline = yaml.safe_load(path.read_text())
    stages = {}
    for name, items in keep.items():
        stage = pipeline["stages"][name]
        # dvc.yaml's own list is cut here; a ${...} list is params.yaml's, cut by TINY
        if isinstance(stage["foreach"], dict):
            stage["foreach"] = {key: value for key, value in stage["foreach"].items()
                                if key in items}
        stages[name] = stage
    pipeline["stages"] = stages
    pipeline.pop("plots", None)
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))


def make(dest, env):
    """The sub-graph as a git repo with one commit, nothing run yet."""
    project = copy_project(dest)
    trim(project)
    edit_params(project, TINY)
    git(project, "init", "-q", "-b", "main", env=env)
    git(project, "add", "-A", env=env)
    git(project, "commit", "-q", "-m", "pipeline", env=env)
    return project
