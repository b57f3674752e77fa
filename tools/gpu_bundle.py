"""The GPU check's bundle: what the lent GPU machine lacks, in one git-ignored folder that travels
with the working tree (the device tool's `carry`), within the 64 MiB a call may send.

    python -m tools.gpu_bundle               # make gpu-bundle: build/gpu/
    python -m tools.gpu_bundle --no-wheels   # the data and the package list only (offline)

That machine (tools/gpu_machine.txt) has CPython 3.12 with torch, torchvision, scikit-learn,
matplotlib, pandas, Jinja2 and pytest, but no DVC or dvclive, no network and no datasets
mirror. The bundle holds:
- wheels/: every package the stages, DVC and the GPU tests import (requirements.txt's closure,
  read from this environment's installed metadata) that the machine's image does not hold, at
  this environment's versions (the lock's), for CPython --python manylinux x86-64; a package
  published only as source (pure Python) is built here into its wheel.
- mirror/: a datasets mirror (SHA256SUMS) the download stages read as they read any mirror:
  MNIST whole (the mirror's files); hymenoptera as the stages see it: each picture resized as
  the stage resizes it (short side 8/7 of transfer.image_size) and everything outside the
  centre crop the stage cuts made black, saved as lossless WebP: the stage decodes every one
  to the same tensor as the original (checked here, picture by picture, with the stage's own
  decode transform); a training that crops the whole picture (transfer.*.augment.random_crop,
  rotation) would see the black, and the check trains none. CIFAR-10 does not fit in any form
  (150 MB of pixels that do not compress): a fixed subset, the first --cifar10 TRAIN,VAL images
  of each class in the release's order, which the download stage reports as not the release.
- bundle.json: what each part is, for the check's summary.

It prints each part's size and the total with the working tree, and refuses (removing what it
built, exit 1) when that total is over --limit-mib. Then it prints the call that runs the
check on the lent machine.
"""
import argparse
import gzip
import importlib.metadata as metadata
import io
import json
import os
import pickle
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import torch
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename
from PIL import Image
from torchvision.transforms import v2

from stages.lib import archives, checksums, images
from stages.lib.core import data

ROOT = Path(__file__).resolve().parents[1]

# Not carried, with what they would bring; the rehearsal (tools/gpu_rehearsal.py) runs the check
# on a stand-in that lacks them, so a command that needed one would fail there first.
NOT_CARRIED = {
    "weasyprint": "make submission's PDF (and the Pango library): not part of the check",
    "pygit2": "Git's compiled backend, 4.7 MiB: DVC does what the check asks with dulwich",
    "asyncssh": "Git and DVC remotes over SSH: the check uses none",
    "cryptography": "SSH's and HTTPS remotes' crypto, 4.5 MiB (with cffi): the check uses none",
}
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64",
             "manylinux2014_x86_64", "manylinux1_x86_64"]
CALL_SECONDS = 560          # the device call's timeout_s: the check's budget plus its start
BUDGET_SECONDS = 450


def say(message):
    print(f"gpu_bundle: {message}", flush=True)


def fail(message):
    print(f"gpu_bundle: error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def mib(n):
    return f"{n / 2**20:.1f} MiB"


def machine_packages(path=ROOT / "tools" / "gpu_machine.txt"):
    return {canonicalize_name(line.strip()) for line in path.read_text().splitlines()
            if line.strip() and not line.startswith("#")}


def requirement_roots(path=ROOT / "requirements.txt"):
    names = [Requirement(line.split("#")[0].strip()).name for line in path.read_text().splitlines()
             if line.split("#")[0].strip()]
    return [n for n in names if canonicalize_name(n) not in NOT_CARRIED]


def packages_to_carry(roots, machine, python="3.12"):
    """{name: version} of the installed distributions `roots` need, directly or through others,
    that are not in `machine` (whose own needs the machine's image already meets) or
    NOT_CARRIED (nor what only they need), with the
    requirement markers evaluated for CPython `python` on Linux x86-64."""
    env = {"python_version": python, "python_full_version": f"{python}.0",
           "sys_platform": "linux", "platform_system": "Linux", "platform_machine": "x86_64",
           "implementation_name": "cpython", "platform_python_implementation": "CPython",
           "os_name": "posix", "extra": ""}
    carry, seen, todo = {}, set(), list(roots)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen or name in machine or name in NOT_CARRIED:
            seen.add(name)
            continue
        seen.add(name)
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            fail(f"{name} is needed but not installed here (make .venv/bin/.installed-test)")
        carry[name] = dist.version
        for text in dist.requires or []:
            requirement = Requirement(text)
            if requirement.marker is None or requirement.marker.evaluate(env):
                todo.append(requirement.name)
    return dict(sorted(carry.items()))


def pip(*args):
    return subprocess.run([sys.executable, "-m", "pip", *args], capture_output=True, text=True)


def download_wheels(packages, dest, python):
    """One wheel per package into `dest` (kept from an earlier build when the same version)."""
    dest.mkdir(parents=True, exist_ok=True)
    have = {}
    for wheel in dest.glob("*.whl"):
        name, version, *_ = parse_wheel_filename(wheel.name)
        if packages.get(name) == str(version):
            have[name] = wheel
        else:
            wheel.unlink()   # another version, or a package no longer carried
    for name, version in packages.items():
        if name in have:
            continue
        got = pip("download", "-q", "--no-deps", "--only-binary=:all:", "--python-version",
                  python, "--implementation", "cp", *[f"--platform={p}" for p in PLATFORMS],
                  "-d", str(dest), f"{name}=={version}")
        if got.returncode != 0:   # published only as source: pure Python built into a wheel
            built = pip("wheel", "-q", "--no-deps", "-w", str(dest), f"{name}=={version}")
            if built.returncode != 0:
                fail(f"no wheel of {name}=={version} for CPython {python}: "
                     f"{(got.stderr.strip() or built.stderr.strip()).splitlines()[-1]}")
            wheel = next(dest.glob(f"{name.replace('-', '_')}-{version}-*.whl"), None)
            if wheel is None or not wheel.name.endswith("-py3-none-any.whl") and \
                    not wheel.name.endswith("-py2.py3-none-any.whl"):
                fail(f"{name}=={version} has no wheel for CPython {python} and is not pure "
                     "Python")
    return sorted(dest.glob("*.whl"))


def bundle_mnist(mirror, dest):
    (dest / "mnist").mkdir(parents=True)
    for name in ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                 "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"):
        shutil.copyfile(mirror / "mnist" / name, dest / "mnist" / name)
    return "MNIST: the whole release (the mirror's files)"


def evaluation_view_only(picture, image_size):
    """`picture` (PIL RGB) resized as the stages resize it, everything outside the centre crop
    they cut made black (black compresses to almost nothing)."""
    resized = v2.Resize(round(image_size * 8 / 7))(picture)
    width, height = resized.size
    top, left = round((height - image_size) / 2), round((width - image_size) / 2)
    canvas = Image.new("RGB", resized.size)
    canvas.paste(resized.crop((left, top, left + image_size, top + image_size)), (left, top))
    return canvas


def bundle_imagefolder(archive, dest, image_size):
    """The ImageFolder zip `archive` as the stages see it at `image_size` (module docstring),
    each picture checked to decode to the same tensor; the new zip at dest/<archive's name>."""
    decode = images.decode_transform(image_size)
    with tempfile.TemporaryDirectory() as work:
        unpacked = Path(work) / "unpacked"
        unpacked.mkdir()
        archives.extract(archive, unpacked, max_bytes=10 * 2**30)
        root = archives.single_top_folder(unpacked)
        images.tidy(root, archive.name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        count = 0
        with zipfile.ZipFile(dest, "w", zipfile.ZIP_STORED) as out:
            for path in sorted(root.rglob("*")):
                if not (path.is_file() and path.suffix.lower() in images.IMG_EXTENSIONS):
                    continue
                original = images.read_rgb(path)
                buffer = io.BytesIO()
                evaluation_view_only(original, image_size).save(buffer, "WEBP", lossless=True,
                                                                quality=100, method=4)
                shrunk = images.rgb(Image.open(io.BytesIO(buffer.getvalue())), path)
                if not torch.equal(decode(shrunk), decode(original)):
                    fail(f"{path.relative_to(root)}: the shrunk picture does not decode to the "
                         "original's tensor")
                name = path.relative_to(unpacked).with_suffix(".webp").as_posix()
                out.writestr(zipfile.ZipInfo(name, (2000, 1, 1, 0, 0, 0)), buffer.getvalue())
                count += 1
    return (f"{archive.stem}: {count} pictures as the stages see them at image_size "
            f"{image_size} (resized to {round(image_size * 8 / 7)}, black outside the centre "
            f"crop, lossless WebP), each decoded by the stage's transform to the same tensor as "
            "the original")


def bundle_cifar10(mirror, dest, per_class):
    """The first per_class[split] images of each class of the mirror's CIFAR-10 release, as a
    python-version archive with the release's file names (the training set spread over its
    five batches)."""
    with tempfile.TemporaryDirectory() as work:
        archives.extract(mirror / "cifar10" / "cifar-10-python.tar.gz", Path(work),
                         max_bytes=2**30)
        folder = archives.single_top_folder(Path(work))
        splits, classes = data.read_cifar10(folder)
    files = {"batches.meta": {b"label_names": [c.encode() for c in classes],
                              b"num_cases_per_batch": 0, b"num_vis": 3072}}
    for split, (pixels, labels) in splits.items():
        keep = np.concatenate([np.flatnonzero(labels.numpy() == c)[:per_class[split]]
                               for c in range(len(classes))])
        keep.sort()
        names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
        for name, part in zip(names, np.array_split(keep, len(names))):
            files[name] = {b"batch_label": name.encode(),
                           b"labels": [int(v) for v in labels[part]],
                           b"data": pixels[part].reshape(len(part), -1).numpy()}
    (dest / "cifar10").mkdir(parents=True)
    with gzip.GzipFile(dest / "cifar10" / "cifar-10-python.tar.gz", "wb", mtime=0) as gz, \
            tarfile.open(fileobj=gz, mode="w") as tar:
        for name, record in files.items():
            payload = pickle.dumps(record, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(payload)
            tar.addfile(info, io.BytesIO(payload))
    kept = {s: sum(len(files[n][b"labels"]) for n in files
                   if n != "batches.meta" and n.startswith("data") == (s == "train"))
            for s in splits}
    return (f"CIFAR-10: a fixed subset, the first {per_class['train']} training and "
            f"{per_class['val']} test images of each class at most ({kept['train']:,} of "
            f"{len(splits['train'][1]):,} and {kept['val']:,} of {len(splits['val'][1]):,}): "
            "its accuracies are not the full set's")


def working_tree_bytes():
    """What the device tool sends besides the carried folders: tracked and untracked files git
    does not ignore, and shared/ where the checkout has one."""
    listed = subprocess.run(["git", "ls-files", "-z", "-co", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\0")
    files = [ROOT / f for f in listed if f and (ROOT / f).is_file()]
    files += [p for p in (ROOT / "shared").rglob("*") if p.is_file()] \
        if (ROOT / "shared").is_dir() else []
    return sum(f.stat().st_size for f in files)


def folder_bytes(folder):
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def arguments(argv):
    parser = argparse.ArgumentParser(prog="gpu_bundle", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu")
    parser.add_argument("--mirror", type=Path, default=Path(os.environ.get(
        "DATASETS_MIRROR") or ROOT.parent / "shared" / "datasets"))
    parser.add_argument("--python", default="3.12", help="the GPU machine's CPython version")
    parser.add_argument("--cifar10", default="200,50", help="TRAIN,VAL images per class")
    parser.add_argument("--limit-mib", type=float, default=64.0)
    parser.add_argument("--no-wheels", action="store_true", help="data and package list only")
    args = parser.parse_args(argv)
    try:
        train, val = (int(v) for v in args.cifar10.split(","))
        assert train > 0 and val > 0
    except (ValueError, AssertionError):
        parser.error(f"--cifar10 wants TRAIN,VAL (two positive numbers), got {args.cifar10!r}")
    args.per_class = {"train": train, "val": val}
    if not (args.mirror / "SHA256SUMS").is_file():
        parser.error(f"{args.mirror} is not a datasets mirror (no SHA256SUMS): --mirror DIR")
    return args


def main(argv=None):
    args = arguments(argv)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    transfer_set = params["transfer"]["dataset"]
    out = args.out.resolve()
    mirror_out = out / "mirror"
    shutil.rmtree(mirror_out, ignore_errors=True)
    packages = packages_to_carry(requirement_roots(), machine_packages(), args.python)
    say(f"{len(packages)} packages to carry: {' '.join(packages)}")
    if args.no_wheels:
        shutil.rmtree(out / "wheels", ignore_errors=True)
    else:
        wheels = download_wheels(packages, out / "wheels", args.python)
        say(f"wheels/: {len(wheels)} wheels for CPython {args.python}, "
            f"{mib(folder_bytes(out / 'wheels'))}")
    notes = [bundle_mnist(args.mirror, mirror_out)]
    say(notes[-1])
    notes.append(bundle_cifar10(args.mirror, mirror_out, args.per_class))
    say(notes[-1])
    source = Path(params["download"][transfer_set]["url"].split("?")[0]).name
    notes.append(bundle_imagefolder(args.mirror / transfer_set / source,
                                    mirror_out / transfer_set / source,
                                    int(params["transfer"]["image_size"])))
    say(notes[-1])
    sums = [f"{checksums.digest(p)}  {p.relative_to(mirror_out).as_posix()}"
            for p in sorted(mirror_out.rglob("*")) if p.is_file()]
    (mirror_out / "SHA256SUMS").write_text("\n".join(sums) + "\n")
    (out / "bundle.json").write_text(json.dumps({
        "python": args.python, "packages": packages, "data": notes,
        "accept_unverified": ["cifar10", transfer_set]}, indent=1) + "\n")
    tree, bundle = working_tree_bytes(), folder_bytes(out)
    total = tree + bundle
    say(f"mirror/: {mib(folder_bytes(mirror_out))}; the bundle {mib(bundle)} + the working "
        f"tree {mib(tree)} = {mib(total)} of the {args.limit_mib:g} MiB a call may send")
    if total > args.limit_mib * 2**20:
        shutil.rmtree(mirror_out)
        (out / "bundle.json").unlink()
        fail(f"{mib(total)} is over the {args.limit_mib:g} MiB limit: no bundle is left in {out} "
             "(its wheels are kept for the next try); carry fewer CIFAR-10 images (--cifar10 "
             "TRAIN,VAL per class) or shrink the tree")
    where = out.relative_to(ROOT) if out.is_relative_to(ROOT) else out
    say(f"the call on the lent GPU machine (device tool `run`): command "
        f"'python3 -m tools.gpu_check --bundle {where} --budget {BUDGET_SECONDS}', "
        f"carry [\"{where}\"], timeout_s {CALL_SECONDS}; its summary comes back as "
        "gpu_check.md (docs/gpu.md)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
