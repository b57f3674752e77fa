"""stages/lib/core/files.py: outputs written whole (a full disk, a file-size limit or a kill
leaves the previous file or none), readable by all, never NaN; torch files loaded with the safe
unpickler only, every refusal one clean line naming the file and the command that remakes it."""
import errno
import os
import stat
import subprocess
import sys

import pytest
import torch

import helpers
from stages.lib.core import files, inference
from stages.lib.core.common import StageError


def test_metrics_are_readable_by_everyone(tmp_path):
    files.write_json(tmp_path / "m.json", {"a": 1})
    mode = stat.S_IMODE((tmp_path / "m.json").stat().st_mode)
    assert mode == 0o666 & ~files._umask() and mode & 0o044 == 0o044


def test_nan_never_reaches_a_metrics_file(tmp_path):
    with pytest.raises(StageError, match=r"m\.json: a value is not a finite number \(NaN or "
                                         r"infinity\).*try a lower learning rate"):
        files.write_json(tmp_path / "m.json", {"loss": float("nan")})
    assert list(tmp_path.iterdir()) == []


def test_a_hostile_pickle_is_refused_in_one_line_without_torch_s_advice(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))

    path = tmp_path / "model.pt"
    path.write_bytes(pickle.dumps(Evil()))
    with pytest.raises(StageError) as error:
        files.load_torch(path, "a model file of this pipeline", "dvc repro -f train@alexnet")
    message = str(error.value)
    assert message.startswith(f"{path} is not a model file of this pipeline (refused by the "
                              "safe loader: ")
    assert message.endswith("): run `dvc repro -f train@alexnet`")
    assert "weights_only" not in message and "Re-running" not in message
    assert "\n" not in message and "\x1b" not in message


@pytest.mark.parametrize("error, expected", [
    (RuntimeError(""), "RuntimeError"),                       # an empty message
    (RuntimeError("\x1b[31mPytorchStreamReader failed\x1b[0m\nmore"),
     "PytorchStreamReader failed"),
])
def test_load_errors_are_one_clean_line(error, expected):
    assert files.load_error(error) == expected


def test_a_missing_file_names_the_stage_to_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(StageError, match=r"models/alexnet\.pt not found: run "
                                         r"`dvc repro train@alexnet` first$"):
        inference.load_checkpoint("models/alexnet.pt", torch.device("cpu"))


def test_a_file_size_limit_is_one_line_like_a_full_disk(tmp_path, monkeypatch):
    def too_big(fd):
        raise OSError(errno.EFBIG, "File too large")

    monkeypatch.setattr(os, "fsync", too_big)
    with pytest.raises(StageError, match=r"^file too large for this system's limit while "
                                         r"writing .*x\.json \(see `ulimit -f`\)$"):
        files.write_json(tmp_path / "x.json", {"a": 1})
    assert list(tmp_path.iterdir()) == []


def test_figures_and_tables_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """The confusion counts (CSV) and figure (PNG) a stage writes go through the atomic write:
    a full disk is one line and the previous files stay as they were, nothing half-written."""
    import numpy as np

    from stages.lib import plots

    out = tmp_path / "plots"
    labels, preds = np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0])
    plots.write_confusion(out, labels, preds, ["a", "b"], "first")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert set(before) == {"confusion.csv", "confusion.png"}

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(StageError, match=r"^no space left on device while writing .*confusion"):
        plots.write_confusion(out, labels, 1 - preds, ["a", "b"], "second")
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


class Unknown:
    pass


def test_an_unknown_class_is_refused_without_the_advice_to_allow_it(tmp_path):
    path = tmp_path / "weights.pth"
    torch.save({"model": Unknown()}, path)
    with pytest.raises(StageError) as error:
        files.load_torch(path, "a PyTorch weights file", "dvc repro -f download@resnet50")
    message = str(error.value)
    assert "refused by the safe loader: Unsupported global: GLOBAL " in message
    assert "safe_globals" not in message and "trust" not in message and "\n" not in message


def test_a_staging_folder_a_killed_run_left_is_removed(tmp_path):
    from stages.lib.core.files import staged_folder

    (tmp_path / ".reports.staging-abc123").mkdir()
    (tmp_path / ".reports.staging-abc123" / "half.png").write_bytes(b"x")
    with staged_folder(tmp_path / "reports") as new:
        (new / "report.md").write_text("whole")
    assert [p.name for p in tmp_path.iterdir()] == ["reports"]
    assert (tmp_path / "reports/report.md").read_text() == "whole"
    assert oct((tmp_path / "reports").stat().st_mode & 0o777) != oct(0o700)


# A writer stopped between writing its bytes and putting them in place, then SIGKILLed: no
# handler, no `finally` runs, as when the power goes or the OOM killer strikes.
KILLED_WRITER = """
import os, sys, time
from pathlib import Path
from stages.lib.core import files

def stop_here(*args):
    print("writing", flush=True)
    time.sleep(600)

target = Path(sys.argv[2])
if sys.argv[1] == "file":
    os.fsync = stop_here   # write_atomic: the bytes are written, not yet renamed
    files.write_atomic(target, b"new" * 1000)
else:
    with files.staged_folder(target) as new:
        (new / "report.md").write_text("half a report")
        stop_here()
"""


def killed_midway(what, target):
    child = subprocess.Popen([sys.executable, "-c", KILLED_WRITER, what, str(target)],
                             cwd=helpers.ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
    finally:
        child.kill()
        child.wait()
        child.stdout.close()
    return child.pid


def test_a_file_write_killed_midway_leaves_the_old_file_and_a_leftover_the_next_run_removes(
        tmp_path):
    dest = tmp_path / "m.json"
    dest.write_bytes(b"old")
    pid = killed_midway("file", dest)
    assert dest.read_bytes() == b"old"
    leftovers = [p.name for p in tmp_path.iterdir() if p != dest]
    assert len(leftovers) == 1 and leftovers[0].startswith(f".m.json.{pid}.") \
        and leftovers[0].endswith(".part")
    assert files.remove_stale_parts(dest) == leftovers   # its writer is dead
    assert list(tmp_path.iterdir()) == [dest]


def test_a_folder_write_killed_midway_leaves_the_old_folder_and_the_next_write_tidies(
        tmp_path):
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "report.md").write_text("the last report")
    killed_midway("folder", reports)
    assert [p.name for p in reports.iterdir()] == ["report.md"]
    assert (reports / "report.md").read_text() == "the last report"
    assert len(list(tmp_path.glob(".reports.staging-*"))) == 1
    with files.staged_folder(reports) as new:
        (new / "report.md").write_text("whole")
    assert [p.name for p in tmp_path.iterdir()] == ["reports"]
    assert (reports / "report.md").read_text() == "whole"


def test_a_damaged_model_file(tmp_path):
    path = tmp_path / "alexnet.pt"
    path.write_bytes(b"PK\x03\x04 broken zip")
    with pytest.raises(StageError, match=r"alexnet\.pt is not a model file of this pipeline"):
        inference.load_checkpoint(path, torch.device("cpu"))
    torch.save({"arch": "alexnet", "classes": ["a"] * 10, "state_dict": {"x": torch.ones(1)}},
               path)
    with pytest.raises(StageError, match=r"is not a model file of this pipeline \(Error\(s\) "
                                         r"in loading state_dict for AlexNet"):
        inference.load_checkpoint(path, torch.device("cpu"))


def test_leftovers_of_a_killed_run_are_removed_and_live_ones_kept(tmp_path):
    dest = tmp_path / "cifar10"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    (tmp_path / f".cifar10.{dead}.abc.part").mkdir()
    (tmp_path / f".cifar10.{dead}.abc.part" / "big").write_bytes(b"x" * 100)
    (tmp_path / f".cifar10.{dead}.def.part").write_bytes(b"x")
    live = tmp_path / f".cifar10.{os.getppid()}.ghi.part"
    live.mkdir()
    other = tmp_path / f".mnist.{dead}.jkl.part"
    other.mkdir()
    removed = files.remove_stale_parts(dest)
    assert sorted(removed) == [f".cifar10.{dead}.abc.part", f".cifar10.{dead}.def.part"]
    assert live.exists() and other.exists()
