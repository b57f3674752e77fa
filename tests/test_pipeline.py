"""End to end: `dvc repro` of the whole pipeline in a temporary git repo, on the tiny mirror,
with tiny params. One run serves all the tests of this module."""
import json
import shutil

import pytest

from conftest import copy_project, edit_params, run, stage_env

TINY = {
    "download.retries": 1,
    "simple_cnn.epochs": 2, "simple_cnn.batch_size": 32, "simple_cnn.eval_batch_size": 64,
    "alexnet.epochs": 3, "alexnet.batch_size": 32, "alexnet.eval_batch_size": 64,
    "tsne.points": 60, "tsne.perplexity": 5, "tsne.silhouette_points": 50,
    "tsne.probe_folds": 2,
    "transfer.image_size": 32, "transfer.batch_size": 4, "transfer.eval_batch_size": 8,
    "transfer.num_workers": 0,
    "transfer.scratch.epochs": 2, "transfer.finetune.epochs": 1,
    "transfer.finetune_aug.epochs": 1, "transfer.svm.cv": 2,
}


def dvc(project, *args, env, check=True):
    import sys
    return run([sys.executable, "-m", "dvc", *args], project, env, check=check)


def init_repo(project, env):
    run(["git", "init", "-q"], project, env)
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-q", "-m", "pipeline"], project, env)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, mirror):
    project = copy_project(tmp_path_factory.mktemp("e2e") / "project")
    edit_params(project, TINY)
    env = stage_env(mirror)
    init_repo(project, env)
    result = dvc(project, "repro", env=env)
    return project, env, result


def test_repro_writes_dataset_table(pipeline):
    project, _, _ = pipeline
    table = json.loads((project / "metrics/datasets.json").read_text())
    assert {name: {s: row["samples"] for s, row in splits.items()}
            for name, splits in table.items()} == {
        "mnist": {"train": 200, "val": 100}, "cifar10": {"train": 250, "val": 100},
        "hymenoptera": {"train": 16, "val": 10}}
    assert table["hymenoptera"]["train"]["height"] == 32  # transfer.image_size


def test_second_repro_has_nothing_to_do(pipeline):
    project, env, _ = pipeline
    result = dvc(project, "repro", env=env)
    assert "Running stage" not in result.stdout, result.stdout
    status = dvc(project, "status", env=env)
    assert "up to date" in status.stdout, status.stdout


def test_keep_going_without_weights_runs_everything_else(tmp_path, mirror):
    partial = shutil.copytree(mirror, tmp_path / "mirror")
    shutil.rmtree(partial / "resnet50")
    project = copy_project(tmp_path / "project")
    edit_params(project, TINY)
    env = stage_env(partial)
    init_repo(project, env)
    result = dvc(project, "repro", "--keep-going", env=env, check=False)
    assert result.returncode != 0
    output = result.stdout + result.stderr
    assert "missing resnet50/resnet50-0676ba61.pth" in output
    assert (project / "metrics/datasets.json").exists()
    assert not (project / "data/weights/resnet50.pth").exists()
