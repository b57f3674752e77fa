"""What the test modules share: the project copied into a temporary folder, the environment
stages and DVC run in, params edits, and the checks of a one-line error."""
import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import torch.nn as nn
import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY_MIRROR_UNVERIFIED = "mnist,cifar10,resnet50"
PROJECT_FILES = ["dvc.yaml", "params.yaml", ".dvcignore", ".gitignore", ".dvc/config",
                 ".dvc/.gitignore", ".dvc/plots/offline.html", ".dvc/plots/confusion_counts.json"]


def stage_env(mirror=None, **extra):
    """The environment a stage or DVC runs in: this interpreter's bin/ first on PATH (so the
    `python` in dvc.yaml commands is the project's), no analytics, no Studio, no network use."""
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(DVC_NO_ANALYTICS="1", DVC_STUDIO_OFFLINE="true", PYTHONUNBUFFERED="1",
               GIT_AUTHOR_NAME="test", GIT_AUTHOR_EMAIL="test@example.com",
               GIT_COMMITTER_NAME="test", GIT_COMMITTER_EMAIL="test@example.com")
    env.pop("DATASETS_MIRROR", None)
    env.pop("DATASETS_ACCEPT_UNVERIFIED", None)
    if mirror is not None:
        env["DATASETS_MIRROR"] = str(mirror)
        # the tiny mirror's files are made up, not upstream's: accept them, loudly
        env["DATASETS_ACCEPT_UNVERIFIED"] = TINY_MIRROR_UNVERIFIED
    env.update(extra)
    return env


def copy_project(dest):
    """The project's pipeline files (no data, no outputs) in `dest`."""
    dest = Path(dest)
    for name in PROJECT_FILES:
        (dest / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / name, dest / name)
    shutil.copytree(ROOT / "stages", dest / "stages",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    return dest


def saved_states(project, name):
    """The training states a stage (`alexnet`, `transfer-scratch`) keeps in `project` while it
    is unfinished (checkpoints.checkpoint_path), newest first."""
    folder = Path(project) / ".dvc/tmp/checkpoints"
    return sorted(folder.glob(f"{name}.*.pt"), key=lambda p: p.stat().st_mtime, reverse=True)


def wait_for_state(project, name, process, timeout=300):
    """The first training state (saved_states) a running stage writes, as soon as it is on
    disk; fails when `process` ends first or after `timeout` seconds. States are written in
    the background (checkpoints.StateWriter): an epoch's log line comes before its state."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        states = saved_states(project, name)
        if states:
            return states[0]
        assert process.poll() is None, f"the stage ended ({process.returncode}) before a state"
        time.sleep(0.02)
    raise AssertionError(f"no training state of {name} within {timeout} s")


def run_tool(name, *args, cwd, env, check=True, timeout=1800):
    """`python -m tools.<name> ARGS` in `cwd`, a project folder: the Makefile runs the scripts
    of tools/ so from the project's root; a test's project elsewhere may have no tools/ of its
    own, so PYTHONPATH names this checkout's (a clone's own tools/, the same files, come first)."""
    env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")])))
    return run([sys.executable, "-m", f"tools.{name}", *args], cwd, env, check=check,
               timeout=timeout)


def cifar_folder(tmp_path, meta):
    """An unpacked CIFAR-10 folder of two-image batches with `meta` as batches.meta."""
    import pickle

    import numpy as np

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    batch = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return folder


DELETE = object()


def edit_params(project, changes):
    """Set dotted keys in project/params.yaml (a value of DELETE removes the key)."""
    path = Path(project) / "params.yaml"
    params = yaml.safe_load(path.read_text())
    for key, value in changes.items():
        node = params
        *parents, last = key.split(".")
        for part in parents:
            node = node[part]
        if value is DELETE:
            del node[last]
        else:
            node[last] = value
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def run(cmd, cwd, env, check=True, timeout=1800):
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if check and result.returncode != 0:
        raise AssertionError(f"{cmd} failed ({result.returncode}):\n{result.stdout}\n"
                             f"{result.stderr}")
    return result


def run_stage(project, *args, mirror=None, **env):
    """`python -m stages.<args>` in `project`, as DVC would run it."""
    return run([sys.executable, "-m", *args], project, stage_env(mirror, **env), check=False)


def stage_error(project, module, *args, monkeypatch):
    """Run stages.<module>.main(args) in this process, in `project`, and return the one-line
    message of the StageError it stops with (faster than a subprocess for checking messages;
    the subprocess tests check the one-line, exit-status-1 form)."""
    import importlib

    from stages.lib.core.common import StageError, one_line

    monkeypatch.chdir(project)
    try:
        importlib.import_module(f"stages.{module}").main(list(args))
    except StageError as error:
        return one_line(error)
    raise AssertionError(f"stages.{module} {' '.join(args)} did not fail")


OUTS = {"mnist": "data/raw/mnist", "cifar10": "data/raw/cifar10",
        "hymenoptera": "data/raw/hymenoptera", "resnet50": "data/weights/resnet50.pth"}


def assert_one_line_error(result, pattern):
    """A finished stage process failed as bad input must: exit status 1, no traceback, one
    `error: ...` line on stderr matching `pattern` (warnings about unverified test data aside)."""
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.strip().splitlines()
             if not line.startswith("WARNING: UNVERIFIED DATA: ")]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    assert re.search(pattern, lines[0]), lines[0]


def closed_port():
    """A local port nobody listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens once the socket is closed


class Tiny(nn.Module):
    """A small model with the pipeline's embed/head interface, for engine tests on 1x8x8
    images."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Flatten(),
                                      nn.Linear(256, 16), nn.ReLU())
        self.head = nn.Linear(16, 2)

    def embed(self, x):
        return self.features(x)

    def forward(self, x):
        return self.head(self.embed(x))


def figure_texts(monkeypatch):
    """Patch png.save (every figure is written through it) to collect, per file name, every
    text matplotlib draws in the figure it saves (titles, axis labels, tick labels, legends,
    cell counts); returns that dict."""
    import matplotlib.text

    from stages.lib import png

    texts, save = {}, png.save

    def collecting(fig, path):
        fig.canvas.draw()
        texts[Path(path).name] = [t.get_text() for t in fig.findobj(matplotlib.text.Text)
                                  if t.get_visible() and t.get_text().strip()]
        save(fig, path)

    monkeypatch.setattr(png, "save", collecting)
    return texts


def fails(project, monkeypatch, pattern, module, *args):
    """Run stage `module` in `project` in-process; its one error line, which must match
    `pattern` (stage_error checks it is one line)."""
    message = stage_error(project, module, *args, monkeypatch=monkeypatch)
    assert re.search(pattern, message), message
    return message


def tiny_dataset(n=96, seed=0):
    """Two easy classes of 1x8x8 uint8 images (bright top half or bright bottom half), for
    engine tests with Tiny."""
    import torch

    g = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % 2
    images = torch.randint(0, 60, (n, 1, 8, 8), generator=g, dtype=torch.uint8)
    images[labels == 0, :, :4] += 150
    images[labels == 1, :, 4:] += 150
    return images, labels


def leftovers(folder):
    """The names in `folder`, sorted: what a write left there."""
    return sorted(p.name for p in Path(folder).iterdir())


class Exploit:
    """Unpickling this runs `touch <marker>`: what a crafted CIFAR-10 batch would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        import os

        return (os.system, (f"touch {self.marker}",))
