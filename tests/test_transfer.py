"""Transfer-learning pieces beyond the end-to-end run: the SVM on given features, a custom
N-class ImageFolder dataset, the pretrained loading path."""
import json
import zipfile

import numpy as np
import pytest
import torch

import tiny_mirror
from helpers import edit_params, fails, run_stage
from stages.lib import images, transfer
from stages.lib.core.common import StageError


def write_features(project, train, val, classes):
    folder = project / "data/features"
    folder.mkdir(parents=True)
    for split, (x, y) in (("train", train), ("val", val)):
        torch.save({"features": torch.tensor(x, dtype=torch.float32),
                    "labels": torch.tensor(y), "classes": classes,
                    "files": [f"{i}.jpg" for i in range(len(y))]}, folder / f"{split}.pt")


def blobs(n, seed, classes=3, d=32):
    rng = np.random.default_rng(seed)
    y = np.arange(n) % classes
    centers = np.random.default_rng(0).normal(0, 3, (classes, d))
    return centers[y] + rng.normal(0, 1, (n, d)), y


@pytest.mark.e2e  # a stage process
def test_svm_scores_separable_features(project):
    write_features(project, blobs(60, 1), blobs(30, 2), ["a", "b", "c"])
    result = run_stage(project, "stages.svm")
    assert result.returncode == 0, result.stderr
    assert json.loads((project / "metrics/transfer/svm.json").read_text()) == {"accuracy": 1.0}
    details = json.loads((project / "plots/transfer/svm/evaluation.json").read_text())
    assert details["train_accuracy"] == 1.0
    assert details["C"] == 1.0 and details["kernel"] == "rbf"
    rows = (project / "plots/transfer/svm/confusion.csv").read_text().splitlines()
    # every cell of the 3x3 matrix, counted: the 30 validation images on the diagonal
    assert rows[0] == "actual,predicted,count" and len(rows) == 1 + 3 * 3
    assert sorted(rows[1:])[:3] == ["a,a,10", "a,b,0", "a,c,0"]


@pytest.mark.e2e  # a stage process
def test_svm_grid_search_picks_settings_on_train(project):
    write_features(project, blobs(60, 1), blobs(30, 2), ["a", "b", "c"])
    edit_params(project, {"transfer.svm.grid": {"C": [0.01, 10.0], "kernel": ["linear"]},
                          "transfer.svm.cv": 3})
    result = run_stage(project, "stages.svm")
    assert result.returncode == 0, result.stderr
    details = json.loads((project / "plots/transfer/svm/evaluation.json").read_text())
    assert details["kernel"] == "linear" and details["C"] in (0.01, 10.0)
    assert 0.9 <= details["cv_accuracy"] <= 1.0


def test_custom_three_class_dataset_from_mirror(project, mirror, tmp_path):
    """`transfer.dataset` can name any ImageFolder archive; N classes, not only two."""
    custom = tmp_path / "mirror"
    custom.mkdir()
    tiny_mirror.write_image_folder_zip(custom / "flowers" / "flowers.zip",
                                       np.random.default_rng(0), {"train": 4, "val": 2},
                                       classes=("daisy", "rose", "tulip"), top="flowers")
    tiny_mirror.write_sha256sums(custom)
    edit_params(project, {"download.flowers": {"format": "imagefolder",
                                               "url": "https://example.invalid/flowers.zip",
                                               "sha256": None},
                          "transfer.dataset": "flowers", "transfer.image_size": 32,
                          "transfer.num_workers": 0, "transfer.scratch.epochs": 1})
    result = run_stage(project, "stages.download", "flowers", "data/raw/flowers", mirror=custom)
    assert result.returncode == 0, result.stderr
    result = run_stage(project, "stages.transfer", "scratch")
    assert result.returncode == 0, result.stderr
    details = json.loads((project / "plots/transfer/scratch/evaluation.json").read_text())
    assert set(details["per_class_accuracy"]) == {"daisy", "rose", "tulip"}
    checkpoint = torch.load(project / "models/transfer/scratch.pt", weights_only=True)
    assert checkpoint["classes"] == ["daisy", "rose", "tulip"]
    assert checkpoint["state_dict"]["head.weight"].shape == (3, 2048)


def test_a_repacked_mirror_archive_is_accepted_only_when_said(project, mirror):
    """A mirror may re-pack an archive (../shared/datasets does): against a pinned upstream
    checksum it is then refused, unless DATASETS_ACCEPT_UNVERIFIED names the dataset."""
    edit_params(project, {"download.hymenoptera.sha256": "0" * 64, "download.retries": 1})
    refused = run_stage(project, "stages.download", "hymenoptera", "data/raw/hymenoptera",
                        mirror=mirror)
    assert refused.returncode == 1 and "DATASETS_ACCEPT_UNVERIFIED=hymenoptera" in refused.stderr
    result = run_stage(project, "stages.download", "hymenoptera", "data/raw/hymenoptera",
                       mirror=mirror, DATASETS_ACCEPT_UNVERIFIED="hymenoptera")
    assert result.returncode == 0, result.stderr
    assert "WARNING: UNVERIFIED DATA: hymenoptera_data.zip" in result.stderr


def test_pretrained_path_loads_the_saved_file(tmp_path):
    import torchvision

    torch.manual_seed(1)
    source = torchvision.models.resnet50()
    path = tmp_path / "weights.pth"
    torch.save(source.state_dict(), path)
    model = transfer.pretrained_resnet50(num_classes=4, path=path)
    assert torch.equal(model.backbone.layer4[2].conv3.weight, source.layer4[2].conv3.weight)
    assert model.head.out_features == 4


def test_gif_placeholder_is_not_a_sample(tmp_path):
    archive = tmp_path / "h.zip"
    tiny_mirror.write_image_folder_zip(archive, np.random.default_rng(0), {"train": 2, "val": 1})
    with zipfile.ZipFile(archive) as zf:
        zf.extractall(tmp_path)
    root = tmp_path / "hymenoptera_data"
    assert images.image_folder_classes(root) == ["ants", "bees"]
    assert len(images.image_folder(root, "train", None)) == 4  # the .gif is skipped


@pytest.mark.e2e  # two stage processes
def test_how_images_are_fed_does_not_change_the_model(project, mirror):
    """transfer.num_workers and transfer.resident_mb are no stage's params (dvc.yaml): the
    model a strategy trains, augmentation included, is the same file whether the images are
    decoded once and kept, or decoded at every pass by worker processes."""
    result = run_stage(project, "stages.download", "hymenoptera", "data/raw/hymenoptera",
                       mirror=mirror)
    assert result.returncode == 0, result.stderr
    augment = {"random_crop": True, "crop_scale_min": 0.3, "hflip": True, "color_jitter": 0.2,
               "rotation": 5.0}
    outputs = []
    for workers, resident_mb in ((0, 2048), (2, 0)):
        edit_params(project, {"transfer.image_size": 32, "transfer.scratch.epochs": 1,
                              "transfer.scratch.augment": augment,
                              "transfer.num_workers": workers, "transfer.resident_mb": resident_mb})
        result = run_stage(project, "stages.transfer", "scratch")
        assert result.returncode == 0, result.stderr
        assert ("decoded at every pass" in result.stdout) == (resident_mb == 0), result.stdout
        outputs.append([(project / path).read_bytes() for path in (
            "models/transfer/scratch.pt", "metrics/transfer/scratch.json",
            "plots/transfer/scratch/evaluation.json", "plots/transfer/scratch/confusion.csv")])
    assert outputs[0] == outputs[1]


def test_compare_checks_lengths_before_labels():
    from stages import compare

    labels = np.array([0, 1, 1])
    compare.check_same_images(torch.tensor([0, 1, 1]), labels, "root")
    for other in (torch.tensor([0]), torch.tensor([0, 1, 1, 0]), torch.tensor([1, 1, 1])):
        with pytest.raises(StageError, match=r"data/features/val\.pt does not match"):
            compare.check_same_images(other, labels, "root")


def test_a_damaged_features_file(project, monkeypatch):
    (project / "data/features").mkdir(parents=True)
    (project / "data/features/train.pt").write_bytes(b"not a torch file")
    (project / "data/features/val.pt").write_bytes(b"not a torch file")
    fails(project, monkeypatch, r"^data/features/train\.pt is not a features file \(.*\): run "
                                r"`dvc repro -f features`$", "svm")
    torch.save({"features": torch.zeros(3, 4)}, project / "data/features/train.pt")
    fails(project, monkeypatch, r"needs features \(N, D\), labels \(N,\), classes", "svm")
