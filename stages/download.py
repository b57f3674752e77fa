"""Stage download@<name>: fetch, verify and unpack one dataset or weights file.

    python -m stages.download <name> <out>

Reads params `download.retries`, `download.timeout` and `download.<name>`; writes only <out>:
  format mnist        -> <out>/{train,val}.pt  uint8 tensors (N, 1, 28, 28) + labels + classes
  format cifar10      -> <out>/{train,val}.pt  uint8 tensors (N, 3, 32, 32) + labels + classes
  format imagefolder  -> <out>/{train,val}/<class>/<image files>
  format weights      -> <out> (torchvision's ResNet-50 ImageNet state dict, as published)
Upstream URLs and checksums are torchvision's own; with DATASETS_MIRROR=DIR files come from
DIR/<name>/<upstream file name>, verified against DIR/SHA256SUMS.
"""
import os
import re
import shutil
from pathlib import Path

import torch

from stages.lib import data, fetch
from stages.lib.common import StageError, load_yaml, param, run

FORMATS = ("mnist", "cifar10", "imagefolder", "weights")


def get_file(name, filename, urls, dest, checksum, algorithm, settings):
    """One source file to `dest`: from the mirror when DATASETS_MIRROR is set, else upstream."""
    mirror = fetch.mirror_dir()
    if mirror is not None:
        print(f"{name}: {filename} from mirror {mirror}")
        fetch.copy_from_mirror(mirror, f"{name}/{filename}", dest, upstream=urls[0])
    else:
        url = fetch.download(urls, dest, checksum=checksum, algorithm=algorithm, **settings)
        print(f"{name}: {filename} from {url}" + (", verified" if checksum else ""))


def source_params(params, name, kind):
    """The format-specific params of download.<name>, checked before any work."""
    if kind == "imagefolder":
        url = param(params, f"download.{name}.url", str)
        if not Path(url.split("?")[0]).name:
            raise StageError(f"params.yaml: 'download.{name}.url' must end in a file name, "
                             f"got {url!r}")
        return {"url": url, "sha256": param(params, f"download.{name}.sha256", str,
                                            optional=True)}
    if kind == "weights":
        from torchvision.models import ResNet50_Weights

        return {"weights": param(params, f"download.{name}.weights", str,
                                 choices=[w.name for w in ResNet50_Weights])}
    return {}


def prepare_mnist(name, source, work, settings):
    from torchvision.datasets import MNIST

    arrays = {}
    for filename, md5 in MNIST.resources:
        path = work / filename
        get_file(name, filename, [m + filename for m in MNIST.mirrors], path, md5, "md5", settings)
        arrays[filename] = data.read_idx(path, 2051 if "images" in filename else 2049)
        path.unlink()
    return {split: data.tensor_record(arrays[f"{prefix}-images-idx3-ubyte.gz"].unsqueeze(1),
                                      arrays[f"{prefix}-labels-idx1-ubyte.gz"],
                                      data.MNIST_CLASSES)
            for split, prefix in (("train", "train"), ("val", "t10k"))}


def prepare_cifar10(name, source, work, settings):
    from torchvision.datasets import CIFAR10

    archive = work / CIFAR10.filename
    get_file(name, CIFAR10.filename, [CIFAR10.url], archive, CIFAR10.tgz_md5, "md5", settings)
    unpacked = work / "unpacked"
    unpacked.mkdir()
    fetch.extract(archive, unpacked)
    archive.unlink()
    splits, classes = data.read_cifar10(fetch.single_top_folder(unpacked))
    shutil.rmtree(unpacked)
    return {split: data.tensor_record(images, labels, classes)
            for split, (images, labels) in splits.items()}


def prepare_imagefolder(name, source, work, settings):
    filename = Path(source["url"].split("?")[0]).name
    archive = work / filename
    get_file(name, filename, [source["url"]], archive, source["sha256"], "sha256", settings)
    unpacked = work / "unpacked"
    unpacked.mkdir()
    fetch.extract(archive, unpacked)
    archive.unlink()
    root = fetch.single_top_folder(unpacked)
    classes = data.image_folder_classes(root, label=f"{filename} (not an ImageFolder archive)")
    print(f"{name}: ImageFolder with classes {', '.join(classes)}")
    return root


def prepare_weights(name, source, work, settings):
    from torchvision.models import ResNet50_Weights

    url = ResNet50_Weights[source["weights"]].url
    filename = Path(url).name
    # torch.hub convention: resnet50-<first 8 hex digits of the file's SHA-256>.pth
    prefix = re.search(r"-([a-f0-9]+)\.", filename).group(1)
    path = work / filename
    get_file(name, filename, [url], path, prefix, "sha256", settings)
    return path


def main(argv):
    if len(argv) != 2:
        raise StageError("usage: python -m stages.download <name> <out>")
    name, out = argv[0], Path(argv[1])
    params = load_yaml("params.yaml")
    settings = {"retries": param(params, "download.retries", int, minimum=1),
                "timeout": param(params, "download.timeout", float, above=0)}
    kind = param(params, f"download.{name}.format", str, choices=FORMATS)
    source = source_params(params, name, kind)
    fetch.mirror_dir()  # a DATASETS_MIRROR that is not a folder stops here

    work = fetch.temporary_dir_beside(out)
    try:
        if kind == "weights":
            result = prepare_weights(name, source, work, settings)
        elif kind == "imagefolder":
            result = prepare_imagefolder(name, source, work, settings)
        else:
            prepare = prepare_mnist if kind == "mnist" else prepare_cifar10
            result = work / "prepared"
            result.mkdir()
            for split, record in prepare(name, source, work, settings).items():
                torch.save(record, result / f"{split}.pt")
                print(f"{name}/{split}: {tuple(record['images'].shape)} images, "
                      f"{len(record['classes'])} classes")
        if out.is_dir() and not out.is_symlink():
            shutil.rmtree(out)
        elif out.exists() or out.is_symlink():
            out.unlink()
        os.replace(result, out)
        print(f"{name}: wrote {out}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    run(main)
