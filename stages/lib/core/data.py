"""The data layer: decoding the upstream formats into uint8 tensors, the prepared tensor files and
batches of resident tensors (ImageFolder data: images.py). Knows nothing of training."""
import math
import pickle
import re
from pathlib import Path

import numpy as np
import torch

from .common import StageError
from .files import load_torch
from .names import check_class_name

MNIST_CLASSES = [str(d) for d in range(10)]
# Per-channel mean and std of the training images, in [0, 1] units.
NORMALIZATION = {
    "mnist": ((0.1307,), (0.3081,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}
SPLITS = ("train", "val")
RAW = Path("data/raw")
FEATURES = Path("data/features")
_DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


def raw_folder(name, key="transfer.dataset"):
    """data/raw/<name> for a dataset name from params.yaml (`key`): a plain folder name, never
    a path that could lead outside the project (absolute, `..`, separators)."""
    if not isinstance(name, str) or not _DATASET_NAME.fullmatch(name) or name in (".", ".."):
        raise StageError(f"params.yaml: '{key}' must be the name of a download@<name> dataset "
                         f"(letters, digits, '_', '-', '.'), got {name!r}")
    return RAW / name


# ---------------------------------------------------------------- upstream formats

def parse_idx(raw, name, magic):
    """The bytes of an IDX file (MNIST, already decompressed) as a uint8 tensor: images
    (N, H, W) or labels (N,). `name` is the file's name in error messages."""
    found = int.from_bytes(raw[:4], "big") if len(raw) >= 4 else None
    if found != magic:
        raise StageError(f"{name} is not an IDX file with magic {magic} (got {found})")
    ndim = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim)]
    offset = 4 + 4 * ndim
    if len(raw) != offset + math.prod(shape):
        raise StageError(f"{name} is truncated: header says {shape}, "
                         f"{len(raw) - offset} bytes of data")
    return torch.from_numpy(np.frombuffer(raw, np.uint8, offset=offset).reshape(shape).copy())


class _CifarUnpickler(pickle.Unpickler):
    """Unpickles only what CIFAR-10's python batches are made of: dicts, lists, bytes, str,
    ints and numpy arrays. Any other global a pickle asks for (os.system, builtins.eval, ...)
    is refused before it is looked up, so no code from the file ever runs."""

    _RECONSTRUCT = np.ndarray((0,)).__reduce__()[0]   # numpy's own ndarray reconstructor
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"): _RECONSTRUCT,
               ("numpy._core.multiarray", "_reconstruct"): _RECONSTRUCT,
               ("numpy", "ndarray"): np.ndarray,
               ("numpy", "dtype"): np.dtype}

    def find_class(self, module, name):
        if (module, name) == ("_codecs", "encode"):   # how Python 3 pickles bytes (protocol 2)
            return _latin1_encode
        try:
            return self.ALLOWED[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}: a CIFAR-10 batch "
                                         "holds only arrays, lists and strings") from None


def _latin1_encode(text, encoding="latin1"):
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refused _codecs.encode with {encoding!r}")
    return text.encode("latin1")


def read_cifar10(folder):
    """The python-version CIFAR-10 batches in `folder` as {split: (images uint8 (N, 3, 32, 32),
    labels int64)} and classes. The pickles go through a restricted unpickler and every field
    is checked for type and shape, so a crafted batch is an error, never code that runs."""
    folder = Path(folder)

    def load(name):
        try:
            with open(folder / name, "rb") as f:
                record = _CifarUnpickler(f, encoding="bytes").load()
        except FileNotFoundError:
            raise StageError(f"CIFAR-10 archive lacks {name}") from None
        except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError,
                IndexError, KeyError) as error:
            raise StageError(f"CIFAR-10 file {name} is corrupt or unsafe: {error}") from None
        if not isinstance(record, dict):
            raise StageError(f"CIFAR-10 file {name} is not a batch (a pickled dict)")
        return record

    def batch(name):
        record = load(name)
        images, labels = record.get(b"data"), record.get(b"labels")
        if not (isinstance(images, np.ndarray) and images.dtype == np.uint8
                and images.ndim == 2 and images.shape[1] == 3 * 32 * 32):
            raise StageError(f"CIFAR-10 file {name}: 'data' must be a uint8 array of shape "
                             f"(N, 3072), got {_describe(images)}")
        if not (isinstance(labels, list) and len(labels) == len(images)
                and all(type(v) is int and 0 <= v < len(classes) for v in labels)):
            raise StageError(f"CIFAR-10 file {name}: 'labels' must be {len(images)} integers "
                             f"in 0..{len(classes) - 1}")
        return images, labels

    def stack(names):
        batches = [batch(n) for n in names]
        images = np.concatenate([b[0] for b in batches]).reshape(-1, 3, 32, 32)
        labels = np.concatenate([np.asarray(b[1], dtype=np.int64) for b in batches])
        return torch.from_numpy(images.copy()), torch.from_numpy(labels)

    names = load("batches.meta").get(b"label_names")
    if not (isinstance(names, list) and len(names) >= 2
            and all(isinstance(c, bytes) and c for c in names)):
        raise StageError("CIFAR-10 file batches.meta: 'label_names' must be a list of names")
    classes = [c.decode("utf-8", "replace") for c in names]
    for name in classes:
        check_class_name(name, "CIFAR-10 file batches.meta")
    return {"train": stack([f"data_batch_{i}" for i in range(1, 6)]),
            "val": stack(["test_batch"])}, classes


def _describe(value):
    if isinstance(value, np.ndarray):
        return f"{value.dtype} array of shape {value.shape}"
    return type(value).__name__


# ---------------------------------------------------------------- prepared tensor files

def tensor_record(images, labels, classes):
    """What data/raw/<dataset>/<split>.pt holds (loadable with weights_only=True)."""
    if images.dtype != torch.uint8 or images.ndim != 4:
        raise ValueError("images must be uint8 (N, C, H, W)")
    if len(images) != len(labels):
        raise StageError(f"{len(images)} images but {len(labels)} labels")
    if len(labels) and (labels.min() < 0 or labels.max() >= len(classes)):
        raise StageError(f"labels outside 0..{len(classes) - 1}")
    return {"images": images.contiguous(), "labels": labels.to(torch.int64),
            "classes": list(classes)}


def load_tensors(folder, split, mmap=False):
    path = Path(folder) / f"{split}.pt"
    rerun = f"dvc repro -f download@{Path(folder).name}"
    record = load_torch(path, "a prepared tensor file", rerun, mmap=mmap)
    if not isinstance(record, dict) or {"images", "labels", "classes"} - set(record):
        raise StageError(f"{path} is not a prepared tensor file (needs images, labels, "
                         f"classes): run `{rerun}`")
    return record


def load_features(split):
    """data/features/<split>.pt as the features stage wrote it, checked."""
    path = FEATURES / f"{split}.pt"
    record = load_torch(path, "a features file", "dvc repro -f features")
    if not (isinstance(record, dict) and isinstance(record.get("features"), torch.Tensor)
            and isinstance(record.get("labels"), torch.Tensor) and record["features"].ndim == 2
            and len(record["features"]) == len(record["labels"])
            and isinstance(record.get("classes"), list)):
        raise StageError(f"{path} is not a features file (needs features (N, D), labels (N,), "
                         "classes): run `dvc repro -f features`")
    return record


def subsample(n, points, seed):
    """Indices of `points` of n items (all of them, in order, when points is None or >= n):
    a seeded random choice, in their original order, so a cut set keeps the class balance of
    the whole. `<model>.train_samples` and friends (smoke runs) and t-SNE's points use it."""
    if points is None or points >= n:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, size=points, replace=False))


def take(record, samples, seed):
    """A prepared tensor record ({images, labels, classes}) cut to `samples` images (None: all),
    picked by subsample()."""
    if samples is None or samples >= len(record["labels"]):
        return record
    keep = torch.from_numpy(subsample(len(record["labels"]), samples, seed))
    return {**record, "images": record["images"][keep], "labels": record["labels"][keep]}


def batches(images, labels, batch_size, *, generator=None, mean, std, augment=False,
            shard=(0, 1), augment_generator=None):
    """Batches of resident uint8 images (on any device), normalized to float on the fly.
    A `generator` shuffles (training); `augment` adds a random 4-pixel-padded crop and a
    horizontal flip per image, done on the whole batch at once (no per-sample PIL work), drawn
    from `augment_generator` (default: `generator`).

    shard=(rank, world): this rank's share of each batch of the global order, batch_size /
    world of it: positions rank, rank + world, ... of the order, its first few repeated at the
    end when it does not divide by world (as torch's DistributedSampler does), so that the
    ranks' shares of step k together are the one-process batch k."""
    rank, world = shard
    n = len(labels)
    order = torch.randperm(n, generator=generator, device="cpu") if generator is not None \
        else torch.arange(n)
    if world > 1:
        order = pad_to_multiple(order, world)[rank::world]
        batch_size //= world
    order = order.to(images.device)
    mean = torch.tensor(mean, device=images.device).view(1, -1, 1, 1)
    std = torch.tensor(std, device=images.device).view(1, -1, 1, 1)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        x = images[idx].float().div_(255)
        if augment:
            x = random_crop_flip(x, augment_generator or generator)
        yield (x - mean) / std, labels[idx]


def pad_to_multiple(order, world):
    """`order` with its own items repeated from the start, as often as needed (as torch's
    DistributedSampler does), up to the next multiple of `world`: every rank gets as many."""
    n = len(order)
    need = (-n) % world
    if need == 0 or n == 0:
        return order
    repeats = -(-need // n)
    return torch.cat([order, order.repeat(repeats)[:need]])


def random_crop_flip(x, generator, pad=4):
    """Random translation by up to `pad` pixels (zero padding) and random horizontal flip,
    vectorized over the batch."""
    n, c, h, w = x.shape
    dy, dx = torch.randint(0, 2 * pad + 1, (2, n, 1), generator=generator).to(x.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(x.device).view(n, 1, 1, 1)
    padded = torch.nn.functional.pad(x, (pad, pad, pad, pad))
    rows = (dy + torch.arange(h, device=x.device)).view(n, 1, h, 1)
    cols = (dx + torch.arange(w, device=x.device)).view(n, 1, 1, w)
    out = padded[torch.arange(n, device=x.device).view(n, 1, 1, 1),
                 torch.arange(c, device=x.device).view(1, c, 1, 1), rows, cols]
    return torch.where(flip, out.flip(-1), out)
