"""A training stage killed with SIGKILL in the middle of an epoch goes on from its last
checkpoint and ends with the same bytes as a run that was never interrupted; a checkpoint from
other params or code, a damaged one, or that of a finished run is not resumed."""
import errno
import os
import shutil
import signal
import subprocess
import sys

import pytest
import torch

from helpers import copy_project, edit_params, run_stage, stage_env
from stages.lib import engine, files
from stages.lib.common import StageError

SMALL = {"alexnet.epochs": 3, "alexnet.batch_size": 32, "alexnet.eval_batch_size": 64}
OUTPUTS = ["metrics/alexnet.json", "models/alexnet.pt", "models/alexnet.last.pt",
           "plots/alexnet/curves.png", "plots/alexnet/confusion.csv",
           "plots/alexnet/confusion.png", "plots/alexnet/live/metrics.json",
           *[f"plots/alexnet/live/plots/metrics/{split}/{name}.tsv"
             for split in ("train", "val") for name in ("loss", "accuracy")]]

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def cifar(tmp_path_factory, mirror):
    where = copy_project(tmp_path_factory.mktemp("cifar") / "project")
    result = run_stage(where, "stages.download", "cifar10", "data/raw/cifar10", mirror=mirror)
    assert result.returncode == 0, result.stderr
    return where / "data/raw/cifar10"


@pytest.fixture(scope="module")
def reference(tmp_path_factory, cifar):
    """An uninterrupted run: the bytes every resumed run must end with."""
    project = make(tmp_path_factory.mktemp("reference") / "project", cifar)
    result = run_stage(project, "stages.train", "alexnet", "cifar10")
    assert result.returncode == 0, result.stderr
    assert "resuming" not in result.stdout
    return project


def make(path, cifar):
    project = copy_project(path)
    shutil.copytree(cifar, project / "data/raw/cifar10")
    edit_params(project, SMALL)
    return project


def contents(project):
    return {name: (project / name).read_bytes() for name in OUTPUTS}


def kill_in_epoch_2(project):
    """Start the stage and SIGKILL it once epoch 1 is checkpointed and epoch 2 under way."""
    process = subprocess.Popen([sys.executable, "-m", "stages.train", "alexnet", "cifar10"],
                               cwd=project, env=stage_env(), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    for line in process.stdout:
        if line.startswith("epoch   1/3"):
            process.send_signal(signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, process.stderr.read()
    state = torch.load(project / "models/alexnet.ckpt.pt", weights_only=True)
    assert state["epoch"] == 1 and not state["complete"]
    assert not (project / "metrics/alexnet.json").exists()


def test_killed_mid_epoch_resumes_to_identical_bytes(reference, cifar, tmp_path):
    project = make(tmp_path / "project", cifar)
    kill_in_epoch_2(project)
    result = run_stage(project, "stages.train", "alexnet", "cifar10")
    assert result.returncode == 0, result.stderr
    assert "resuming after epoch 1 of 3 from models/alexnet.ckpt.pt" in result.stdout
    assert contents(project) == contents(reference)
    assert torch.load(project / "models/alexnet.ckpt.pt", weights_only=True) == {
        "fingerprint": torch.load(reference / "models/alexnet.ckpt.pt",
                                  weights_only=True)["fingerprint"],
        "complete": True, "epoch": 3}


def test_a_checkpoint_of_other_params_is_discarded(reference, cifar, tmp_path):
    project = make(tmp_path / "project", cifar)
    kill_in_epoch_2(project)
    edit_params(project, {"alexnet.lr": 0.001})
    result = run_stage(project, "stages.train", "alexnet", "cifar10")
    assert result.returncode == 0, result.stderr
    assert ("checkpoint models/alexnet.ckpt.pt is from other params, code or data; discarded, "
            "training from the first epoch") in result.stdout
    assert "resuming" not in result.stdout


def test_the_fingerprint_follows_params_code_and_data(tmp_path):
    """What decides whether a checkpoint is resumed: any change to params, a code file or a
    data file gives another fingerprint (the subprocess test above shows the discard)."""
    code, data = tmp_path / "code.py", tmp_path / "train.pt"
    code.write_text("x = 1\n")
    data.write_bytes(b"data")
    base = engine.fingerprint_of({"lr": 0.1}, code, data)
    assert engine.fingerprint_of({"lr": 0.1}, code, data) == base
    assert engine.fingerprint_of({"lr": 0.2}, code, data) != base
    code.write_text("x = 2\n")
    assert engine.fingerprint_of({"lr": 0.1}, code, data) != base
    code.write_text("x = 1\n")
    data.write_bytes(b"other")
    assert engine.fingerprint_of({"lr": 0.1}, code, data) != base


def test_a_damaged_checkpoint_is_not_resumed(reference, cifar, tmp_path):
    project = make(tmp_path / "project", cifar)
    kill_in_epoch_2(project)
    path = project / "models/alexnet.ckpt.pt"
    path.write_bytes(path.read_bytes()[:1000])
    result = run_stage(project, "stages.train", "alexnet", "cifar10")
    assert result.returncode == 0, result.stderr
    assert "checkpoint models/alexnet.ckpt.pt is unreadable" in result.stdout
    assert contents(project) == contents(reference)


def test_a_finished_run_trains_anew(reference, tmp_path):
    project = shutil.copytree(reference, tmp_path / "project")
    result = run_stage(project, "stages.train", "alexnet", "cifar10")
    assert result.returncode == 0, result.stderr
    assert "resuming" not in result.stdout and "epoch   1/3" in result.stdout
    assert contents(project) == contents(reference)


def test_a_failed_save_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "x.ckpt.pt"
    files.save_torch({"epoch": 1}, path)
    before = path.read_bytes()

    def full_disk(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full_disk)
    with pytest.raises(StageError, match=rf"^no space left on device while writing {path}$"):
        files.save_torch({"epoch": 2}, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.ckpt.pt"]


def test_rng_state_round_trips_through_a_weights_only_file(tmp_path):
    import random

    import numpy as np

    generator = torch.Generator().manual_seed(3)
    files.save_torch(engine.get_rng_state([generator]), tmp_path / "rng.pt")
    expected = (torch.rand(3), torch.rand(2, generator=generator), np.random.rand(2),
                random.random())
    engine.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), [generator])
    again = (torch.rand(3), torch.rand(2, generator=generator), np.random.rand(2),
             random.random())
    assert torch.equal(expected[0], again[0]) and torch.equal(expected[1], again[1])
    assert (expected[2] == again[2]).all() and expected[3] == again[3]
