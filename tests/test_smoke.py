"""tools/smoke.py and tools/plan.py apart from a run: the plan on the whole graph with and
without the ImageNet weights, smoke.yaml's values against every stage's checks, and a key
params.yaml lacks. `make smoke` itself runs, as the README gives it, in tests/test_readme.py
(both passes: the stages it runs, its summary lines, what it leaves alone, what it copies)."""
import subprocess
import sys

import pytest
import yaml

from helpers import ROOT, copy_project, run, stage_env
from stages import report
from stages.lib.core import params, registry
from tools import plan, smoke

pytestmark = pytest.mark.filterwarnings("ignore:_NoneStep.value:DeprecationWarning")  # DVC's

NEED_WEIGHTS = ["download@resnet50", "transfer@finetune", "transfer@finetune_aug", "features",
                "svm", "compare", "report"]   # dvc.yaml's order
WITHOUT_WEIGHTS = {"download@mnist", "download@cifar10", "download@hymenoptera", "datasets",
                   "train@simple_cnn", "train@alexnet", "tsne@simple_cnn", "tsne@alexnet",
                   "transfer@scratch"}


@pytest.fixture
def whole_graph(tmp_path):
    """tools/plan.py's plan() on a copy of the project with the whole dvc.yaml."""
    project = copy_project(tmp_path / "project")
    run(["git", "init", "-q"], project, stage_env())
    return lambda: plan.plan(project)


def test_without_the_weights_the_whole_graph_skips_seven_stages(whole_graph, tmp_path,
                                                                  monkeypatch):
    monkeypatch.setenv("DATASETS_MIRROR", str(tmp_path))   # a mirror without resnet50/
    todo = whole_graph()
    assert todo.skipped == NEED_WEIGHTS and set(todo.runnable) == WITHOUT_WEIGHTS
    assert todo.missing == f"the mirror {tmp_path} has no resnet50/resnet50-0676ba61.pth"
    assert todo.skipped_line() == (
        f"skipped {', '.join(NEED_WEIGHTS)}: they need the ImageNet weights, and the mirror "
        f"{tmp_path} has no resnet50/resnet50-0676ba61.pth (README: Offline mirror)")


def test_with_the_weights_the_plan_is_the_whole_graph(whole_graph, mirror, monkeypatch):
    monkeypatch.setenv("DATASETS_MIRROR", str(mirror))   # the tiny mirror has (random) ones
    todo = whole_graph()
    assert todo.missing is None and todo.skipped == [] and len(todo.runnable) == 16
    monkeypatch.delenv("DATASETS_MIRROR")                # downloads
    assert whole_graph().missing is None


def test_the_smoke_copies_only_the_results_of_the_stages_it_ran(whole_graph, tmp_path,
                                                                 monkeypatch):
    """What `make smoke` copies to smoke/: the metrics, plots and report of the stages it ran
    (a stage it skipped has results only from the workspace's last commit)."""
    monkeypatch.setenv("DATASETS_MIRROR", str(tmp_path))
    todo = whole_graph()
    tracked, cached = smoke.results(todo, todo.runnable)
    assert "metrics/simple_cnn.json" in tracked and "plots/transfer/scratch/confusion.csv" in \
        tracked
    assert not any("svm" in path or "finetune" in path or path.startswith("reports")
                   for path in tracked + cached)
    assert cached == ["plots/simple_cnn/tsne.csv", "plots/alexnet/tsne.csv"]
    tracked, cached = smoke.results(todo, todo.stages)
    assert "reports" in cached and "metrics/transfer/svm.json" in tracked
    assert not any(path.startswith(("data/", "models/")) for path in tracked + cached)


def test_the_smoke_params_pass_every_stage_s_checks():
    values = params.load(ROOT / "params.yaml")
    cuts = yaml.safe_load((ROOT / "smoke.yaml").read_text())
    for key, value in smoke.expand(cuts, values).items():
        *parents, last = key.split(".")
        node = values
        for part in parents:
            node = node[part]
        assert last in node, key
        node[last] = value
    params.shared(values), params.tsne(values), params.svm(values), params.download(values)
    report.language_of(values), params.transfer_data(values)
    for model in registry.models(values):   # every model and strategy, each cut short
        assert params.training(values, model).epochs <= 2
    for strategy in registry.strategies(values):
        assert params.strategy(values, strategy).epochs == 1


def test_placeholders_stand_for_every_model_and_strategy():
    settings = {"models": {"a": "mnist", "b": "cifar10"}, "strategies": {"x": "w", "y": "v"}}
    assert smoke.expand({"<model>.epochs": 2, "transfer.<strategy>.epochs": 1, "seed": 3},
                        settings) == {"a.epochs": 2, "b.epochs": 2, "transfer.x.epochs": 1,
                                      "transfer.y.epochs": 1, "seed": 3}


def test_a_key_params_yaml_lacks_stops_before_any_work(tmp_path):
    bad = tmp_path / "smoke.yaml"
    bad.write_text("simple_cnn.epochz: 1\n")
    done = subprocess.run([sys.executable, "-m", "tools.smoke", "--overrides", str(bad)],
                          cwd=ROOT, env=stage_env(), capture_output=True, text=True)
    assert done.returncode == 1 and done.stdout == ""
    assert done.stderr.strip() == ("smoke: error: smoke.yaml: 'simple_cnn.epochz' is not a key "
                                   "of params.yaml")
