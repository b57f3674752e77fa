"""A training stage killed with SIGKILL in the middle of an epoch goes on from its last
checkpoint (kept outside DVC's outputs, in .dvc/tmp/checkpoints/) and ends with the same bytes
as a run that was never interrupted; a checkpoint from other params or code or a damaged one is
not resumed; a finished run leaves no checkpoint."""
import errno
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import (
    copy_project,
    edit_params,
    run_stage,
    saved_states,
    stage_env,
    wait_for_state,
)
from stages.lib.core import checkpoints, files
from stages.lib.core.common import StageError

SMALL = {"alexnet.epochs": 3, "alexnet.batch_size": 32, "alexnet.eval_batch_size": 64}
OUTPUTS = ["metrics/alexnet.json", "models/alexnet.pt", "plots/alexnet/evaluation.json",
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
    """Start the stage and SIGKILL it once epoch 1's state is on disk; returns the epoch its
    checkpoint holds (1, or 2 when epoch 2 was saved before the kill landed)."""
    with open(project / "stderr.txt", "w") as stderr:
        process = subprocess.Popen([sys.executable, "-m", "stages.train", "alexnet", "cifar10"],
                                   cwd=project, env=stage_env(), stdout=subprocess.DEVNULL,
                                   stderr=stderr)
    wait_for_state(project, "alexnet", process)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, (project / "stderr.txt").read_text()
    [path] = saved_states(project, "alexnet")
    state = torch.load(path, weights_only=True)
    assert 1 <= state["epoch"] < 3 and len(state["history"]) == state["epoch"]
    assert not (project / "metrics/alexnet.json").exists()
    return state["epoch"]


def test_killed_mid_epoch_resumes_to_identical_bytes(reference, cifar, tmp_path):
    project = make(tmp_path / "project", cifar)
    epoch = kill_in_epoch_2(project)
    [path] = saved_states(project, "alexnet")
    result = run_stage(project, "stages.train", "alexnet", "cifar10")
    assert result.returncode == 0, result.stderr
    assert f"resuming after epoch {epoch} of 3 from {path.relative_to(project)}" in result.stdout
    assert contents(project) == contents(reference)
    assert saved_states(project, "alexnet") == []   # a finished run keeps no training state


def test_a_checkpoint_of_other_params_is_discarded(reference, cifar, tmp_path):
    project = make(tmp_path / "project", cifar)
    kill_in_epoch_2(project)
    [first] = saved_states(project, "alexnet")
    edit_params(project, {"alexnet.lr": 0.001})
    result = run_stage(project, "stages.train", "alexnet", "cifar10")
    assert result.returncode == 0, result.stderr
    assert "resuming" not in result.stdout
    # the other params' state stays, to resume when they come back; this run's own is gone
    assert saved_states(project, "alexnet") == [first]
    # a state whose file name matches but whose content names other params is not used
    assert checkpoints.load_training_state(first, "1" * 16) is None


def test_older_unfinished_runs_are_removed_beyond_the_newest(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    (tmp_path / ".dvc").mkdir()
    states = [checkpoints.checkpoint_path("alexnet", f"{i:016x}") for i in range(4)]
    for i, path in enumerate(states):
        files.save_torch({"epoch": 1}, path)
        os.utime(path, (1000 + i, 1000 + i))
    leftover = path.parent / ".alexnet.0000000000000009.pt.abcd"   # a save killed midway
    leftover.write_bytes(b"x")
    other = checkpoints.checkpoint_path("simple_cnn", "f" * 16)
    files.save_torch({"epoch": 1}, other)
    checkpoints.tidy_checkpoints(states[0])
    kept = sorted(p.name for p in path.parent.iterdir())
    assert kept == sorted([states[0].name, states[3].name, states[2].name, other.name])
    assert f"removed the training state of an older unfinished run: {states[1]}" \
        in capsys.readouterr().out


def test_the_fingerprint_follows_params_code_and_data(tmp_path):
    """What decides whether a checkpoint is resumed: any change to params, a code file or a
    data file gives another fingerprint (the subprocess test above shows the discard)."""
    code, data = tmp_path / "code.py", tmp_path / "train.pt"
    code.write_text("x = 1\n")
    data.write_bytes(b"data")
    base = checkpoints.fingerprint_of({"lr": 0.1}, code, data)
    assert checkpoints.fingerprint_of({"lr": 0.1}, code, data) == base
    assert checkpoints.fingerprint_of({"lr": 0.2}, code, data) != base
    code.write_text("x = 2\n")
    assert checkpoints.fingerprint_of({"lr": 0.1}, code, data) != base
    code.write_text("x = 1\n")
    data.write_bytes(b"other")
    assert checkpoints.fingerprint_of({"lr": 0.1}, code, data) != base


def test_a_damaged_checkpoint_is_not_resumed(reference, cifar, tmp_path):
    project = make(tmp_path / "project", cifar)
    kill_in_epoch_2(project)
    [path] = saved_states(project, "alexnet")
    path.write_bytes(path.read_bytes()[:1000])
    result = run_stage(project, "stages.train", "alexnet", "cifar10")
    assert result.returncode == 0, result.stderr
    assert f"checkpoint {path.relative_to(project)} is unreadable" in result.stdout
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
    files.save_torch(checkpoints.get_rng_state([generator]), tmp_path / "rng.pt")
    expected = (torch.rand(3), torch.rand(2, generator=generator), np.random.rand(2),
                random.random())
    checkpoints.set_rng_state(torch.load(tmp_path / "rng.pt", weights_only=True), [generator])
    again = (torch.rand(3), torch.rand(2, generator=generator), np.random.rand(2),
             random.random())
    assert torch.equal(expected[0], again[0]) and torch.equal(expected[1], again[1])
    assert (expected[2] == again[2]).all() and expected[3] == again[3]


def test_the_state_written_in_the_background_is_the_one_of_its_epoch(tmp_path):
    """StateWriter.save copies the state before it returns: the next epoch changing the
    weights and the optimizer in place does not reach the file."""
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    optimizer.step()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    momentum = optimizer.state_dict()["state"][0]["momentum_buffer"].clone()
    path = tmp_path / "state.pt"
    with checkpoints.StateWriter() as writer:
        writer.save(path, "f" * 16, model=model, optimizer=optimizer, scheduler=None,
                    scaler=None, rng=[checkpoints.get_rng_state()], history=[{"epoch": 1}])
        with torch.no_grad():   # the next epoch, at once
            model.weight.add_(1.0)
        model(torch.ones(1, 3)).sum().backward()
        optimizer.step()
    saved = checkpoints.load_training_state(path, "f" * 16)
    assert saved["epoch"] == 1 and saved["history"] == [{"epoch": 1}]
    assert all(torch.equal(saved["model"][k], v) for k, v in before.items())
    assert saved["model"]._metadata == model.state_dict()._metadata   # versions kept
    assert torch.equal(saved["optimizer"]["state"][0]["momentum_buffer"], momentum)


def test_a_background_write_that_fails_stops_training_in_one_line(tmp_path, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    state = dict(model=model, optimizer=optimizer, scheduler=None, scaler=None, rng=[],
                 history=[{"epoch": 1}])
    no_space = r"^no space left on device while writing .*state\.pt$"
    with checkpoints.StateWriter() as writer:
        writer.save(tmp_path / "state.pt", "f" * 16, **state)
        with pytest.raises(StageError, match=no_space):
            writer.save(tmp_path / "state.pt", "f" * 16, **state)   # the next epoch's save
    with pytest.raises(StageError, match=no_space):   # the last write, when leaving
        with checkpoints.StateWriter() as writer:
            writer.save(tmp_path / "state.pt", "f" * 16, **state)
    assert list(tmp_path.iterdir()) == []   # no partial file


def test_the_fingerprint_covers_every_source_file_of_the_pipeline():
    root = Path(checkpoints.__file__).resolve().parents[3]
    found = {p.relative_to(root).as_posix() for p in checkpoints.code_files()}
    assert found == {p.relative_to(root).as_posix() for p in (root / "stages").rglob("*.py")}
    assert {"stages/train.py", "stages/transfer.py", "stages/lib/images.py",
            "stages/lib/core/engine.py"} <= found
