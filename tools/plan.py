"""Which stages can run here: the ImageNet weights are the one input an offline mirror may lack
(none can be had without the network), and every stage downstream of download@resnet50 needs
them. `make smoke` (smoke.py) and `make repro` (repro.py) leave those stages out up front and
name them at the end, instead of stopping at download@resnet50 with the rest of the practical
not run.

A module of tools/, imported by its scripts (`from tools.plan import plan`)."""
import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS_STAGE = "download@resnet50"


@dataclass(frozen=True)
class Plan:
    stages: list          # every stage of dvc.yaml, in its order
    needs_weights: set    # download@resnet50 and every stage downstream of it
    missing: str | None   # why the weights cannot be had here; None: they can
    outs: dict            # stage -> [(path relative to the project, cached by DVC?)]

    @property
    def runnable(self):
        """The stages to run: all of them, or those that do not need the missing weights."""
        return [s for s in self.stages if not self.missing or s not in self.needs_weights]

    @property
    def skipped(self):
        return [s for s in self.stages if s not in self.runnable]

    def skipped_line(self):
        """The one line that names what was left out and why (README: Offline mirror)."""
        return (f"skipped {', '.join(self.skipped)}: they need the ImageNet weights, and "
                f"{self.missing} (README: Offline mirror)")


def plan(root=ROOT):
    import networkx as nx
    from dvc.repo import Repo

    # DVC names stages relative to the current folder: from the project's, as dvc.yaml does
    with contextlib.chdir(root), Repo(str(root)) as repo:
        graph = repo.index.graph
        stages = {stage.addressing: stage for stage in repo.index.stages}
        weights = stages.get(WEIGHTS_STAGE)
        outs = {name: [(out.def_path, out.use_cache) for out in stage.outs]
                for name, stage in stages.items()}
        if weights is None:   # a pipeline without the ImageNet weights
            return Plan(list(stages), set(), None, outs)
        needs = {WEIGHTS_STAGE} | {stage.addressing for stage in nx.ancestors(graph, weights)}
        missing = weights_missing(repo, weights, Path(root))
    return Plan(list(stages), needs, missing, outs)


def weights_missing(repo, stage, root=ROOT):
    """Why the run cannot have the ImageNet weights, or None when it can: downloaded (no
    mirror), copied from the mirror, or already in the workspace and up to date."""
    mirror = os.environ.get("DATASETS_MIRROR")
    if not mirror:
        return None
    params = yaml.safe_load((root / "params.yaml").read_text())
    try:
        from torchvision.models import ResNet50_Weights

        filename = Path(ResNet50_Weights[params["download"]["resnet50"]["weights"]].url).name
    except (KeyError, TypeError):
        return None   # bad params: the stage itself says what is wrong
    if (Path(mirror).expanduser() / "resnet50" / filename).is_file():
        return None
    if all(Path(out.fs_path).exists() for out in stage.outs) and \
            not repo.status(targets=[stage.addressing]):
        return None
    return f"the mirror {mirror} has no resnet50/{filename}"
