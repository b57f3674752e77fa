"""One smoke run for tests/test_smoke.py and tests/test_notebook.py: notebooks/quickstart.ipynb
executed with nbclient inside a temporary checkout (so it uses that checkout: no clone, no
install, no network), whose run cell is `python tools/smoke.py`, on the tiny mirror without
the ImageNet weights (the usual offline case). A whole-graph run costs about 5 s of process
start per stage on 2 cores, so the two modules share this one run (per pytest session) instead
of paying for two; DVC's run cache cannot help, as the training stages have uncached outputs.

The checkout is a git repo with one commit: the pipeline, smoke.yaml, tools/smoke.py, the
notebook, and results committed as a real checkout has them (the smoke must leave them alone).
"""
import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from helpers import ROOT, copy_project, run, stage_env

FILES = ["smoke.yaml", "tools/smoke.py", "notebooks/quickstart.ipynb"]
COMMITTED = {"metrics/simple_cnn.json": {"best_val_accuracy": 0.99, "best_epoch": 8},
             "plots/simple_cnn/evaluation.json": {"epochs": 10}}
NEED_WEIGHTS = {"download@resnet50", "features", "svm", "transfer@finetune",
                "transfer@finetune_aug", "compare", "report"}
WITHOUT_WEIGHTS = {"download@mnist", "download@cifar10", "download@hymenoptera", "datasets",
                   "train@simple_cnn", "train@alexnet", "tsne@simple_cnn", "tsne@alexnet",
                   "transfer@scratch"}


@dataclass
class Run:
    project: Path
    env: dict
    before: dict      # snapshot() of the workspace before the run
    notebook: object  # the executed notebook (nbformat)


def make(dest, env):
    project = copy_project(dest)
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


_RUNS = {}


def smoke_run(tmp_path_factory, mirror):
    """The executed notebook, once per session (errors are kept in the cells' outputs, for
    the tests to report: each module looks at its own cells)."""
    key = tmp_path_factory.getbasetemp()
    if key not in _RUNS:
        base = tmp_path_factory.mktemp("smoke")
        partial = shutil.copytree(mirror, base / "mirror-without-weights")
        shutil.rmtree(partial / "resnet50")
        env = stage_env(partial)
        project = make(base / "project", env)
        before = snapshot(project)
        notebook = nbformat.read(project / "notebooks/quickstart.ipynb", as_version=4)
        NotebookClient(notebook, timeout=600, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(project / "notebooks")}}
                       ).execute(env=env)
        _RUNS[key] = Run(project, env, before, notebook)
    return _RUNS[key]


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
