"""The GPU check (tools/gpu_check.py), its bundle (tools/gpu_bundle.py) and its rehearsal
(tools/gpu_rehearsal.py) on a machine without a GPU: the dry run names every step in order and
runs none; wrong arguments get one line; the package list stops at the machine's image; the
shrunk pictures decode to the originals' tensors (and a picture that would not is refused); a
bundle over the size limit is refused; the budget stops a step and still writes the summary;
and the whole check runs on a stand-in interpreter from a clone (e2e)."""
import argparse
import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from readme_commands import clone_project

import tiny_mirror
from helpers import ROOT, run_tool
from stages.lib import images
from stages.lib.core import data
from tools import gpu_bundle, gpu_check


def check(*args, cwd=ROOT, env=None, timeout=60):
    """`python3 -m tools.gpu_check ARGS` in `cwd`."""
    return run_tool("gpu_check", *args, cwd=cwd, env=env or os.environ, check=False,
                    timeout=timeout)


def empty_mirror(tmp_path):
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "SHA256SUMS").write_text("")
    return folder


def test_dry_run_names_every_step_in_order_and_runs_none(tmp_path):
    out = tmp_path / "out"
    result = check("--dry-run", "--mirror", str(empty_mirror(tmp_path)), "--out", str(out))
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("would ")]
    stages = [line.rsplit(" ", 1)[-1] for line in lines if "dvc repro" in line]
    assert lines[0] == "would run: nvidia-smi"
    assert "-m pytest -q -m gpu" in lines[1] and "tests/test_gpu.py" in lines[1]
    assert "tests/test_s3_remote.py" not in lines[1]   # moto is not on a GPU machine
    assert stages == ["download@mnist", "download@cifar10", "download@hymenoptera", "datasets",
                      "train@simple_cnn", "tsne@simple_cnn", "train@alexnet", "tsne@alexnet",
                      "transfer@scratch", "train@simple_cnn"]
    assert lines[-1] == f"would write: {out}/gpu_check.md"
    assert not out.exists()


@pytest.mark.parametrize("args, message", [
    (["--frobnicate"], "unrecognized arguments: --frobnicate"),
    (["--mirror"], "argument --mirror: expected one argument"),
    (["--mirror", "/nonexistent"], "/nonexistent is not a datasets mirror (no SHA256SUMS"),
    (["--bundle", "/nonexistent"], "/nonexistent is not a bundle (no bundle.json"),
    (["--budget", "0"], "--budget must be a positive number of seconds"),
])
def test_wrong_arguments_get_one_line(tmp_path, args, message):
    result = check(*args, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and result.stdout == ""
    assert len(lines) == 1 and lines[0].startswith(f"gpu_check: {message}"), lines


def test_the_budget_stops_a_step_and_the_summary_is_still_written(tmp_path):
    args = argparse.Namespace(budget=1.5, dry_run=False, out=tmp_path, mirror=tmp_path)
    run = gpu_check.Check(args)
    assert not run.run("slow step", [sys.executable, "-c", "import time; time.sleep(30)"],
                       "repro.log")
    assert not run.run("next step", [sys.executable, "-c", "pass"], "repro.log")
    summary = json.loads((tmp_path / "gpu_check.json").read_text())
    assert [(s["step"], s["status"]) for s in summary["steps"]] == [
        ("slow step", "out of time"), ("next step", "not run")]
    assert summary["steps"][0]["seconds"] < 10 and not summary["passed"]
    assert "| slow step |" in (tmp_path / "gpu_check.md").read_text()


def test_carried_packages_stop_at_the_machines_image():
    machine = gpu_bundle.machine_packages()
    assert {"torch", "torchvision", "scikit-learn", "pytest", "rich", "pip"} <= machine
    carry = gpu_bundle.packages_to_carry(["dvc", "dvclive", "torch"], machine)
    assert {"dvc", "dvclive", "dvc-data", "scmrepo", "dulwich"} <= set(carry)
    assert not set(carry) & machine                       # rich: dvc needs it, the machine has it
    assert not set(carry) & set(gpu_bundle.NOT_CARRIED)   # nor what only they need:
    assert "cffi" not in carry                            # cryptography's and pygit2's
    assert carry["dvc"] == __import__("importlib.metadata").metadata.version("dvc")
    assert "weasyprint" not in [n.lower() for n in gpu_bundle.requirement_roots()]


def test_the_shrunk_pictures_are_what_the_stages_see(tmp_path):
    archive = tmp_path / "set.zip"
    tiny_mirror.write_image_folder_zip(archive, np.random.default_rng(0),
                                       {"train": 2, "val": 1}, size=300)
    note = gpu_bundle.bundle_imagefolder(archive, tmp_path / "out" / "set.zip", 64)
    assert "6 pictures" in note   # 2 classes x 3 (the upstream's .gif placeholder is none)
    decode = images.decode_transform(64)
    with zipfile.ZipFile(archive) as a, zipfile.ZipFile(tmp_path / "out" / "set.zip") as b:
        originals = sorted(n for n in a.namelist()
                           if Path(n).suffix.lower() in images.IMG_EXTENSIONS)
        shrunk = sorted(n for n in b.namelist())
        assert [Path(n).with_suffix("").as_posix() for n in originals] == \
            [Path(n).with_suffix("").as_posix() for n in shrunk]
        for old, new in zip(originals, shrunk):
            before = decode(images.rgb(Image.open(a.open(old)), old))
            after = decode(images.rgb(Image.open(b.open(new)), new))
            assert torch.equal(before, after), new
        assert Image.open(b.open(shrunk[0])).format == "WEBP"
    assert (tmp_path / "out" / "set.zip").stat().st_size < archive.stat().st_size


def test_a_picture_that_would_change_is_refused(tmp_path, monkeypatch, capsys):
    archive = tmp_path / "set.zip"
    tiny_mirror.write_image_folder_zip(archive, np.random.default_rng(0), {"train": 1},
                                       size=100)
    shrink = gpu_bundle.evaluation_view_only
    monkeypatch.setattr(gpu_bundle, "evaluation_view_only",
                        lambda picture, size: shrink(picture, size - 2))   # one pixel off
    with pytest.raises(SystemExit) as stop:
        gpu_bundle.bundle_imagefolder(archive, tmp_path / "out.zip", 64)
    assert stop.value.code == 1
    assert "does not decode to the original's tensor" in capsys.readouterr().err


def test_the_cifar10_subset_keeps_each_class(tmp_path):
    tiny_mirror.build(tmp_path / "mirror", mnist=(20, 10), cifar=(200, 60), weights=False)
    note = gpu_bundle.bundle_cifar10(tmp_path / "mirror", tmp_path / "out",
                                     {"train": 3, "val": 2})
    assert "first 3 training and 2 test images of each class at most (30 of 200 and 20 of 60)" \
        in note
    from stages.lib import archives
    (tmp_path / "x").mkdir()
    archives.extract(tmp_path / "out" / "cifar10" / "cifar-10-python.tar.gz",
                     tmp_path / "x", max_bytes=2**20)
    splits, classes = data.read_cifar10(tmp_path / "x" / "cifar-10-batches-py")
    assert len(classes) == 10
    for split, per_class in (("train", 3), ("val", 2)):
        labels = splits[split][1]
        assert torch.equal(torch.bincount(labels, minlength=10), torch.full((10,), per_class))


@pytest.mark.e2e   # the bundle command on a data mirror, in a process
def test_a_bundle_over_the_limit_is_refused(tmp_path):
    tiny_mirror.build(tmp_path / "mirror", mnist=(20, 10), cifar=(50, 20),
                      hymenoptera={"train": 2, "val": 1}, weights=False)
    out = tmp_path / "bundle"
    result = run_tool("gpu_bundle", "--no-wheels", "--mirror", str(tmp_path / "mirror"), "--out",
                      str(out), "--limit-mib", "0.5", cwd=ROOT, env=os.environ, check=False,
                      timeout=300)
    assert result.returncode == 1
    errors = result.stderr.strip().splitlines()
    assert len(errors) == 1 and "is over the 0.5 MiB limit: no bundle is left" in errors[0]
    assert not (out / "bundle.json").exists() and not (out / "mirror").exists()


@pytest.mark.e2e
def test_the_rehearsal_passes_from_a_clone(tmp_path):
    """`python -m tools.gpu_bundle --no-wheels` and `python -m tools.gpu_rehearsal
    --link-packages` in a clone, on a tiny mirror: the stand-in interpreter holds only the
    machine's packages and the bundle's, and the check passes on it, with the same bytes twice
    (the check itself run as the lent machine runs it: `python3 -m tools.gpu_check` from the
    checkout's root)."""
    project = clone_project(tmp_path / "project", None)
    tiny_mirror.build(tmp_path / "mirror", hymenoptera={"train": 4, "val": 2}, weights=False)
    python = str(project / ".venv" / "bin" / "python")
    bundle = subprocess.run([python, "-m", "tools.gpu_bundle", "--no-wheels", "--mirror",
                             str(tmp_path / "mirror")], cwd=project, capture_output=True,
                            text=True, timeout=300)
    assert bundle.returncode == 0, bundle.stderr
    assert "carry [\"build/gpu\"], timeout_s 560" in bundle.stdout
    rehearsal = subprocess.run([python, "-m", "tools.gpu_rehearsal", "--link-packages"],
                               cwd=project, capture_output=True, text=True, timeout=600,
                               env={**os.environ, "DATASETS_ACCEPT_UNVERIFIED": "mnist"})
    assert rehearsal.returncode == 0, rehearsal.stdout[-3000:] + rehearsal.stderr[-3000:]
    summary = json.loads((project / "build/gpu-rehearsal/out/gpu_check.json").read_text())
    assert summary["passed"] and summary["train@simple_cnn twice, same bytes"].startswith("yes")
    assert [s["step"] for s in summary["steps"]][-3:] == [
        "tsne@alexnet", "transfer@scratch", "train@simple_cnn again"]
    assert any("hymenoptera_data: 12 pictures" in note for note in summary["bundle"])
    standin = project / "build/gpu-rehearsal/standin"
    found = subprocess.run([standin / "bin" / "python", "-c", "import importlib.util as u; "
                            "print([m for m in ('torch', 'dvc', 'moto', 'weasyprint', 'pygit2')"
                            " if u.find_spec(m)])"], capture_output=True, text=True)
    assert found.stdout.strip() == "['torch', 'dvc']"
    assert sorted(p.name for p in (project / "build/gpu-rehearsal/out").iterdir()) == [
        "gpu_check.json", "gpu_check.md", "repro.log", "tests.log"]
