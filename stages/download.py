"""Stage download@<name>: fetch, verify and unpack one dataset or weights file.

    python -m stages.download <name> <out>

Reads params `download.{retries,timeout,deadline,max_unpacked_mb}` and `download.<name>`;
writes only <out>:
  format mnist        -> <out>/{train,val}.pt  uint8 tensors (N, 1, 28, 28) + labels + classes
  format cifar10      -> <out>/{train,val}.pt  uint8 tensors (N, 3, 32, 32) + labels + classes
  format imagefolder  -> <out>/{train,val}/<class>/<image files>
  format weights      -> <out> (torchvision's ResNet-50 ImageNet state dict, as published)
and metrics/sources/<name>.json, where the data came from: {name, format, from (upstream or
mirror), check: verified (an upstream checksum matched), unchecked (upstream publishes none)
or unverified (it did not match: accepted by DATASETS_ACCEPT_UNVERIFIED, in `detail`)}; the
report states it beside the numbers the data gave.
Upstream URLs and checksums are torchvision's own; with DATASETS_MIRROR=DIR files come from
DIR/<name>/<upstream file name>, verified against DIR/SHA256SUMS.
"""
import hashlib
import os
import re
import shutil
from pathlib import Path

from torchvision.datasets import CIFAR10, MNIST
from torchvision.models import ResNet50_Weights

from stages.lib import archives, checksums, images, web
from stages.lib.core import data, params
from stages.lib.core.common import StageError, run
from stages.lib.core.files import remove_stale_parts, save_torch, temporary_dir_beside, write_json
from stages.lib.core.param_keys import param
from stages.lib.mirror import copy_from_mirror, mirror_dir

FORMATS = ("mnist", "cifar10", "imagefolder", "weights")
SOURCES = Path("metrics/sources")   # <name>.json: where each download's data came from
# MD5s of the uncompressed IDX files of the original MNIST release, as published beside it
# and used by many loaders: a re-gzipped copy (other .gz bytes, same content) is verified by them.
MNIST_RAW_MD5 = {"train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
                 "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
                 "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
                 "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637"}


def get_file(name, filename, urls, dest, checksum, algorithm, settings):
    """One source file to `dest`: from the mirror when DATASETS_MIRROR is set, else upstream.

    Returns the file's digest when `checksum` (the upstream one) is given and does not match it,
    else None. Only a mirror's file can mismatch: a download is verified against the upstream
    checksum itself, a mirror's file against the mirror's SHA256SUMS, and the caller decides
    whether another upstream check vouches for it or it must be refused."""
    mirror = mirror_dir()
    if mirror is None:
        url = web.download(urls, dest, checksum=checksum, algorithm=algorithm, **settings)
        print(f"{name}: {filename} from {url}" + (", verified" if checksum else ""), flush=True)
        return None
    print(f"{name}: {filename} from mirror {mirror}", flush=True)
    copy_from_mirror(mirror, f"{name}/{filename}", dest, upstream=urls[0])
    if checksum is None:
        return None
    actual = checksums.digest(dest, algorithm)
    return None if actual.startswith(checksum.lower()) else actual


def source_params(params, name, kind):
    """The format-specific params of download.<name>, checked before any work."""
    if kind == "imagefolder":
        url = param(params, f"download.{name}.url", str)
        if not Path(url.split("?")[0]).name:
            raise StageError(f"params.yaml: 'download.{name}.url' must end in a file name, "
                             f"got {url!r}")
        return {"url": url, "sha256": param(params, f"download.{name}.sha256", str,
                                            unset="none")}
    if kind == "weights":
        return {"weights": param(params, f"download.{name}.weights", str,
                                 choices=[w.name for w in ResNet50_Weights])}
    return {}


def prepare_mnist(name, source, work, settings, limit):
    arrays, unverified = {}, None
    for filename, md5 in MNIST.resources:
        path = work / filename
        mismatch = get_file(name, filename, [m + filename for m in MNIST.mirrors], path, md5,
                            "md5", settings)
        raw = archives.gunzip(path, max_bytes=limit)
        stem = filename.removesuffix(".gz")
        if mismatch and hashlib.md5(raw).hexdigest() != MNIST_RAW_MD5[stem]:
            unverified = unverified or checksums.upstream_mismatch(
                name, f"{filename} from the mirror is not the MNIST release",
                f"md5 {mismatch}, torchvision's is {md5}; unpacked md5 "
                f"{hashlib.md5(raw).hexdigest()}, the release's is {MNIST_RAW_MD5[stem]}")
        arrays[stem] = data.parse_idx(raw, filename, 2051 if "images" in filename else 2049)
        path.unlink()
    splits = {}
    for split, prefix in (("train", "train"), ("val", "t10k")):
        images = arrays[f"{prefix}-images-idx3-ubyte"]
        labels = arrays[f"{prefix}-labels-idx1-ubyte"]
        if images.ndim != 3 or images.shape[0] == 0 or tuple(images.shape[1:]) != (28, 28):
            raise StageError(f"{prefix}-images-idx3-ubyte.gz must hold 28x28 images, got "
                             f"shape {tuple(images.shape)}")
        if labels.ndim != 1:
            raise StageError(f"{prefix}-labels-idx1-ubyte.gz must hold a list of labels, got "
                             f"shape {tuple(labels.shape)}")
        splits[split] = data.tensor_record(images.unsqueeze(1), labels, data.MNIST_CLASSES)
    return splits, unverified


def prepare_cifar10(name, source, work, settings, limit):
    archive = work / CIFAR10.filename
    mismatch = get_file(name, CIFAR10.filename, [CIFAR10.url], archive, CIFAR10.tgz_md5, "md5",
                        settings)
    unpacked = work / "unpacked"
    unpacked.mkdir()
    archives.extract(archive, unpacked, max_bytes=limit)
    archive.unlink()
    folder = archives.single_top_folder(unpacked)
    unverified = None
    if mismatch:   # a repacked archive of the original batches still matches their MD5s
        inner = [*CIFAR10.train_list, *CIFAR10.test_list,
                 [CIFAR10.meta["filename"], CIFAR10.meta["md5"]]]
        wrong = [n for n, md5 in inner
                 if not (folder / n).is_file() or checksums.digest(folder / n, "md5") != md5]
        if wrong:
            unverified = checksums.upstream_mismatch(
                name, f"{CIFAR10.filename} from the mirror is not the CIFAR-10 release",
                f"md5 {mismatch}, torchvision's is {CIFAR10.tgz_md5}; inner files that differ "
                f"from torchvision's MD5s: {', '.join(wrong)}")
    splits, classes = data.read_cifar10(folder)
    shutil.rmtree(unpacked)
    return {split: data.tensor_record(images, labels, classes)
            for split, (images, labels) in splits.items()}, unverified


def prepare_imagefolder(name, source, work, settings, limit):
    filename = Path(source["url"].split("?")[0]).name
    archive = work / filename
    mismatch = get_file(name, filename, [source["url"]], archive, source["sha256"], "sha256",
                        settings)
    unverified = mismatch and checksums.upstream_mismatch(
        name, f"{filename} from the mirror is not the file pinned in "
              f"download.{name}.sha256", f"sha256 {mismatch}, pinned {source['sha256']}")
    unpacked = work / "unpacked"
    unpacked.mkdir()
    archives.extract(archive, unpacked, max_bytes=limit)
    archive.unlink()
    root = archives.single_top_folder(unpacked)
    removed = images.tidy(root, f"{name} ({filename})")
    if removed:
        print(f"{name}: left out {len(removed)} hidden entries (dot files, macOS's ._ and "
              f"__MACOSX): {', '.join(removed[:5])}{' ...' if len(removed) > 5 else ''}",
              flush=True)
    classes = images.image_folder_classes(root, label=f"{filename} (not an ImageFolder archive)")
    pictures = images.check_pictures(root, f"{name} ({filename})")
    print(f"{name}: ImageFolder with classes {', '.join(classes)}; {pictures} pictures, each "
          "decoded", flush=True)
    return root, unverified or None


def prepare_weights(name, source, work, settings, limit):
    url = ResNet50_Weights[source["weights"]].url
    filename = Path(url).name
    # torch.hub convention: resnet50-<first 8 hex digits of the file's SHA-256>.pth
    prefix = re.search(r"-([a-f0-9]+)\.", filename).group(1)
    path = work / filename
    mismatch = get_file(name, filename, [url], path, prefix, "sha256", settings)
    unverified = mismatch and checksums.upstream_mismatch(
        name, f"{filename} from the mirror is not torchvision's {source['weights']} file",
        f"its sha256 {mismatch[:16]}... does not start with {prefix}")
    return path, unverified or None


def source_record(name, kind, source, unverified):
    """metrics/sources/<name>.json's content (see the module's docstring)."""
    unchecked = kind == "imagefolder" and source["sha256"] is None
    return {"name": name, "format": kind,
            "from": "upstream" if mirror_dir() is None else "mirror",
            "check": "unverified" if unverified else "unchecked" if unchecked else "verified",
            "detail": unverified}


def main(argv):
    if len(argv) != 2:
        raise StageError("usage: python -m stages.download <name> <out>")
    name, out = argv[0], Path(argv[1])
    values = params.load()
    cfg = params.download(values)
    limit = cfg.max_unpacked_bytes
    settings = {"retries": cfg.retries, "timeout": cfg.timeout, "deadline": cfg.deadline,
                "max_bytes": limit}
    kind = param(values, f"download.{name}.format", str, choices=FORMATS)
    source = source_params(values, name, kind)
    mirror_dir()  # a DATASETS_MIRROR that is not a folder stops here
    for stale in remove_stale_parts(out):
        print(f"{name}: removed {stale}, left over by a run that was killed", flush=True)

    work = temporary_dir_beside(out)
    try:
        if kind == "weights":
            result, unverified = prepare_weights(name, source, work, settings, limit)
        elif kind == "imagefolder":
            result, unverified = prepare_imagefolder(name, source, work, settings, limit)
        else:
            prepare = prepare_mnist if kind == "mnist" else prepare_cifar10
            result = work / "prepared"
            result.mkdir()
            splits, unverified = prepare(name, source, work, settings, limit)
            for split, record in splits.items():
                save_torch(record, result / f"{split}.pt")
                print(f"{name}/{split}: {tuple(record['images'].shape)} images, "
                      f"{len(record['classes'])} classes", flush=True)
        if out.is_dir() and not out.is_symlink():
            shutil.rmtree(out)
        elif out.exists() or out.is_symlink():
            out.unlink()
        os.replace(result, out)
        write_json(SOURCES / f"{name}.json", source_record(name, kind, source, unverified))
        print(f"{name}: wrote {out}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    run(main)
