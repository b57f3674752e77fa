"""params.yaml, read into one frozen dataclass per section. Each reader checks its keys and
stops with one line naming the key and what it allows; the stages see typed attributes.

A stage reads only the sections it declares in dvc.yaml, so `dvc exp run -S key=value` reruns
exactly the stages that a change affects."""
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from . import param_keys
from .common import StageError

DEVICES = ("auto", "cuda", "mps", "cpu")
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULERS = ("none", "step", "cosine")
KERNELS = ("linear", "rbf", "poly", "sigmoid")
SVM_GRID = {"C": "numbers > 0", "kernel": f"one of {', '.join(KERNELS)}",
            "gamma": "scale, auto or numbers > 0", "degree": "integers >= 1"}
BACKENDS = ("auto", "nccl", "gloo")
TRAINED_LAYERS = ("all", "head")
MIN_IMAGE_SIZE = 32   # ResNet-50 halves the side five times: 32 px leaves a 1x1 map
MAX_IMAGE_SIZE = 1024  # 21x ImageNet's pixels per image: beyond, memory, not accuracy, decides
# The report's languages: one wording file each. Checked with every params.yaml read, so that
# a `report.language` no file has stops the first stage, not the last one, after the training.
WORDING = Path(__file__).resolve().parents[2] / "templates" / "wording"


# ---------------------------------------------------------------- reading and checking

def load(path="params.yaml"):
    """The YAML mapping at `path` (param_keys.read: bounded and strict, one line for each way
    the file can be wrong), with no key that no stage reads (check_known) and a report
    language that has its wording."""
    data = param_keys.read(path)
    check_known(data, path)
    check_values(data)
    return data


def check_values(data):
    """Every section's values through the reader of the stages that read it, so that the first
    stage to run stops on a value a later one would stop on (`report.language: fr` or
    `alexnet.lr: -1` before any download or training, not hours later). A section that is not
    there is left to the stages (a test's params.yaml holds only what it runs)."""
    transfer = data.get("transfer") if isinstance(data.get("transfer"), dict) else {}
    checks = [("seed", shared), ("download", download), ("tsne", tsne),
              ("distributed", distributed), ("dataset", transfer_data), ("svm", svm)]
    for section, reader in checks:
        if section in data or section in transfer:
            reader(data)
    for model in data.get("models") or {}:
        if model in data:
            training(data, model)
    for name in data.get("strategies") or {}:
        if name in transfer:
            strategy(data, name)
    report = data.get("report")
    if isinstance(report, dict) and "language" in report:
        param(data, "report.language", str, choices=languages())


def languages():
    """The report's languages: the wording files, stages/templates/wording/<language>.yaml."""
    return sorted(p.stem for p in WORDING.glob("*.yaml"))


_KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               list: "a list", dict: "a mapping", object: "a value"}


def param(params, key, kind, *, choices=None, minimum=None, above=None, maximum=None,
          unset=None):
    """The value at dotted `key` in `params`, checked; a StageError names the key and what is
    allowed. `unset` is the word (e.g. "same", "none") that params.yaml writes for "no value":
    it, or a null, gives None. params.yaml avoids bare nulls because `dvc exp run -S` rewrites
    every null in the file as an empty value."""
    node = params
    for i, part in enumerate(key.split(".")):
        if not isinstance(node, dict) or part not in node:
            raise StageError(f"params.yaml: missing key '{key}'"
                             + (f" (no '{part}' under '{'.'.join(key.split('.')[:i])}')"
                                if i else ""))
        node = node[part]
    value = shown = node
    if unset is not None and (value is None or value == unset):
        return None
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise StageError(f"params.yaml: '{key}' must be {_KIND_NAMES[kind]}"
                         f"{f' or {unset}' if unset else ''}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise StageError(f"params.yaml: '{key}' must be a finite number, got {shown!r}")
    if choices is not None and value not in choices:
        raise StageError(f"params.yaml: '{key}' must be one of {', '.join(map(str, choices))}; "
                         f"got {shown!r}")
    if minimum is not None and value < minimum:
        raise StageError(f"params.yaml: '{key}' must be >= {minimum}, got {shown!r}")
    if above is not None and value <= above:
        raise StageError(f"params.yaml: '{key}' must be > {above}, got {shown!r}")
    if maximum is not None and value > maximum:
        raise StageError(f"params.yaml: '{key}' must be <= {maximum}, got {shown!r}")
    return value


def record(*sections):
    """The sections as one flat dict, as the run records (models/*.run.json) keep them."""
    out = {}
    for section in sections:
        out.update(asdict(section))
    return out


# ---------------------------------------------------------------- the sections

@dataclass(frozen=True)
class Shared:
    """seed, device, precision, deterministic: what every stage that runs a network reads."""
    seed: int
    device: str
    precision: str
    deterministic: bool   # CUDA: deterministic cuDNN/cuBLAS algorithms (runtime.setup)


def shared(params):
    return Shared(seed=param(params, "seed", int, minimum=0),
                  device=param(params, "device", str, choices=DEVICES),
                  precision=param(params, "precision", str, choices=PRECISIONS),
                  deterministic=param(params, "deterministic", bool))


def seed(params):
    return param(params, "seed", int, minimum=0)


@dataclass(frozen=True)
class Training:
    """<model>.*: a CNN trained from scratch on resident tensors (each of `models`)."""
    epochs: int
    batch_size: int
    eval_batch_size: int
    lr: float
    optimizer: str
    momentum: float
    weight_decay: float
    augment: bool
    train_samples: int | None   # None ("all" in params.yaml): the whole split
    val_samples: int | None


def samples(params, key):
    """A number of samples to keep (smoke runs, quick looks), or None for the word `all`."""
    return param(params, key, int, minimum=1, unset="all")


def training(params, model):
    def key(k):
        return f"{model}.{k}"
    return Training(epochs=param(params, key("epochs"), int, minimum=1),
                    batch_size=param(params, key("batch_size"), int, minimum=1),
                    eval_batch_size=param(params, key("eval_batch_size"), int, minimum=1),
                    lr=param(params, key("lr"), float, above=0),
                    optimizer=param(params, key("optimizer"), str, choices=OPTIMIZERS),
                    momentum=param(params, key("momentum"), float, minimum=0),
                    weight_decay=param(params, key("weight_decay"), float, minimum=0),
                    # optional: a model without the key is trained on the images as they are
                    augment=param(params, key("augment"), bool)
                    if "augment" in (params.get(model) or {}) else False,
                    train_samples=samples(params, key("train_samples")),
                    val_samples=samples(params, key("val_samples")))


@dataclass(frozen=True)
class Augment:
    """transfer.<strategy>.augment: torchvision augmentation of ImageFolder training images."""
    random_crop: bool       # RandomResizedCrop instead of resize + centre crop
    crop_scale_min: float   # its smallest crop area, as a fraction of the image
    hflip: bool
    color_jitter: float     # brightness/contrast/saturation strength
    rotation: float         # degrees

    def any(self):
        return bool(self.random_crop or self.hflip or self.color_jitter or self.rotation)


@dataclass(frozen=True)
class Strategy:
    """transfer.<strategy>.*: how ResNet-50 is trained for one strategy."""
    train: str                  # all: every layer | head: only the new last layer
    epochs: int
    lr: float
    backbone_lr: float | None   # None ("same" in params.yaml): the same as lr
    optimizer: str
    momentum: float
    weight_decay: float
    scheduler: str
    step_size: int
    gamma: float
    augment: Augment


def strategy(params, name):
    def key(k):
        return f"transfer.{name}.{k}"
    return Strategy(
        train=param(params, key("train"), str, choices=TRAINED_LAYERS),
        epochs=param(params, key("epochs"), int, minimum=1),
        lr=param(params, key("lr"), float, above=0),
        backbone_lr=param(params, key("backbone_lr"), float, above=0, unset="same"),
        optimizer=param(params, key("optimizer"), str, choices=OPTIMIZERS),
        momentum=param(params, key("momentum"), float, minimum=0),
        weight_decay=param(params, key("weight_decay"), float, minimum=0),
        scheduler=param(params, key("scheduler"), str, choices=SCHEDULERS),
        step_size=param(params, key("step_size"), int, minimum=1),
        gamma=param(params, key("gamma"), float, above=0),
        augment=Augment(
            random_crop=param(params, key("augment.random_crop"), bool),
            crop_scale_min=param(params, key("augment.crop_scale_min"), float, above=0,
                                 maximum=1),
            hflip=param(params, key("augment.hflip"), bool),
            color_jitter=param(params, key("augment.color_jitter"), float, minimum=0),
            rotation=param(params, key("augment.rotation"), float, minimum=0)))


@dataclass(frozen=True)
class TransferData:
    """transfer.{dataset,image_size,batch_size,eval_batch_size,num_workers,resident_mb,
    train_samples,val_samples}."""
    dataset: str
    image_size: int
    batch_size: int | None   # None for the stages that only evaluate (they do not declare it)
    eval_batch_size: int
    num_workers: int
    resident_mb: int         # decoded images kept on the device up to this size (images.py)
    train_samples: int | None   # None: all; also None where a stage reads no training images
    val_samples: int | None

    def samples(self, split):
        return self.train_samples if split == "train" else self.val_samples


def transfer_data(params, training=True, splits=("train", "val")):
    """`training`: the stage trains (reads batch_size); `splits`: the splits it reads images of
    (their `<split>_samples` keys)."""
    return TransferData(
        dataset=param(params, "transfer.dataset", str),
        image_size=param(params, "transfer.image_size", int, minimum=MIN_IMAGE_SIZE,
                         maximum=MAX_IMAGE_SIZE),
        batch_size=param(params, "transfer.batch_size", int, minimum=1) if training else None,
        eval_batch_size=param(params, "transfer.eval_batch_size", int, minimum=1),
        num_workers=param(params, "transfer.num_workers", int, minimum=0),
        resident_mb=param(params, "transfer.resident_mb", int, minimum=0),
        train_samples=samples(params, "transfer.train_samples") if "train" in splits else None,
        val_samples=samples(params, "transfer.val_samples") if "val" in splits else None)


@dataclass(frozen=True)
class Svm:
    """transfer.svm.*: the SVM on frozen ImageNet features."""
    kernel: str
    C: float
    gamma: str | float
    grid: dict | None   # {setting: [values]} searched by cross-validation on train; None: no search
    cv: int


def _svm_value_ok(key, value):
    number = isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)
    if key == "C":
        return number and value > 0
    if key == "kernel":
        return value in KERNELS
    if key == "gamma":
        return value in ("scale", "auto") or (number and value > 0)
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def svm(params):
    gamma = param(params, "transfer.svm.gamma", object)
    if not _svm_value_ok("gamma", gamma):
        raise StageError(f"params.yaml: 'transfer.svm.gamma' must be scale, auto or a number "
                         f"> 0, got {gamma!r}")
    grid = param(params, "transfer.svm.grid", dict, unset="none")
    for key, values in (grid or {}).items():
        if key not in SVM_GRID or not isinstance(values, list) or not values:
            raise StageError(f"params.yaml: 'transfer.svm.grid' maps SVC settings "
                             f"({', '.join(sorted(SVM_GRID))}) to non-empty lists; got "
                             f"{key}: {values!r}")
        for value in values:
            if not _svm_value_ok(key, value):
                raise StageError(f"params.yaml: 'transfer.svm.grid.{key}' values must be "
                                 f"{SVM_GRID[key]}; got {value!r}")
    return Svm(kernel=param(params, "transfer.svm.kernel", str, choices=KERNELS),
               C=param(params, "transfer.svm.C", float, above=0), gamma=gamma, grid=grid,
               cv=param(params, "transfer.svm.cv", int, minimum=2))


@dataclass(frozen=True)
class Tsne:
    """tsne.*: the t-SNE pictures and the numbers beside them."""
    points: int
    perplexity: float
    pca_dims: int
    silhouette_points: int
    probe_folds: int


def tsne(params):
    return Tsne(points=param(params, "tsne.points", int, minimum=10),
                perplexity=param(params, "tsne.perplexity", float, above=1),
                pca_dims=param(params, "tsne.pca_dims", int, minimum=2),
                silhouette_points=param(params, "tsne.silhouette_points", int, minimum=10),
                probe_folds=param(params, "tsne.probe_folds", int, minimum=2))


@dataclass(frozen=True)
class Download:
    """download.{retries,timeout,deadline,max_unpacked_mb}: how every source is fetched."""
    retries: int
    timeout: float
    deadline: float         # seconds for one file, every try included
    max_unpacked_mb: int    # also the most a single download may bring

    @property
    def max_unpacked_bytes(self):
        return self.max_unpacked_mb * 2**20


DOWNLOAD_SETTINGS = {f.name for f in fields(Download)}   # the rest of download: the sources


def download(params):
    return Download(retries=param(params, "download.retries", int, minimum=1),
                    timeout=param(params, "download.timeout", float, above=0),
                    deadline=param(params, "download.deadline", float, above=0),
                    max_unpacked_mb=param(params, "download.max_unpacked_mb", int, minimum=1))


@dataclass(frozen=True)
class Distributed:
    """distributed.*: how many processes per node, the backend they talk over, and whether
    BatchNorm layers share their statistics across the GPUs."""
    nproc_per_node: int | None   # None: `auto`, one per visible GPU (1 without GPUs)
    backend: str
    sync_batchnorm: bool


def distributed(params):
    nproc = param(params, "distributed.nproc_per_node", object)
    if nproc != "auto" and (not isinstance(nproc, int) or isinstance(nproc, bool) or nproc < 1):
        raise StageError("params.yaml: 'distributed.nproc_per_node' must be an integer >= 1 or "
                         f"auto, got {nproc!r}")
    return Distributed(nproc_per_node=None if nproc == "auto" else nproc,
                       backend=param(params, "distributed.backend", str, choices=BACKENDS),
                       sync_batchnorm=param(params, "distributed.sync_batchnorm", bool))


# ---------------------------------------------------------------- the keys that exist
# Every field of the sections above (known_keys), and the check that stops at a key no stage
# reads, naming the closest real one (a typo, or a `+key` of `dvc exp run -S`, would otherwise
# change nothing, silently).

DOWNLOAD_KEYS = ("format", "url", "sha256", "weights")   # download.<name>.*, by format


def known_keys(names=(), models=(), strategies=()):
    """Every dotted key the pipeline reads (the fields of the sections above), with
    download.<name>.* for each source `names` (download's entries are the user's to add), a
    section <model>.* for each of `models` and transfer.<strategy>.* for each of `strategies`
    (params.yaml's `models` and `strategies`: what the pipeline trains, also the user's).
    transfer.svm.grid holds a mapping of its own: it is one key."""
    def of(cls, prefix, skip=()):
        return [f"{prefix}{f.name}" for f in fields(cls) if f.name not in skip]

    keys = of(Shared, "") + of(Distributed, "distributed.") + of(Download, "download.")
    keys += [f"download.{n}.{k}" for n in names for k in DOWNLOAD_KEYS]
    keys += [f"models.{m}" for m in models] + [f"strategies.{s}" for s in strategies]
    for name in models:
        keys += of(Training, f"{name}.")
    keys += of(TransferData, "transfer.") + of(Svm, "transfer.svm.") + of(Tsne, "tsne.")
    for name in strategies:
        keys += of(Strategy, f"transfer.{name}.", skip=("augment",))
        keys += of(Augment, f"transfer.{name}.augment.")
    return keys + ["report.language", "report.author"]


def check_known(data, path="params.yaml"):
    """Stop with one line at the first key of `data` that no stage reads (a typo, or a `+key`
    added by `dvc exp run -S`, would otherwise change nothing, silently), naming the closest
    key that exists (param_keys.check)."""
    def entries(section, skip=()):   # the names a section of the user's lists
        found = data.get(section)
        return [n for n in found if n not in skip] if isinstance(found, dict) else []

    names = entries("download", DOWNLOAD_SETTINGS)
    param_keys.check(data, known_keys(names, entries("models"), entries("strategies")), path)
