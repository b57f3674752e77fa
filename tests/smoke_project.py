"""One smoke run for tests/test_smoke.py and tests/test_notebook.py: notebooks/quickstart.ipynb
executed with nbclient inside a temporary checkout (so it uses that checkout: no clone, no
install, no network), whose run cell is `python tools/smoke.py`, on the tiny mirror without
the ImageNet weights (the usual offline case).

A stage costs about 5 s of process start and DVC bookkeeping on 2 cores whatever its data, and
DVC's run cache cannot skip the training stages (they have uncached outputs), so: the two
modules share this one run (per pytest session), and its dvc.yaml keeps a sub-graph that has
both kinds of stage: download@mnist -> train@simple_cnn -> tsne@simple_cnn, which run, and
download@resnet50 -> features -> svm, which need the weights. test_smoke.py checks the smoke's
plan on the whole graph, and that smoke.yaml's values pass every stage's params checks.

The checkout is a git repo with one commit: that pipeline, smoke.yaml, tools/smoke.py, the
notebook, and results committed as a real checkout has them (the smoke must leave them alone).
"""
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import nbformat
import yaml
from nbclient import NotebookClient

from helpers import ROOT, copy_project, run, stage_env

FILES = ["smoke.yaml", "tools/smoke.py", "notebooks/quickstart.ipynb"]
COMMITTED = {"metrics/simple_cnn.json": {"accuracy": 0.99, "best_accuracy": 0.99,
                                          "best_epoch": 8},
             "plots/simple_cnn/evaluation.json": {"epochs": 10}}
# the whole graph
NEED_WEIGHTS = {"download@resnet50", "features", "svm", "transfer@finetune",
                "transfer@finetune_aug", "compare", "report"}
WITHOUT_WEIGHTS = {"download@mnist", "download@cifar10", "download@hymenoptera", "datasets",
                   "train@simple_cnn", "train@alexnet", "tsne@simple_cnn", "tsne@alexnet",
                   "transfer@scratch"}
# the sub-graph of the shared run: <stage>: the foreach items kept (None: a plain stage)
KEEP = {"download": ["mnist", "resnet50"], "train": ["simple_cnn"], "tsne": ["simple_cnn"],
        "features": None, "svm": None}
RUNS = {"download@mnist", "train@simple_cnn", "tsne@simple_cnn"}
SKIPS = ["download@resnet50", "features", "svm"]   # in dvc.yaml's order


@dataclass
class Run:
    project: Path
    env: dict
    before: dict      # snapshot() of the workspace before the run
    notebook: object  # the executed notebook (nbformat)


def trim(project):
    """dvc.yaml with the stages of KEEP only (and no plots or artifacts of the others)."""
    path = project / "dvc.yaml"
    pipeline = yaml.safe_load(path.read_text())
    stages = {}
    for name, items in KEEP.items():
        stage = pipeline["stages"][name]
        if items is not None:
            stage["foreach"] = {k: v for k, v in stage["foreach"].items() if k in items}
        stages[name] = stage
    pipeline["stages"] = stages
    pipeline.pop("plots", None)
    pipeline.pop("artifacts", None)
    path.write_text(yaml.safe_dump(pipeline, sort_keys=False))


def make(dest, env):
    project = copy_project(dest)
    trim(project)
    for name in FILES:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, project / name)
    for path, content in COMMITTED.items():
        (project / path).parent.mkdir(parents=True, exist_ok=True)
        (project / path).write_text(json.dumps(content))
    run(["git", "init", "-q"], project, env)
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-q", "-m", "pipeline"], project, env)
    return project


def snapshot(project):
    """Every file of the workspace but git's and DVC's own state and the smoke's folder."""
    skip = (".git", ".dvc/tmp", ".dvc/cache", "smoke")
    return {str(p.relative_to(project)): p.read_bytes() for p in sorted(project.rglob("*"))
            if p.is_file() and not str(p.relative_to(project)).startswith(skip)}


_DONE = {}


def smoke_run(tmp_path_factory, mirror):
    """The executed notebook, once per session (errors are kept in the cells' outputs, for
    the tests to report: each module looks at its own cells)."""
    key = tmp_path_factory.getbasetemp()
    if key not in _DONE:
        base = tmp_path_factory.mktemp("smoke")
        partial = shutil.copytree(mirror, base / "mirror-without-weights")
        shutil.rmtree(partial / "resnet50")
        env = stage_env(partial)
        project = make(base / "project", env)
        before = snapshot(project)
        notebook = nbformat.read(project / "notebooks/quickstart.ipynb", as_version=4)
        # as on a fresh Colab runtime: git knows no identity (empty HOME, no system config)
        home = base / "home"
        home.mkdir()
        fresh = {k: v for k, v in env.items()
                 if not k.startswith(("GIT_AUTHOR_", "GIT_COMMITTER_", "EMAIL"))}
        fresh.update(HOME=str(home), GIT_CONFIG_NOSYSTEM="1",
                     XDG_CONFIG_HOME=str(home / ".config"))
        NotebookClient(notebook, timeout=600, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(project / "notebooks")}}
                       ).execute(env=fresh)
        _DONE[key] = Run(project, env, before, notebook)
    return _DONE[key]


def cell_with(notebook, source):
    """The first code cell whose source contains `source`."""
    return next(cell for cell in notebook.cells
                if cell.cell_type == "code" and source in cell.source)


def text(cell):
    """The cell's printed output; a failed cell's error, as an AssertionError."""
    for out in cell.get("outputs", []):
        if out["output_type"] == "error":
            raise AssertionError(f"cell failed: {out['ename']}: {out['evalue']}\n"
                                 + "".join(o.get("text", "") for o in cell.outputs))
    return "".join(out.get("text", "") for out in cell.get("outputs", [])
                   if out["output_type"] == "stream")


def stages_run(output):
    """The stages DVC ran (or took from its run cache), from its output."""
    return {line.split("'")[1] for line in output.splitlines()
            if line.startswith("Running stage") or " is cached - skipping run" in line}
