"""Data is untrusted, also from a mirror: no code runs from a pickle, files are checked against
their upstream checksums, archives are bounded, a full disk is named, and stages die with their
parent and refuse to run twice at once."""
import gzip
import hashlib
import io
import os
import pickle
import select
import shutil
import signal
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

from helpers import OUTS, assert_one_line_error, cifar_folder, run_stage, stage_env, stage_error
from stages import download
from stages.lib import archives
from stages.lib.core import data, files
from stages.lib.core.common import StageError
from stages.lib.mirror import copy_from_mirror
from tiny_mirror import write_sha256sums


class Exploit:
    """Unpickling this runs `touch <marker>`: what a crafted CIFAR-10 batch would do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_a_pickle_that_runs_code_is_refused_and_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    folder = cifar_folder(tmp_path, {b"label_names": [b"a", b"b"], b"x": Exploit(marker)})
    with pytest.raises(StageError, match=r"CIFAR-10 file batches\.meta is corrupt or unsafe: "
                                         r"refused to load posix\.system"):
        data.read_cifar10(folder)
    assert not marker.exists()


def test_the_restricted_unpickler_reads_real_batch_layouts(tmp_path):
    """Python-2 style byte strings and Python-3 protocol-2 bytes (via _codecs) both load."""
    folder = cifar_folder(tmp_path, {b"label_names": [b"cat", b"dog"], b"num_vis": 3072})
    splits, classes = data.read_cifar10(folder)
    assert classes == ["cat", "dog"]
    assert splits["train"][0].shape == (10, 3, 32, 32) and splits["val"][1].tolist() == [0, 1]


@pytest.mark.parametrize("batch, pattern", [
    ({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]},
     r"'data' must be a uint8 array of shape \(N, 3072\), got uint8 array of shape \(2, 100\)"),
    ({b"data": np.zeros((2, 3072), np.float32), b"labels": [0, 1]}, r"got float32 array"),
    ({b"data": [1, 2], b"labels": [0, 1]}, r"got list"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 7]}, r"'labels' must be 2 integers "
                                                                  r"in 0\.\.1"),
    ({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}, r"'labels' must be 2 integers"),
    ([1, 2, 3], r"data_batch_1 is not a batch"),
])
def test_a_batch_of_the_wrong_shape_or_type_is_one_error(tmp_path, batch, pattern):
    folder = cifar_folder(tmp_path, {b"label_names": [b"a", b"b"]})
    (folder / "data_batch_1").write_bytes(pickle.dumps(batch, protocol=2))
    with pytest.raises(StageError, match=pattern):
        data.read_cifar10(folder)


def hostile_mirror(mirror, dest, marker):
    """A copy of the tiny mirror whose CIFAR-10 archive carries an exploit in batches.meta,
    listed in the mirror's own SHA256SUMS (so only the upstream check and the unpickler stand
    in the way)."""
    dest = shutil.copytree(mirror, dest)
    archive = dest / "cifar10/cifar-10-python.tar.gz"
    with tarfile.open(mirror / "cifar10/cifar-10-python.tar.gz") as src, \
            tarfile.open(archive, "w:gz") as out:
        for member in src.getmembers():
            payload = src.extractfile(member).read()
            if member.name.endswith("batches.meta"):
                payload = pickle.dumps({b"label_names": [b"a"] * 10, b"x": Exploit(marker)},
                                       protocol=2)
            member.size = len(payload)
            out.addfile(member, io.BytesIO(payload))
    write_sha256sums(dest)
    return dest


def test_download_of_a_hostile_cifar_archive_runs_no_code(project, mirror, tmp_path):
    marker = tmp_path / "pwned"
    bad = hostile_mirror(mirror, tmp_path / "m", marker)
    # refused first as not upstream's file; accepted as unverified, the unpickler refuses it
    refused = run_stage(project, "stages.download", "cifar10", OUTS["cifar10"], mirror=bad,
                        DATASETS_ACCEPT_UNVERIFIED="")
    assert_one_line_error(refused, r"cifar-10-python\.tar\.gz from the mirror is not the "
                                   r"CIFAR-10 release .*DATASETS_ACCEPT_UNVERIFIED=cifar10")
    result = run_stage(project, "stages.download", "cifar10", OUTS["cifar10"], mirror=bad)
    assert_one_line_error(result, r"CIFAR-10 file batches\.meta is corrupt or unsafe: refused "
                                  r"to load posix\.system")
    assert not marker.exists()
    assert not (project / "data/raw").exists() or not list((project / "data/raw").iterdir())


# ---------------------------------------------------------------- upstream checksums

def test_random_weights_in_a_mirror_are_not_imagenet_weights(project, mirror):
    result = run_stage(project, "stages.download", "resnet50", OUTS["resnet50"], mirror=mirror,
                       DATASETS_ACCEPT_UNVERIFIED="mnist,cifar10")
    assert_one_line_error(result, r"resnet50-0676ba61\.pth from the mirror is not "
                                  r"torchvision's IMAGENET1K_V1 file \(its sha256 [0-9a-f]{16}"
                                  r"\.\.\. does not start with 0676ba61\); if you trust this "
                                  r"copy anyway, set DATASETS_ACCEPT_UNVERIFIED=resnet50")
    assert not (project / OUTS["resnet50"]).exists()


def test_accepting_unverified_weights_is_explicit_and_loud(project, mirror):
    result = run_stage(project, "stages.download", "resnet50", OUTS["resnet50"], mirror=mirror,
                       DATASETS_ACCEPT_UNVERIFIED="resnet50")
    assert result.returncode == 0, result.stderr
    assert "WARNING: UNVERIFIED DATA: resnet50-0676ba61.pth from the mirror is not " \
           "torchvision's IMAGENET1K_V1 file" in result.stderr
    assert (project / OUTS["resnet50"]).is_file()


def test_made_up_mnist_is_refused_without_the_switch(project, mirror):
    result = run_stage(project, "stages.download", "mnist", OUTS["mnist"], mirror=mirror,
                       DATASETS_ACCEPT_UNVERIFIED="cifar10,resnet50")
    assert_one_line_error(result, r"train-images-idx3-ubyte\.gz from the mirror is not the "
                                  r"MNIST release \(md5 [0-9a-f]{32}, torchvision's is "
                                  r"f68b3c2dcbeaaa9fbdd348bbdeb94873; unpacked md5")
    assert not (project / "data/raw/mnist").exists()


def test_regzipped_mnist_is_verified_by_its_unpacked_content(project, mirror, monkeypatch):
    """The shared mirror re-gzipped the original files: other .gz MD5s, same content. Here the
    tiny files play the release (their unpacked MD5s stand in for the published ones)."""
    raw = {path.name.removesuffix(".gz"): hashlib.md5(gzip.decompress(path.read_bytes()))
           .hexdigest() for path in (mirror / "mnist").glob("*.gz")}
    monkeypatch.setattr(download, "MNIST_RAW_MD5", raw)
    monkeypatch.setenv("DATASETS_MIRROR", str(mirror))
    monkeypatch.delenv("DATASETS_ACCEPT_UNVERIFIED", raising=False)
    monkeypatch.chdir(project)
    download.main(["mnist", OUTS["mnist"]])
    assert (project / "data/raw/mnist/train.pt").is_file()


def test_repacked_cifar_is_verified_by_its_inner_files(project, mirror, monkeypatch):
    from torchvision.datasets import CIFAR10

    with tarfile.open(mirror / "cifar10/cifar-10-python.tar.gz") as tf:
        md5 = {Path(m.name).name: hashlib.md5(tf.extractfile(m).read()).hexdigest()
               for m in tf.getmembers() if m.isfile()}
    monkeypatch.setattr(CIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]]
                                                for i in range(1, 6)])
    monkeypatch.setattr(CIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(CIFAR10, "meta", {**CIFAR10.meta, "md5": md5["batches.meta"]})
    monkeypatch.setenv("DATASETS_MIRROR", str(mirror))
    monkeypatch.delenv("DATASETS_ACCEPT_UNVERIFIED", raising=False)
    monkeypatch.chdir(project)
    download.main(["cifar10", OUTS["cifar10"]])
    assert (project / "data/raw/cifar10/val.pt").is_file()


def test_a_pinned_imagefolder_checksum_is_checked_in_mirror_mode_too(project, mirror,
                                                                     monkeypatch):
    from helpers import edit_params

    edit_params(project, {"download.hymenoptera.sha256": "0" * 64})
    monkeypatch.setenv("DATASETS_MIRROR", str(mirror))
    monkeypatch.delenv("DATASETS_ACCEPT_UNVERIFIED", raising=False)
    message = stage_error(project, "download", "hymenoptera", OUTS["hymenoptera"],
                          monkeypatch=monkeypatch)
    assert "hymenoptera_data.zip from the mirror is not the file pinned in " \
           "download.hymenoptera.sha256" in message


# ---------------------------------------------------------------- bounded archives

def test_a_zip_that_unpacks_past_the_limit_is_refused_before_writing(tmp_path):
    archive = tmp_path / "bomb.zip"
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("top/a.bin", b"\0" * (3 << 20))   # 3 MiB of zeros: a few KiB packed
    assert archive.stat().st_size < 100_000
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(StageError, match=r"archive bomb\.zip unpacks to 3\.0 MiB, more than "
                                         r"the limit of 1\.0 MiB \(params\.yaml: "
                                         r"download\.max_unpacked_mb\)"):
        archives.extract(archive, dest, max_bytes=1 << 20)
    assert list(dest.iterdir()) == []


def test_a_tar_that_unpacks_past_the_limit_is_refused_before_writing(tmp_path):
    archive = tmp_path / "bomb.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        for i in range(3):
            info = tarfile.TarInfo(f"top/{i}.bin")
            info.size = 1 << 20
            tf.addfile(info, io.BytesIO(b"\0" * info.size))
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(StageError, match=r"unpacks to 3\.0 MiB, more than the limit of 2\.0 MiB"):
        archives.extract(archive, dest, max_bytes=2 << 20)
    assert list(dest.iterdir()) == []


def test_a_gzip_bomb_stops_at_the_limit(tmp_path):
    path = tmp_path / "train-images-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        for _ in range(8):
            f.write(b"\0" * (1 << 20))
    with pytest.raises(StageError, match=r"train-images-idx3-ubyte\.gz unpacks to more than the "
                                         r"limit of 4\.0 MiB"):
        archives.gunzip(path, max_bytes=4 << 20)
    assert archives.gunzip(path, max_bytes=8 << 20) == b"\0" * (8 << 20)


def test_a_full_disk_is_named_with_needed_and_free(tmp_path, monkeypatch):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("top/a.bin", b"x" * 5000)
    dest = tmp_path / "out"
    dest.mkdir()
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 9, 1000))
    with pytest.raises(StageError, match=r"^no space left on device for unpacking a\.zip "
                                         r"\(needed 4\.9 KiB, free 1000 B in "):
        archives.extract(archive, dest, max_bytes=1 << 30)
    assert list(dest.iterdir()) == []


def test_a_full_disk_while_copying_from_the_mirror(tmp_path, monkeypatch, mirror):
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10, 9, 10))
    with pytest.raises(StageError, match=r"no space left on device for mnist/t10k-labels"):
        copy_from_mirror(mirror, "mnist/t10k-labels-idx1-ubyte.gz", tmp_path / "x.gz")
    assert list(tmp_path.iterdir()) == []


def test_the_limit_is_a_param(project, mirror):
    from helpers import edit_params

    edit_params(project, {"download.max_unpacked_mb": 1})
    result = run_stage(project, "stages.download", "cifar10", OUTS["cifar10"], mirror=mirror)
    assert_one_line_error(result, r"archive cifar-10-python\.tar\.gz unpacks to .* MiB, more "
                                  r"than the limit of 1\.0 MiB")


def test_a_stray_file_beside_the_archive_folder_is_fine(tmp_path):
    (tmp_path / "hymenoptera_data" / "train").mkdir(parents=True)
    (tmp_path / "README.txt").write_text("hello")
    assert archives.single_top_folder(tmp_path) == tmp_path / "hymenoptera_data"


# ---------------------------------------------------------------- leftovers, orphans, locks

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


SLOW_STAGE = textwrap.dedent("""
    import sys
    from stages.lib.core.common import run
    from stages.lib.core.files import temporary_dir_beside

    def main(argv):
        work = temporary_dir_beside("data/raw/slow")
        try:
            (work / "partial").write_bytes(b"x" * 1000)
            print("ready", flush=True)
            for line in sys.stdin:   # busy until its stdin closes; says each line back
                print(line.strip(), flush=True)
        finally:
            import shutil
            shutil.rmtree(work, ignore_errors=True)

    run(main)
""")


def start_slow_stage(project, *args):
    """The slow stage, started and ready: its folder under data/raw holds a partial file; it
    runs until its stdin (a pipe of the test's) closes, or it is ended."""
    script = project / "stages" / "slow.py"
    script.write_text(SLOW_STAGE)
    process = subprocess.Popen([sys.executable, "-m", "stages.slow", *args], cwd=project,
                               env=stage_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    assert process.stdout.readline().strip() == "ready", process.stderr.read()
    return process


def echo(process, text):
    """What the slow stage under `process` (its stdin and stdout pass through `process`) says
    back to `text`: `text` while it runs, "" once it has ended (its pipes closed)."""
    try:
        process.stdin.write(text + "\n")
        process.stdin.flush()
    except BrokenPipeError:
        return ""
    return process.stdout.readline().strip()


def parent_of(pid):
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[1])


def end_group(process):
    """SIGKILL to whatever is left of the session `process` leads (start_new_session)."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:   # nobody left
        pass
    process.wait(timeout=60)


def has_exited(pidfd, timeout):
    """True as soon as the process of `pidfd` (os.pidfd_open) exits, False if it is still
    running after `timeout` s: a pidfd turns readable when its process ends."""
    poller = select.poll()
    poller.register(pidfd, select.POLLIN)
    return bool(poller.poll(timeout * 1000))


@pytest.mark.e2e
def test_sigterm_removes_the_temporary_folder(project):
    process = start_slow_stage(project, "a")
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 143
    assert process.stderr.read().strip().splitlines() == ["error: terminated"]
    assert list((project / "data/raw").iterdir()) == []


@pytest.mark.e2e
def test_a_second_instance_of_a_stage_is_refused(project):
    first = start_slow_stage(project, "a")
    try:
        second = subprocess.run([sys.executable, "-m", "stages.slow", "a"], cwd=project,
                                env=stage_env(), stdin=subprocess.DEVNULL, capture_output=True,
                                text=True, timeout=60)   # were it not refused: no input, it ends
        assert_one_line_error(second, rf"another slow@a is running in this workspace "
                                      rf"\(pid {first.pid}\); wait for it")
        other = subprocess.Popen([sys.executable, "-m", "stages.slow", "b"], cwd=project,
                                 env=stage_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                 text=True)
        assert other.stdout.readline().strip() == "ready"   # another stage runs alongside
        other.terminate()
        other.wait(timeout=60)
        other.stdin.close()
        other.stdout.close()
    finally:
        first.terminate()
        first.wait(timeout=60)
        for stream in (first.stdin, first.stdout, first.stderr):
            stream.close()


@pytest.mark.e2e
def test_a_stage_dies_with_the_process_that_runs_it(project):
    """`dvc` killed with SIGKILL: its `sh -c` child lives on; the stage must not."""
    (project / "stages" / "slow.py").write_text(SLOW_STAGE)
    runner = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.run(sys.argv[1:])",
         "sh", "-c", f"{sys.executable} -m stages.slow a; echo done"],
        cwd=project, env=stage_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert runner.stdout.readline().strip() == "ready", runner.stderr.read()
        lock = project / ".dvc/tmp/stage-locks/slow@a.lock"
        stage = os.pidfd_open(int(lock.read_text()))   # taken before the stage said "ready"
        try:
            runner.kill()   # SIGKILL, as `kill -9 <dvc>`
            runner.wait(timeout=60)
            # the event: the stage exits (a pidfd turns readable then), within a deadline
            assert has_exited(stage, timeout=60), "the stage lived on after its runner died"
        finally:
            os.close(stage)
        # it unwound before it exited: its folder is gone
        assert list((project / "data/raw").iterdir()) == []
        assert runner.stdout.read().strip() == "done"   # then its shell went on and ended
    finally:
        end_group(runner)
        for stream in (runner.stdin, runner.stdout, runner.stderr):
            stream.close()


@pytest.mark.e2e
def test_a_stage_outlives_a_grandparent_that_is_not_behind_a_shell(project):
    """A queue worker may exit while the job it started goes on: only a shell's parent counts.
    The stage's own parent still does: its death then ends the stage."""
    (project / "stages" / "slow.py").write_text(SLOW_STAGE)
    runner = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.run(sys.argv[1:])",
         sys.executable, "-c", "import subprocess, sys; subprocess.run(sys.argv[1:])",
         sys.executable, "-m", "stages.slow", "a"],
        cwd=project, env=stage_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert runner.stdout.readline().strip() == "ready", runner.stderr.read()
        stage_pid = int((project / ".dvc/tmp/stage-locks/slow@a.lock").read_text())
        parent = parent_of(stage_pid)   # the middle process: not a shell
        assert parent_of(parent) == runner.pid
        stage = os.pidfd_open(stage_pid)
        try:
            runner.kill()   # the grandparent goes; the parent (not a shell) stays
            runner.wait(timeout=60)
            # The event: the grandparent has exited and is reaped, so a watcher of it (a pidfd,
            # a poll of its pid) has been woken. The stage answers after that, twice, waiting
            # on its stdin (the GIL free for any other thread) between the two: had a watcher
            # sent it SIGTERM, its read would have ended in `error: terminated`, no answer.
            for n in range(2):
                assert echo(runner, f"still here {n}") == f"still here {n}", \
                    "the stage was ended"
            assert list((project / "data/raw").iterdir()), "the stage was ended"
            os.kill(parent, signal.SIGKILL)   # the stage's own parent: this one counts
            assert has_exited(stage, timeout=60), "the stage lived on after its parent died"
        finally:
            os.close(stage)
        assert list((project / "data/raw").iterdir()) == []   # it unwound and cleaned up
    finally:
        end_group(runner)
        for stream in (runner.stdin, runner.stdout, runner.stderr):
            stream.close()
