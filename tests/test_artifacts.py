"""dvc.yaml's `artifacts:` (issue 17, point 8): the trained models, declared for `dvc artifacts
get` and model registries, each at a path that a stage declares as an output."""
import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
# what params.yaml trains
PARAMS = yaml.safe_load((ROOT / "params.yaml").read_text())
MODELS = {*(f"models/{m}.pt" for m in PARAMS["models"]),
          *(f"models/transfer/{s}.pt" for s in PARAMS["strategies"])}
# GTO's artifact name rule (gto.constants.name_re, which DVC checks), lowercase as in DVC's
# example projects
NAME = re.compile(r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$")


def dvc_yaml():
    return yaml.safe_load((ROOT / "dvc.yaml").read_text())


def declared_outs():
    """{output path: stage name} over every stage, as DVC resolves dvc.yaml (foreach lists
    from params.yaml)."""
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        return {out.def_path: stage.addressing for stage in repo.index.stages
                for out in stage.outs}


def test_every_trained_model_is_a_model_artifact():
    artifacts = dvc_yaml()["artifacts"]
    assert {a["path"] for a in artifacts.values()} == MODELS
    for name, artifact in artifacts.items():
        assert NAME.match(name), f"{name}: not a valid artifact name"
        assert artifact["type"] == "model", name
        assert isinstance(artifact["desc"], str) and artifact["desc"].strip(), name
        assert artifact["labels"] and all(isinstance(x, str) for x in artifact["labels"]), name
        assert set(artifact) <= {"path", "type", "desc", "labels", "meta"}, name


def test_artifacts_are_declared_outputs_of_the_stage_they_name():
    outs = declared_outs()
    for name, artifact in dvc_yaml()["artifacts"].items():
        assert artifact["path"] in outs, f"{name}: {artifact['path']} is no stage's output"
        assert f"({outs[artifact['path']]})" in artifact["desc"], name


def test_dvc_reads_the_artifacts():
    from dvc.repo import Repo
    from dvc.repo.artifacts import check_name_format

    with Repo(str(ROOT)) as repo:
        read = repo.artifacts.read()["dvc.yaml"]
    assert {a.path for a in read.values()} == MODELS
    for name in read:
        check_name_format(name)
