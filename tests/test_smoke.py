"""`make smoke` (tools/smoke.py with smoke.yaml) in a temporary checkout, on the tiny mirror
without the ImageNet weights (the usual offline case): it runs every stage that does not need
them, names the ones it skipped and why, exits 0 (the notebook's run cell would fail
otherwise), and leaves the workspace and `dvc exp show` as they were. The run itself is the
one tests/test_notebook.py looks at too (smoke_project.py); with the weights, the plan is the
whole graph."""
import importlib.util
import json
import subprocess
import sys

import pytest
import yaml
from smoke_project import (
    COMMITTED,
    NEED_WEIGHTS,
    WITHOUT_WEIGHTS,
    cell_with,
    smoke_run,
    snapshot,
    stages_run,
    text,
)

from helpers import ROOT, run

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, mirror):
    result = smoke_run(tmp_path_factory, mirror)
    return result, text(cell_with(result.notebook, "if FULL_RUN:"))


def test_runs_every_stage_that_does_not_need_the_weights(smoke):
    _, output = smoke
    assert stages_run(output) == WITHOUT_WEIGHTS


def test_names_the_stages_needing_the_weights_and_why(smoke):
    _, output = smoke
    lines = output.strip().splitlines()
    assert lines[-2].startswith("smoke: 9 of 16 stages in ")
    skipped = lines[-1]
    assert skipped.startswith("smoke: skipped ") and "they need the ImageNet weights" in skipped
    listed = skipped.removeprefix("smoke: skipped ").split(":")[0].split(", ")
    assert set(listed) == NEED_WEIGHTS
    assert "has no resnet50/resnet50-0676ba61.pth" in skipped


def test_leaves_the_workspace_and_the_experiments_as_they_were(smoke):
    result, _ = smoke
    project, env = result.project, result.env
    assert snapshot(project) == result.before
    assert not (project / "data").exists() and not (project / "models").exists()
    assert run(["git", "status", "--porcelain"], project, env).stdout == ""  # smoke/ ignored
    assert run(["git", "for-each-ref", "refs/exps"], project, env).stdout == ""


def test_copies_the_results_out_of_the_experiment(smoke):
    result, _ = smoke
    out = result.project / "smoke"
    metrics = json.loads((out / "metrics/simple_cnn.json").read_text())
    assert metrics != COMMITTED["metrics/simple_cnn.json"] and metrics["best_epoch"] <= 2
    assert (out / "plots/alexnet/tsne_final.png").stat().st_size > 1000
    assert (out / "metrics/transfer/scratch.json").is_file()
    assert not (out / "reports").exists()   # the report needs every strategy
    params = yaml.safe_load((out / "params.yaml").read_text())
    for key, value in yaml.safe_load((ROOT / "smoke.yaml").read_text()).items():
        node = params
        for part in key.split("."):
            node = node[part]
        assert node == value, key


def test_with_the_weights_the_plan_is_the_whole_graph(smoke, mirror, monkeypatch):
    result, _ = smoke
    spec = importlib.util.spec_from_file_location("smoke", result.project / "tools/smoke.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setenv("DATASETS_MIRROR", str(mirror))   # the tiny mirror has (random) ones
    monkeypatch.chdir(result.project)
    stages, needs, missing = module.plan()
    assert missing is None and needs == NEED_WEIGHTS   # no targets: every stage, the report too
    assert set(stages) == NEED_WEIGHTS | WITHOUT_WEIGHTS


def test_a_key_params_yaml_lacks_stops_before_any_work(smoke, tmp_path):
    result, _ = smoke
    bad = tmp_path / "smoke.yaml"
    bad.write_text("simple_cnn.epochz: 1\n")
    done = subprocess.run([sys.executable, "tools/smoke.py", "--overrides", str(bad)],
                          cwd=result.project, env=result.env, capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == ("smoke: error: smoke.yaml: 'simple_cnn.epochz' is not a key "
                                   "of params.yaml")
