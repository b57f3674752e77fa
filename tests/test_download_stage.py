"""The download@<name> and datasets stages run as DVC runs them, on the tiny mirror."""
import gzip
import hashlib
import io
import json
import pickle
import re
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from helpers import (
    OUTS,
    Exploit,
    assert_one_line_error,
    closed_port,
    edit_params,
    run_stage,
    stage_error,
)
from stages import download as download_stage
from tiny_mirror import write_sha256sums

pytestmark = pytest.mark.e2e


def assert_no_output(project, name):
    """No output and nothing beside it (no temporary file or folder left)."""
    out = project / OUTS[name]
    assert not out.exists()
    assert (list(out.parent.iterdir()) if out.parent.exists() else []) == []


def copy_mirror(mirror, dest):
    return shutil.copytree(mirror, dest)


def download(project, name, mirror):
    return run_stage(project, "stages.download", name, OUTS[name], mirror=mirror)


def test_downloads_from_mirror_in_loadable_form(project, mirror):
    for name in OUTS:
        result = download(project, name, mirror)
        assert result.returncode == 0, result.stderr
    mnist = torch.load(project / "data/raw/mnist/train.pt", weights_only=True)
    assert mnist["images"].shape == (200, 1, 28, 28) and mnist["images"].dtype == torch.uint8
    assert mnist["labels"].shape == (200,) and mnist["classes"] == [str(d) for d in range(10)]
    cifar = torch.load(project / "data/raw/cifar10/val.pt", weights_only=True)
    assert cifar["images"].shape == (100, 3, 32, 32) and cifar["classes"][0] == "airplane"
    hymenoptera = project / "data/raw/hymenoptera"
    assert sorted(p.name for p in hymenoptera.iterdir()) == ["train", "val"]
    assert sorted(p.name for p in (hymenoptera / "val").iterdir()) == ["ants", "bees"]
    weights = torch.load(project / OUTS["resnet50"], weights_only=True)
    assert weights["fc.weight"].shape == (1000, 2048)
    leftover = [p for p in (project / "data").rglob("*.part")]
    assert leftover == []
    # where each came from, for the report: the tiny mirror's made-up files were accepted
    # unverified (and say why); hymenoptera has no published checksum (params: sha256 none)
    sources = {name: json.loads((project / f"metrics/sources/{name}.json").read_text())
               for name in OUTS}
    assert {name: (s["from"], s["check"]) for name, s in sources.items()} == {
        "mnist": ("mirror", "unverified"), "cifar10": ("mirror", "unverified"),
        "hymenoptera": ("mirror", "unchecked"), "resnet50": ("mirror", "unverified")}
    assert "not torchvision's IMAGENET1K_V1 file" in sources["resnet50"]["detail"]
    assert sources["hymenoptera"]["detail"] is None

    result = run_stage(project, "stages.datasets")
    assert result.returncode == 0, result.stderr
    table = json.loads((project / "metrics/datasets.json").read_text())
    assert table["mnist"]["train"] == {"height": 28, "width": 28, "channels": 1, "samples": 200,
                                       "classes": 10, "class_names": [str(d) for d in range(10)]}
    assert table["cifar10"]["val"]["samples"] == 100 and table["cifar10"]["val"]["channels"] == 3
    # 8 + 8 train images; the .gif placeholder is not a sample
    assert table["hymenoptera"]["train"]["samples"] == 16
    assert table["hymenoptera"]["val"] == {"height": 224, "width": 224, "channels": 3,
                                           "samples": 10, "classes": 2,
                                           "class_names": ["ants", "bees"]}


def test_weights_missing_from_mirror(project, mirror, tmp_path):
    partial = copy_mirror(mirror, tmp_path / "m")
    shutil.rmtree(partial / "resnet50")
    result = download(project, "resnet50", partial)
    assert_one_line_error(result, r"missing resnet50/resnet50-0676ba61\.pth \(upstream: "
                                  r"https://download\.pytorch\.org/models/resnet50-0676ba61\.pth\)")
    assert not (project / OUTS["resnet50"]).exists()
    assert list((project / "data/weights").glob("*")) == []


def test_checksum_mismatch(project, mirror, tmp_path):
    bad = copy_mirror(mirror, tmp_path / "m")
    target = bad / "mnist/t10k-labels-idx1-ubyte.gz"
    expected = hashlib.sha256(target.read_bytes()).hexdigest()
    target.write_bytes(target.read_bytes() + b"!")
    actual = hashlib.sha256(target.read_bytes()).hexdigest()
    result = download(project, "mnist", bad)
    assert_one_line_error(result, f"checksum mismatch for mnist/t10k-labels-idx1-ubyte.gz.*"
                                  f"expected sha256 {expected}, got {actual}")
    assert list((project / "data/raw").iterdir()) == []


def test_unsafe_archive_in_mirror(project, mirror, tmp_path):
    bad = copy_mirror(mirror, tmp_path / "m")
    archive = bad / "hymenoptera/hymenoptera_data.zip"
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("hymenoptera_data/../../escape.txt", b"gotcha")
    write_sha256sums(bad)
    result = download(project, "hymenoptera", bad)
    assert_one_line_error(result, r"unsafe archive hymenoptera_data\.zip: .*leaves the target")
    assert list((project / "data/raw").iterdir()) == []
    assert not list(project.rglob("escape.txt"))


def test_truncated_archive_in_mirror(project, mirror, tmp_path):
    bad = copy_mirror(mirror, tmp_path / "m")
    archive = bad / "cifar10/cifar-10-python.tar.gz"
    archive.write_bytes(archive.read_bytes()[:5000])
    write_sha256sums(bad)  # the checksum matches: the file itself is broken
    result = download(project, "cifar10", bad)
    assert_one_line_error(result, r"corrupt or truncated archive cifar-10-python\.tar\.gz")
    assert list((project / "data/raw").iterdir()) == []


def test_truncated_idx_in_mirror(project, mirror, tmp_path):
    import gzip

    bad = copy_mirror(mirror, tmp_path / "m")
    target = bad / "mnist/train-images-idx3-ubyte.gz"
    target.write_bytes(gzip.compress(gzip.decompress(target.read_bytes())[:-10]))
    write_sha256sums(bad)
    result = download(project, "mnist", bad)
    assert_one_line_error(result, r"train-images-idx3-ubyte\.gz is truncated")


def test_not_an_image_folder(project, mirror, tmp_path):
    bad = copy_mirror(mirror, tmp_path / "m")
    archive = bad / "hymenoptera/hymenoptera_data.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("stuff/train/only_class/a.jpg", b"x")
    write_sha256sums(bad)
    result = download(project, "hymenoptera", bad)
    assert_one_line_error(result, r"hymenoptera_data\.zip \(not an ImageFolder archive\): "
                                  r"train/ needs at least two class folders, found 1")


def test_unreachable_upstream_without_mirror(project):
    edit_params(project, {"download.retries": 2, "download.timeout": 2,
                          "download.hymenoptera.url": f"http://127.0.0.1:{closed_port()}/h.zip"})
    result = download(project, "hymenoptera", None)
    assert_one_line_error(result, r"could not download h\.zip .*2 tries.*DATASETS_MIRROR=DIR")
    assert list((project / "data/raw").iterdir()) == []


@pytest.mark.parametrize("key, value, pattern", [
    ("download.retries", 0, r"'download\.retries' must be >= 1, got 0"),
    ("download.timeout", "soon", r"'download\.timeout' must be a number"),
    ("download.mnist.format", "idx", r"'download\.mnist\.format' must be one of mnist, cifar10"),
    ("download.resnet50.weights", "IMAGENET1K_V9", r"'download\.resnet50\.weights' must be one of "
                                                   r"IMAGENET1K_V1, IMAGENET1K_V2"),
    ("download.mnist", None, r"'download\.mnist\.format'"),
])
def test_bad_params_stop_before_any_work(project, mirror, monkeypatch, key, value, pattern):
    edit_params(project, {key: value})
    monkeypatch.setenv("DATASETS_MIRROR", str(mirror))
    name = key.split(".")[1] if key.split(".")[1] in OUTS else "mnist"
    message = stage_error(project, "download", name, OUTS[name], monkeypatch=monkeypatch)
    assert re.search(pattern, message), message
    assert not (project / "data").exists()


def test_datasets_needs_downloads_first(project):
    result = run_stage(project, "stages.datasets")
    assert_one_line_error(result, r"data/raw/mnist/train\.pt not found: run `dvc repro "
                                  r"download@mnist` first")


def test_a_pinned_checksum_that_matches_is_recorded_as_verified(project, mirror):
    archive = mirror / "hymenoptera/hymenoptera_data.zip"
    edit_params(project, {"download.hymenoptera.sha256":
                          hashlib.sha256(archive.read_bytes()).hexdigest()})
    result = download(project, "hymenoptera", mirror)
    assert result.returncode == 0, result.stderr
    record = json.loads((project / "metrics/sources/hymenoptera.json").read_text())
    assert record == {"name": "hymenoptera", "format": "imagefolder", "from": "mirror",
                      "check": "verified", "detail": None}


def test_an_archive_made_on_a_mac_downloads_to_its_pictures_alone(project, mirror, tmp_path):
    """AppleDouble files, a hidden folder, __MACOSX/ and a class name typed in NFD with a
    space after it: the data output holds the pictures and their classes, nothing else, and the
    dataset table counts only those."""
    import unicodedata

    bad = copy_mirror(mirror, tmp_path / "m")
    archive = bad / "hymenoptera/hymenoptera_data.zip"
    with zipfile.ZipFile(archive) as zf:
        entries = {info.filename: zf.read(info) for info in zf.infolist()}
    picture = next(data for name, data in entries.items() if name.endswith(".jpg"))
    bees = unicodedata.normalize("NFD", "abejás") + " "   # a class name of the user's own
    with zipfile.ZipFile(archive, "w") as zf:
        for name, data in entries.items():
            name = name.replace("/bees/", f"/{bees}/")
            zf.writestr(name, data)
            if name.endswith(".jpg"):
                folder, file = name.rsplit("/", 1)
                zf.writestr(f"{folder}/._{file}", b"\x00\x05\x16\x07 Mac OS X resource fork")
                zf.writestr(f"__MACOSX/{folder}/._{file}", b"\x00\x05\x16\x07")
        zf.writestr("hymenoptera_data/train/.thumbnails/t.jpg", picture)
    write_sha256sums(bad)
    result = download(project, "hymenoptera", bad)
    assert result.returncode == 0, result.stderr
    assert "hymenoptera: left out " in result.stdout and "._" in result.stdout
    root = project / "data/raw/hymenoptera"
    assert not [p for p in root.rglob("*") if p.name.startswith(".")]
    assert sorted(p.name for p in (root / "train").iterdir()) == ["abejás", "ants"]
    for name in OUTS:
        if name != "hymenoptera":
            assert download(project, name, mirror).returncode == 0
    result = run_stage(project, "stages.datasets")
    assert result.returncode == 0, result.stderr
    table = json.loads((project / "metrics/datasets.json").read_text())["hymenoptera"]
    assert table["train"]["samples"] == 16 and table["train"]["class_names"] == ["abejás", "ants"]


def test_a_picture_that_cannot_be_read_is_named_at_download(project, mirror, tmp_path):
    bad = copy_mirror(mirror, tmp_path / "m")
    archive = bad / "hymenoptera/hymenoptera_data.zip"
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr("hymenoptera_data/val/bees/cut.jpg",
                    zf.read(next(n for n in zf.namelist() if n.endswith(".jpg")))[:300])
        zf.writestr("hymenoptera_data/train/ants/empty.jpg", b"")
    write_sha256sums(bad)
    result = download(project, "hymenoptera", bad)
    assert_one_line_error(result, r"hymenoptera \(hymenoptera_data\.zip\): 2 of 28 pictures "
                                  r"cannot be read, e\.g\. train/ants/empty\.jpg \(.*\); "
                                  r"val/bees/cut\.jpg \(.*remove or replace them")
    assert_no_output(project, "hymenoptera")


def mnist_mirror(mirror, dest, images):
    dest = shutil.copytree(mirror, dest)
    header = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in images.shape)
    (dest / "mnist/train-images-idx3-ubyte.gz").write_bytes(
        gzip.compress(header + images.tobytes(), mtime=0))
    write_sha256sums(dest)
    return dest


@pytest.mark.parametrize("shape, pattern", [
    ((0, 28, 28), r"train-images-idx3-ubyte\.gz must hold 28x28 images, got shape \(0, 28, 28\)"),
    ((200, 20, 20), r"must hold 28x28 images, got shape \(200, 20, 20\)"),
])
def test_mnist_without_images_or_of_the_wrong_size(project, mirror, tmp_path, shape, pattern):
    bad = mnist_mirror(mirror, tmp_path / "m", np.zeros(shape, np.uint8))
    result = run_stage(project, "stages.download", "mnist", OUTS["mnist"], mirror=bad)
    assert_one_line_error(result, pattern)
    assert not (project / "data/raw/mnist").exists()


# ---------------------------------------------------------------- untrusted sources

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
    monkeypatch.setattr(download_stage, "MNIST_RAW_MD5", raw)
    monkeypatch.setenv("DATASETS_MIRROR", str(mirror))
    monkeypatch.delenv("DATASETS_ACCEPT_UNVERIFIED", raising=False)
    monkeypatch.chdir(project)
    download_stage.main(["mnist", OUTS["mnist"]])
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
    download_stage.main(["cifar10", OUTS["cifar10"]])
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


def test_the_limit_is_a_param(project, mirror):
    from helpers import edit_params

    edit_params(project, {"download.max_unpacked_mb": 1})
    result = run_stage(project, "stages.download", "cifar10", OUTS["cifar10"], mirror=mirror)
    assert_one_line_error(result, r"archive cifar-10-python\.tar\.gz unpacks to .* MiB, more "
                                  r"than the limit of 1\.0 MiB")
