"""Build a tiny offline mirror in the real upstream formats (what DATASETS_MIRROR points at):

  mnist/{train,t10k}-{images-idx3,labels-idx1}-ubyte.gz   gzipped IDX files
  cifar10/cifar-10-python.tar.gz                          cifar-10-batches-py/ protocol-2 pickles
  hymenoptera/hymenoptera_data.zip                        hymenoptera_data/{train,val}/{ants,bees}/
  resnet50/resnet50-0676ba61.pth                          RANDOM ResNet-50 weights: TEST ONLY
  SHA256SUMS

Images carry a class-dependent pattern plus noise, so that a few training steps learn
something and the metrics are not degenerate. Usable by hand too:
    python tests/tiny_mirror.py DIR
"""
import gzip
import hashlib
import io
import pickle
import sys
import tarfile
import zipfile
from pathlib import Path

import numpy as np

WEIGHTS_NAME = "resnet50-0676ba61.pth"  # the IMAGENET1K_V1 file name, random content


def _patterns(rng, n, classes, shape):
    """uint8 images (n, *shape): a per-class template plus noise, and balanced labels."""
    labels = np.arange(n) % classes
    rng.shuffle(labels)
    templates = rng.integers(0, 256, size=(classes, *shape))
    noise = rng.normal(0, 40, size=(n, *shape))
    return np.clip(templates[labels] + noise, 0, 255).astype(np.uint8), labels


def _idx(array, magic):
    header = magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes(), mtime=0)


def write_mnist(folder, rng, n_train, n_val):
    folder.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_val)):
        images, labels = _patterns(rng, n, 10, (28, 28))
        (folder / f"{prefix}-images-idx3-ubyte.gz").write_bytes(_idx(images, 2051))
        (folder / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(_idx(labels, 2049))


def _add_bytes(tar, name, payload):
    info = tarfile.TarInfo(name)
    info.size = len(payload)
    tar.addfile(info, io.BytesIO(payload))


def write_cifar10(folder, rng, n_train, n_val):
    folder.mkdir(parents=True, exist_ok=True)
    classes = ["airplane", "automobile", "bird", "cat", "deer",
               "dog", "frog", "horse", "ship", "truck"]
    with tarfile.open(folder / "cifar-10-python.tar.gz", "w:gz") as tar:
        batches = [(f"data_batch_{i}", n_train // 5) for i in range(1, 6)] + [("test_batch", n_val)]
        for name, n in batches:
            images, labels = _patterns(rng, n, 10, (3, 32, 32))
            batch = {b"batch_label": name.encode(), b"labels": labels.tolist(),
                     b"data": images.reshape(n, 3072),
                     b"filenames": [f"img_{i}.png".encode() for i in range(n)]}
            _add_bytes(tar, f"cifar-10-batches-py/{name}", pickle.dumps(batch, protocol=2))
        meta = {b"label_names": [c.encode() for c in classes], b"num_cases_per_batch": n_train // 5,
                b"num_vis": 3072}
        _add_bytes(tar, "cifar-10-batches-py/batches.meta", pickle.dumps(meta, protocol=2))


def write_image_folder_zip(path, rng, per_class, classes=("ants", "bees"), size=40,
                           top="hymenoptera_data"):
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w") as zf:
        for split, n in per_class.items():
            images, labels = _patterns(rng, n * len(classes), len(classes), (size, size, 3))
            for i, (image, label) in enumerate(zip(images, labels)):
                buffer = io.BytesIO()
                Image.fromarray(image).save(buffer, format="JPEG", quality=90)
                zf.writestr(f"{top}/{split}/{classes[label]}/{i:04d}.jpg", buffer.getvalue())
        # the upstream archive carries a .gif placeholder that is not a sample
        gif = io.BytesIO()
        Image.new("P", (4, 4)).save(gif, format="GIF")
        zf.writestr(f"{top}/train/{classes[0]}/imageNotFound.gif", gif.getvalue())


def write_random_resnet50(folder):
    import torch
    import torchvision

    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet50().state_dict(), folder / WEIGHTS_NAME)
    (folder / "TEST-ONLY.txt").write_text(
        f"{WEIGHTS_NAME} here holds RANDOM weights under the ImageNet file name, for tests only.\n")


def write_sha256sums(root):
    lines = []
    for path in sorted(p for p in root.rglob("*") if p.is_file() and p.name != "SHA256SUMS"
                       and p.suffix != ".txt"):
        lines.append(f"{hashlib.sha256(path.read_bytes()).hexdigest()}  "
                     f"{path.relative_to(root).as_posix()}")
    (root / "SHA256SUMS").write_text("\n".join(lines) + "\n")


def build(root, *, mnist=(200, 100), cifar=(250, 100), hymenoptera=None, weights=True, seed=0):
    """Write the tiny mirror under `root` and return it."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    write_mnist(root / "mnist", rng, *mnist)
    write_cifar10(root / "cifar10", rng, *cifar)
    write_image_folder_zip(root / "hymenoptera" / "hymenoptera_data.zip", rng,
                           hymenoptera or {"train": 8, "val": 5})
    if weights:
        write_random_resnet50(root / "resnet50")
    write_sha256sums(root)
    return root


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python tests/tiny_mirror.py DIR")
    print(build(sys.argv[1]))
