"""DVC's cache after faults (tools/check_cache.py, `make check-cache`; the check `make repro`
runs after DVC): a damaged object is named, removed and brought back by a rerun to the same
bytes; a killed save's temporary file is removed; an output DVC did not save (a full disk: the
fault injected by removing its object) fails the command instead of passing as DVC's warning
does. On the small pipeline (download@mnist -> train@simple_cnn, tiny mirror)."""
import hashlib
import json
import os
import shutil
import subprocess
import time

import pytest
import yaml
from small_pipeline import dvc, make

from helpers import run_tool, stage_env
from tools import repro

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def ran(tmp_path_factory, mirror):
    """The small pipeline run once; each test takes a copy of it."""
    env = stage_env(mirror.resolve())
    project = make(tmp_path_factory.mktemp("ran") / "p", env)
    dvc(project, "repro", env=env)
    return project, env


@pytest.fixture()
def project(ran, tmp_path):
    source, env = ran
    return shutil.copytree(source, tmp_path / "p", symlinks=True), env


def cache_object(project, output):
    """The cache file of a single-file output, from dvc.lock's hash of it."""
    digest = hashlib.md5((project / output).read_bytes()).hexdigest()
    return project / ".dvc/cache/files/md5" / digest[:2] / digest[2:]


def test_a_sound_cache_passes(project):
    project, env = project
    result = run_tool("check_cache", cwd=project, env=env)
    assert "every object matches its name, every output of dvc.lock is saved" in result.stdout


def test_a_damaged_object_is_named_removed_and_rebuilt_by_a_rerun(project):
    project, env = project
    model = project / "models/simple_cnn.pt"
    original = model.read_bytes()
    cached = cache_object(project, "models/simple_cnn.pt")
    before = cached.stat()
    os.chmod(cached, 0o644)
    damaged = bytearray(cached.read_bytes())
    damaged[len(damaged) // 2] ^= 0xFF   # one byte flipped on disk: size and times unchanged
    cached.write_bytes(bytes(damaged))
    os.chmod(cached, before.st_mode)
    os.utime(cached, ns=(before.st_atime_ns, before.st_mtime_ns))
    model.unlink()
    result = run_tool("check_cache", cwd=project, env=env, check=False)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and "models/simple_cnn.pt" in result.stderr
    assert "was damaged (its bytes are not its MD5) and is removed" in result.stderr
    assert not cached.exists()
    ran = dvc(project, "repro", env=env)
    assert "Running stage 'train@simple_cnn'" in ran.stdout
    assert model.read_bytes() == original and cached.read_bytes() == original


def test_a_killed_saves_temporary_file_is_removed_and_a_fresh_one_kept(project):
    project, env = project
    folder = project / ".dvc/cache/files/md5/ab"
    folder.mkdir(parents=True, exist_ok=True)
    old, fresh = folder / "cdef.0a1b2c.tmp", folder / "cdef.3d4e5f.tmp"
    old.write_bytes(b"x" * 1000)
    fresh.write_bytes(b"y")
    an_hour_ago = time.time() - 3600
    os.utime(old, (an_hour_ago, an_hour_ago))
    result = run_tool("check_cache", cwd=project, env=env)
    assert "cdef.0a1b2c.tmp (1,000 bytes), left by a cache save that did not finish" in \
        result.stdout
    assert not old.exists() and fresh.exists()


def test_an_output_dvc_did_not_save_fails_the_check_and_make_repro(project, monkeypatch,
                                                                     capsys):
    """DVC reports a cache save that failed on a full disk as warnings and exits 0; its next
    run deletes the workspace copy, the only one. Here the save's result is injected: one
    object of data/raw/mnist is not in the cache."""
    project, env = project
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    folder = next(out["md5"] for out in lock["stages"]["download@mnist"]["outs"]
                  if out["path"] == "data/raw/mnist")
    manifest = project / ".dvc/cache/files/md5" / folder[:2] / folder[2:]
    digest = json.loads(manifest.read_text())[0]["md5"]   # train.pt's object
    (project / ".dvc/cache/files/md5" / digest[:2] / digest[2:]).unlink()
    result = run_tool("check_cache", cwd=project, env=env, check=False)
    assert result.returncode == 1 and "data/raw/mnist is in the workspace but 1 of its " \
        "objects are not in DVC's cache (a save that failed: disk full?)" in result.stderr, \
        result.stderr
    monkeypatch.setattr(repro, "ROOT", project)
    monkeypatch.setattr(repro.subprocess, "run",
                        lambda *a, **k: subprocess.CompletedProcess(a, 0))
    monkeypatch.chdir(project)
    assert repro.main(["train@simple_cnn"]) == 1
    err = capsys.readouterr().err
    assert "repro: error: " in err and "its objects are not in DVC's cache" in err
