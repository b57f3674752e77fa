"""stages/lib/core/checkpoints.py as units: the fingerprint that ties a saved state to its
params and data (content, not sizes), the digest cache behind it, and a saved state checked
before a resumed run uses it (the resumed runs themselves: test_resume.py)."""
import os

import pytest

from stages.lib.core import checkpoints


def test_a_same_size_image_swapped_in_changes_the_fingerprint(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = tmp_path / "images" / "train" / "ants"
    folder.mkdir(parents=True)
    (folder / "a.jpg").write_bytes(b"A" * 100)
    (folder / "b.jpg").write_bytes(b"B" * 100)
    before = checkpoints.fingerprint_of({"lr": 0.1}, tmp_path / "images")
    assert checkpoints.fingerprint_of({"lr": 0.1}, tmp_path / "images") == before   # cached
    (folder / "b.jpg").write_bytes(b"C" * 100)   # same size, other content
    assert checkpoints.fingerprint_of({"lr": 0.1}, tmp_path / "images") != before


def test_the_digest_cache_is_used_until_size_or_time_change(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "x.bin"
    path.write_bytes(b"x" * 10)
    cache = checkpoints.DigestCache()
    first = cache.digest(path)
    cache.save()
    reads = []
    real_open = open
    monkeypatch.setattr("builtins.open", lambda *a, **k: reads.append(a[0]) or real_open(*a, **k))
    assert checkpoints.DigestCache().digest(path) == first and path not in reads
    stamp = path.stat()
    path.write_bytes(b"y" * 10)
    os.utime(path, ns=(stamp.st_atime_ns, stamp.st_mtime_ns + 10**9))
    assert checkpoints.DigestCache().digest(path) != first


def state(epochs_done, **change):
    record = {"epoch": 1, "train_loss": 1.0, "train_accuracy": 0.5, "val_loss": 1.0,
              "val_accuracy": 0.5, "seconds": 1.0}
    whole = {k: None for k in checkpoints.STATE_KEYS}
    whole.update(history=[dict(record, epoch=e) for e in range(1, epochs_done + 1)], rng=[{}])
    whole.update(change)
    return whole


@pytest.mark.parametrize("saved, problem", [
    (state(2), None),
    (state(120), "its history does not fit a run of 50 epochs"),
    (state(0), "its history does not fit a run of 50 epochs"),
    ({k: v for k, v in state(2).items() if k != "optimizer"}, "it lacks optimizer"),
    (state(2, history=[{"epoch": 1}, {"epoch": 2}]), "its history's record 1 is malformed"),
    (state(2, rng=[{}, {}]), "it holds the random state of 2 processes, not 1"),
    (state(2, rng=5), "it holds the random state of 0 processes, not 1"),
])
def test_a_resumed_state_is_checked_before_use(saved, problem):
    assert checkpoints.state_problem(saved, 50, 1) == problem
