"""params.yaml, read into one frozen dataclass per section. Each reader checks its keys and
stops with one line naming the key and what it allows; the stages see typed attributes.

A stage reads only the sections it declares in dvc.yaml, so `dvc exp run -S key=value` reruns
exactly the stages that a change affects."""
import math
from dataclasses import asdict, dataclass, fields, is_dataclass
from pathlib import Path

from . import param_keys
from .common import StageError
from .param_keys import param, read_field, read_section, spec

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


def record(*sections):
    """The sections as one flat dict, as the run records (models/*.run.json) keep them."""
    out = {}
    for section in sections:
        out.update(asdict(section))
    return out


# ---------------------------------------------------------------- the sections
# Each field holds its own bounds (param_keys.spec); param_keys.read_section checks a section's
# keys in field order and builds it. A param is named in params.yaml, here once (its field and
# bounds), and in dvc.yaml by the stages that read it.

def _number(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) \
        and math.isfinite(value)


def _svm_value_ok(key, value):
    if key == "C":
        return _number(value) and value > 0
    if key == "kernel":
        return value in KERNELS
    if key == "gamma":
        return value in ("scale", "auto") or (_number(value) and value > 0)
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def _gamma(key, value):
    if not _svm_value_ok("gamma", value):
        raise StageError(f"params.yaml: '{key}' must be scale, auto or a number > 0, "
                         f"got {value!r}")
    return value


def _grid(key, value):
    """transfer.svm.grid: `none`, or {SVC setting: [values]}, each value in its setting's
    bounds (SVM_GRID)."""
    if value is None or value == "none":
        return None
    if not isinstance(value, dict):
        raise StageError(f"params.yaml: '{key}' must be a mapping or none, got {value!r}")
    for setting, values in value.items():
        if setting not in SVM_GRID or not isinstance(values, list) or not values:
            raise StageError(f"params.yaml: '{key}' maps SVC settings "
                             f"({', '.join(sorted(SVM_GRID))}) to non-empty lists; got "
                             f"{setting}: {values!r}")
        for one in values:
            if not _svm_value_ok(setting, one):
                raise StageError(f"params.yaml: '{key}.{setting}' values must be "
                                 f"{SVM_GRID[setting]}; got {one!r}")
    return value


def _processes(key, value):
    """distributed.nproc_per_node: an integer >= 1, or `auto` (None)."""
    if value != "auto" and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise StageError(f"params.yaml: '{key}' must be an integer >= 1 or auto, got {value!r}")
    return None if value == "auto" else value


def _samples():
    """A number of samples to keep (smoke runs, quick looks), or None for the word `all`."""
    return spec(minimum=1, unset="all")


@dataclass(frozen=True)
class Shared:
    """seed, device, precision, deterministic: what every stage that runs a network reads."""
    seed: int = spec(minimum=0)
    device: str = spec(choices=DEVICES)
    precision: str = spec(choices=PRECISIONS)
    deterministic: bool = spec()   # CUDA: deterministic cuDNN/cuBLAS algorithms (runtime.setup)


def shared(params):
    return read_section(Shared, params, "")


def seed(params):
    """`seed` alone, as Shared checks it (for a stage that reads no other shared key)."""
    return read_field(Shared, "seed", params, "seed")


def samples(params, key):
    """A number of samples to keep at `key`, as Training's checks it, or None for `all`."""
    return read_field(Training, "train_samples", params, key)


@dataclass(frozen=True)
class Training:
    """<model>.*: a CNN trained from scratch on resident tensors (each of `models`)."""
    epochs: int = spec(minimum=1)
    batch_size: int = spec(minimum=1)
    eval_batch_size: int = spec(minimum=1)
    lr: float = spec(above=0)
    optimizer: str = spec(choices=OPTIMIZERS)
    momentum: float = spec(minimum=0)
    weight_decay: float = spec(minimum=0)
    # optional: a model without the key is trained on the images as they are
    augment: bool = spec(absent=False)
    train_samples: int | None = _samples()   # None ("all" in params.yaml): the whole split
    val_samples: int | None = _samples()


def training(params, model):
    return read_section(Training, params, f"{model}.")


@dataclass(frozen=True)
class Augment:
    """transfer.<strategy>.augment: torchvision augmentation of ImageFolder training images."""
    random_crop: bool = spec()      # RandomResizedCrop instead of resize + centre crop
    crop_scale_min: float = spec(above=0, maximum=1)   # its smallest crop, a fraction of the image
    hflip: bool = spec()
    color_jitter: float = spec(minimum=0)   # brightness/contrast/saturation strength
    rotation: float = spec(minimum=0)       # degrees

    def any(self):
        return bool(self.random_crop or self.hflip or self.color_jitter or self.rotation)


@dataclass(frozen=True)
class Strategy:
    """transfer.<strategy>.*: how ResNet-50 is trained for one strategy."""
    train: str = spec(choices=TRAINED_LAYERS)   # all: every layer | head: the new last layer
    epochs: int = spec(minimum=1)
    lr: float = spec(above=0)
    backbone_lr: float | None = spec(above=0, unset="same")   # None ("same"): the same as lr
    optimizer: str = spec(choices=OPTIMIZERS)
    momentum: float = spec(minimum=0)
    weight_decay: float = spec(minimum=0)
    scheduler: str = spec(choices=SCHEDULERS)
    step_size: int = spec(minimum=1)
    gamma: float = spec(above=0)
    augment: Augment   # a subsection: transfer.<strategy>.augment.*


def strategy(params, name):
    return read_section(Strategy, params, f"transfer.{name}.")


@dataclass(frozen=True)
class TransferData:
    """transfer.{dataset,image_size,batch_size,eval_batch_size,num_workers,resident_mb,
    train_samples,val_samples}."""
    dataset: str = spec()
    image_size: int = spec(minimum=MIN_IMAGE_SIZE, maximum=MAX_IMAGE_SIZE)
    # None for the stages that only evaluate (they do not declare it)
    batch_size: int | None = spec(minimum=1)
    eval_batch_size: int = spec(minimum=1)
    num_workers: int = spec(minimum=0)
    # decoded images kept on the device up to this size (images.py)
    resident_mb: int = spec(minimum=0)
    train_samples: int | None = _samples()   # None: all; also where a stage reads no train images
    val_samples: int | None = _samples()

    def samples(self, split):
        return self.train_samples if split == "train" else self.val_samples


def transfer_data(params, training=True, splits=("train", "val")):
    """`training`: the stage trains (reads batch_size); `splits`: the splits it reads images of
    (their `<split>_samples` keys)."""
    skip = [] if training else ["batch_size"]
    skip += [f"{split}_samples" for split in ("train", "val") if split not in splits]
    return read_section(TransferData, params, "transfer.", skip=skip)


@dataclass(frozen=True)
class Svm:
    """transfer.svm.*: the SVM on frozen ImageNet features."""
    kernel: str = spec(choices=KERNELS)
    C: float = spec(above=0)
    gamma: str | float = spec(check=_gamma)
    # {setting: [values]} searched by cross-validation on train; None ("none"): no search
    grid: dict | None = spec(check=_grid)
    cv: int = spec(minimum=2)


def svm(params):
    return read_section(Svm, params, "transfer.svm.")


@dataclass(frozen=True)
class Tsne:
    """tsne.*: the t-SNE pictures and the numbers beside them."""
    points: int = spec(minimum=10)
    perplexity: float = spec(above=1)
    pca_dims: int = spec(minimum=2)
    silhouette_points: int = spec(minimum=10)
    probe_folds: int = spec(minimum=2)


def tsne(params):
    return read_section(Tsne, params, "tsne.")


@dataclass(frozen=True)
class Download:
    """download.{retries,timeout,deadline,max_unpacked_mb}: how every source is fetched."""
    retries: int = spec(minimum=1)
    timeout: float = spec(above=0)
    deadline: float = spec(above=0)       # seconds for one file, every try included
    max_unpacked_mb: int = spec(minimum=1)   # also the most a single download may bring

    @property
    def max_unpacked_bytes(self):
        return self.max_unpacked_mb * 2**20


DOWNLOAD_SETTINGS = {f.name for f in fields(Download)}   # the rest of download: the sources


def download(params):
    return read_section(Download, params, "download.")


@dataclass(frozen=True)
class Distributed:
    """distributed.*: how many processes per node, the backend they talk over, and whether
    BatchNorm layers share their statistics across the GPUs."""
    # None: `auto`, one per visible GPU (1 without GPUs)
    nproc_per_node: int | None = spec(check=_processes)
    backend: str = spec(choices=BACKENDS)
    sync_batchnorm: bool = spec()


def distributed(params):
    return read_section(Distributed, params, "distributed.")


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
    def of(cls, prefix):   # a section's keys, a subsection's under its field's name
        return [key for f in fields(cls) for key in
                (of(f.type, f"{prefix}{f.name}.") if is_dataclass(f.type)
                 else [f"{prefix}{f.name}"])]

    keys = of(Shared, "") + of(Distributed, "distributed.") + of(Download, "download.")
    keys += [f"download.{n}.{k}" for n in names for k in DOWNLOAD_KEYS]
    keys += [f"models.{m}" for m in models] + [f"strategies.{s}" for s in strategies]
    for name in models:
        keys += of(Training, f"{name}.")
    keys += of(TransferData, "transfer.") + of(Svm, "transfer.svm.") + of(Tsne, "tsne.")
    for name in strategies:
        keys += of(Strategy, f"transfer.{name}.")
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
