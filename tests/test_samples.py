"""`<model>.train_samples`/`val_samples` and `transfer.train_samples`/`val_samples`: quick runs
on a seeded slice of each split (the smoke run uses them); `all` keeps every sample."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

from helpers import edit_params, run_stage, stage_error
from stages.lib import images
from stages.lib.core import data, params


def test_subsample_is_seeded_sorted_and_keeps_the_balance():
    labels = torch.arange(1000) % 10
    record = {"images": torch.arange(1000).view(1000, 1, 1, 1).to(torch.uint8),
              "labels": labels, "classes": [str(c) for c in range(10)]}
    cut = data.take(record, 200, seed=3)
    kept = data.subsample(1000, 200, 3)
    assert len(cut["labels"]) == 200 and cut["classes"] == record["classes"]
    assert (np.diff(kept) > 0).all()                       # the original order
    assert torch.equal(cut["labels"], labels[torch.from_numpy(kept)])
    assert data.subsample(1000, 200, 3).tolist() == kept.tolist()   # the same seed, the same
    assert data.subsample(1000, 200, 4).tolist() != kept.tolist()
    counts = torch.bincount(cut["labels"], minlength=10)
    assert counts.min() >= 8 and counts.max() <= 32        # no class lost or swamped
    assert data.take(record, None, 3) is record
    assert data.take(record, 5000, 3) is record            # more than there are: all


def test_an_image_folder_cut_stays_an_image_folder(tmp_path):
    for cls in ("ants", "bees"):
        (tmp_path / "train" / cls).mkdir(parents=True)
        for i in range(6):
            Image.new("RGB", (8, 8), (i * 40, 0, 0)).save(tmp_path / "train" / cls / f"{i}.png")
    whole = images.image_folder(tmp_path, "train", None)
    cut = images.image_folder(tmp_path, "train", None, samples=5, seed=0)
    assert len(whole) == 12 and len(cut) == 5
    assert cut.imgs == cut.samples and [t for _, t in cut.samples] == cut.targets
    assert set(cut.samples) < set(whole.samples)
    assert cut.samples == images.image_folder(tmp_path, "train", None, samples=5, seed=0).samples
    path, target = cut.samples[0]
    assert cut[0][1] == target and cut.classes == ["ants", "bees"]


@pytest.mark.parametrize("value, expected", [("all", None), (None, None), (64, 64)])
def test_all_is_every_sample(value, expected):
    assert params.samples({"a": {"train_samples": value}}, "a.train_samples") == expected


@pytest.mark.parametrize("key, value, pattern", [
    ("simple_cnn.train_samples", 0, r"'simple_cnn\.train_samples' must be >= 1, got 0"),
    ("simple_cnn.val_samples", "some", r"'simple_cnn\.val_samples' must be an integer or all, "
                                       r"got 'some'"),
    ("simple_cnn.train_samples", 2.5, r"must be an integer or all, got 2\.5"),
])
def test_a_bad_number_of_samples_is_named(project, monkeypatch, key, value, pattern):
    import re

    edit_params(project, {key: value})
    message = stage_error(project, "train", "simple_cnn", "mnist", monkeypatch=monkeypatch)
    assert re.search(pattern, message), message


def test_transfer_reads_only_the_splits_it_declares():
    settings = {"transfer": {"dataset": "x", "image_size": 32, "batch_size": 4,
                             "eval_batch_size": 4, "num_workers": 0, "resident_mb": 0,
                             "val_samples": 7}}
    # compare declares transfer.val_samples only: train_samples is not read
    cfg = params.transfer_data(settings, training=False, splits=("val",))
    assert (cfg.train_samples, cfg.val_samples, cfg.samples("val")) == (None, 7, 7)
    with pytest.raises(Exception, match="missing key 'transfer.train_samples'"):
        params.transfer_data(settings)


def test_train_on_a_slice(project, mirror):
    result = run_stage(project, "stages.download", "mnist", "data/raw/mnist", mirror=mirror)
    assert result.returncode == 0, result.stderr
    edit_params(project, {"simple_cnn.epochs": 1, "simple_cnn.batch_size": 16,
                          "simple_cnn.train_samples": 48, "simple_cnn.val_samples": 30})
    result = run_stage(project, "stages.train", "simple_cnn", "mnist")
    assert result.returncode == 0, result.stderr
    assert "(48 train / 30 val)" in result.stdout
    details = json.loads((project / "plots/simple_cnn/evaluation.json").read_text())
    assert (details["train_samples"], details["val_samples"]) == (48, 30)
    counts = sum(int(line.split(",")[2]) for line in
                 (project / "plots/simple_cnn/confusion.csv").read_text().splitlines()[1:])
    assert counts == 30   # the confusion matrix counts the slice, not the whole split
    record = json.loads((project / "models/simple_cnn.run.json").read_text())
    assert (record["params"]["train_samples"], record["params"]["val_samples"]) == (48, 30)
