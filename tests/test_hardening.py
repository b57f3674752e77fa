"""The edge cases of a code review and a probe with hostile files, each as a unit: shard
padding for any size, one seed per (purpose, rank), content fingerprints of data folders,
torch.load's refusals as one clean line, file-size limits, decompression bombs, image sizes,
a resumed state checked before use, the lengths `compare` compares."""
import errno
import os
import struct
import zlib

import numpy as np
import pytest
import torch

from stages.lib import images
from stages.lib.core import checkpoints, common, data, files, inference
from stages.lib.core.common import StageError


@pytest.mark.parametrize("n, world", [(3, 8), (1, 4), (5, 2), (8, 8), (13, 4), (2, 7)])
def test_every_rank_gets_a_share_as_distributed_sampler_gives_it(n, world):
    """3 samples on 8 ranks: each rank still gets one (the list repeats as often as needed),
    the positions DistributedSampler gives each rank."""
    from torch.utils.data import DistributedSampler

    order = torch.arange(n)
    padded = data.pad_to_multiple(order, world)
    assert len(padded) % world == 0 and len(padded) >= n
    for rank in range(world):
        sampler = DistributedSampler(range(n), num_replicas=world, rank=rank, shuffle=False)
        assert padded[rank::world].tolist() == list(sampler)


def test_resident_batches_on_more_ranks_than_samples():
    images = torch.zeros(3, 1, 2, 2, dtype=torch.uint8)
    labels = torch.tensor([0, 1, 2])
    shares = [list(data.batches(images, labels, 8, mean=(0.0,), std=(1.0,), shard=(r, 8)))
              for r in range(8)]
    assert all(len(share) == 1 and len(share[0][1]) == 1 for share in shares)


def test_no_two_random_streams_share_a_seed():
    seeds = {(purpose, rank): common.seed_for(42, purpose, rank)
             for purpose in common.SEED_PURPOSES for rank in range(8)}
    # one process keeps params.yaml's seed for its own streams (results stay as they were);
    # every other stream has a seed of its own
    assert seeds.pop(("global", 0)) == seeds.pop(("loader", 0)) == 42
    assert len(set(seeds.values()) | {42}) == len(seeds) + 1
    assert common.seed_for(42, "augment", 1) == seeds["augment", 1]   # deterministic
    assert all(0 <= s < 2**63 for s in seeds.values())


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


def png_header(width, height):
    """A PNG that announces width x height pixels (no pixel data needed to be refused)."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + \
            struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2,
                                                             0, 0, 0)) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_naming_the_file(tmp_path):
    path = tmp_path / "bomb.png"
    path.write_bytes(png_header(60000, 60000))
    with pytest.raises(StageError, match=rf"^image {path} is too large to decode safely"):
        images.load_image(path)


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


def test_compare_checks_lengths_before_labels():
    from stages import compare

    labels = np.array([0, 1, 1])
    compare.check_same_images(torch.tensor([0, 1, 1]), labels, "root")
    for other in (torch.tensor([0]), torch.tensor([0, 1, 1, 0]), torch.tensor([1, 1, 1])):
        with pytest.raises(StageError, match=r"data/features/val\.pt does not match"):
            compare.check_same_images(other, labels, "root")


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
