"""`make smoke` (tools/smoke.py with smoke.yaml) in a temporary checkout on the tiny mirror
without the ImageNet weights (the usual offline case): it runs every stage that does not need
them, names the ones it skipped and why, exits 0 (the notebook's run cell would fail
otherwise), and leaves the workspace and `dvc exp show` as they were. The run is the one
tests/test_notebook.py looks at too, on a sub-graph (smoke_project.py); on the whole graph,
the plan with and without the weights, and smoke.yaml's values against every stage's checks."""
import json
import shutil
import subprocess
import sys

import pytest
import yaml
from smoke_project import (
    COMMITTED,
    NEED_WEIGHTS,
    RUNS,
    SKIPS,
    WITHOUT_WEIGHTS,
    cell_with,
    smoke_run,
    snapshot,
    stages_run,
    text,
)

from helpers import ROOT, copy_project, load_tool, run, stage_env
from stages.lib.core import params

pytestmark = [pytest.mark.e2e,   # DVC's own, from plan() run in this process:
              pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")]


@pytest.fixture(scope="module")
def smoke(tmp_path_factory, mirror):
    result = smoke_run(tmp_path_factory, mirror)
    return result, text(cell_with(result.notebook, "if FULL_RUN:"))


def test_runs_every_stage_that_does_not_need_the_weights(smoke):
    _, output = smoke
    assert stages_run(output) == RUNS


def test_names_the_stages_needing_the_weights_and_why(smoke):
    result, output = smoke
    *_, done, skipped = output.strip().splitlines()
    assert done.startswith(f"smoke: {len(RUNS)} of {len(RUNS) + len(SKIPS)} stages in ")
    assert skipped == (f"smoke: skipped {', '.join(SKIPS)}: they need the ImageNet weights, "
                       f"and the mirror {result.env['DATASETS_MIRROR']} has no "
                       "resnet50/resnet50-0676ba61.pth (README: Offline mirror)")


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
    assert (out / "plots/simple_cnn/tsne_final.png").stat().st_size > 1000
    assert not (out / "reports").exists()
    copied = yaml.safe_load((out / "params.yaml").read_text())
    for key, value in yaml.safe_load((ROOT / "smoke.yaml").read_text()).items():
        node = copied
        for part in key.split("."):
            node = node[part]
        assert node == value, key


@pytest.fixture
def whole_graph(tmp_path, monkeypatch):
    """tools/smoke.py's plan() in a copy of the project with the whole dvc.yaml."""
    project = copy_project(tmp_path / "project")
    (project / "tools").mkdir()
    shutil.copy2(ROOT / "tools/smoke.py", project / "tools/smoke.py")
    run(["git", "init", "-q"], project, stage_env())
    module = load_tool(project / "tools/smoke.py")
    monkeypatch.chdir(project)
    return module.plan


def test_without_the_weights_the_whole_graph_skips_seven_stages(whole_graph, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("DATASETS_MIRROR", str(tmp_path))   # a mirror without resnet50/
    stages, needs, missing = whole_graph()
    assert needs == NEED_WEIGHTS and set(stages) - needs == WITHOUT_WEIGHTS
    assert missing == f"the mirror {tmp_path} has no resnet50/resnet50-0676ba61.pth"


def test_with_the_weights_the_plan_is_the_whole_graph(whole_graph, mirror, monkeypatch):
    monkeypatch.setenv("DATASETS_MIRROR", str(mirror))   # the tiny mirror has (random) ones
    assert whole_graph()[2] is None   # nothing missing: no targets, every stage, the report
    monkeypatch.delenv("DATASETS_MIRROR")                # downloads
    assert whole_graph()[2] is None


def test_the_smoke_params_pass_every_stage_s_checks():
    values = params.load(ROOT / "params.yaml")
    for key, value in yaml.safe_load((ROOT / "smoke.yaml").read_text()).items():
        *parents, last = key.split(".")
        node = values
        for part in parents:
            node = node[part]
        assert last in node, key
        node[last] = value
    params.shared(values), params.tsne(values), params.svm(values), params.download(values)
    params.report_language(values), params.transfer_data(values)
    for model in ("simple_cnn", "alexnet"):
        assert params.training(values, model).epochs <= 2
    for strategy in ("scratch", "finetune", "finetune_aug"):
        assert params.strategy(values, strategy).epochs == 1


def test_a_key_params_yaml_lacks_stops_before_any_work(smoke, tmp_path):
    result, _ = smoke
    bad = tmp_path / "smoke.yaml"
    bad.write_text("simple_cnn.epochz: 1\n")
    done = subprocess.run([sys.executable, "tools/smoke.py", "--overrides", str(bad)],
                          cwd=result.project, env=result.env, capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == ("smoke: error: smoke.yaml: 'simple_cnn.epochz' is not a key "
                                   "of params.yaml")
