"""What the pipeline trains, as params.yaml lists it: `models` (model -> the dataset it is
trained on; its network is stages/lib/models/<model>.py) and `strategies` (strategy -> what its
ResNet-50 starts from). dvc.yaml's foreach lists are these two sections; the report, the
results table, `make smoke`, the GPU check and the tests read them through here."""
import re
from dataclasses import fields
from pathlib import Path

from .common import StageError
from .param_keys import param
from .params import DOWNLOAD_SETTINGS, TransferData

NAME = re.compile(r"[a-z][a-z0-9_]*")   # a model or strategy name: a module, a stage, a key
WEIGHTS = "data/weights/resnet50.pth"   # download@resnet50's file: ImageNet's weights
WEIGHTS_DOWNLOAD = "resnet50"   # ... and that download's name (metrics/sources/resnet50.json)
RESNET50 = "stages/lib/models/resnet50.py"   # the network's definition: random weights
STARTS = {RESNET50: "random", WEIGHTS: "imagenet"}
MODELS_FOLDER = Path(__file__).resolve().parents[1] / "models"   # stages/lib/models/


def models(params):
    """params.yaml's `models`: {model: dataset}, in its order. A model is the module
    stages/lib/models/<model>.py, trained on data/raw/<dataset> (a download@<dataset>)."""
    found = param(params, "models", dict)
    downloads = params.get("download") if isinstance(params.get("download"), dict) else {}
    for name, dataset in found.items():
        if not isinstance(name, str) or not NAME.fullmatch(name) or name in SECTIONS:
            raise StageError(f"params.yaml: 'models' has a model named {name!r}: a model's name "
                             "is its module's (lowercase letters, digits, _), not a section's")
        if not (MODELS_FOLDER / f"{name}.py").is_file():
            raise StageError(f"params.yaml: 'models.{name}': no stages/lib/models/{name}.py")
        if not isinstance(dataset, str) or dataset not in downloads:
            raise StageError(f"params.yaml: 'models.{name}' must name a dataset of `download` "
                             f"({', '.join(k for k in downloads if k not in DOWNLOAD_SETTINGS)})"
                             f", got {dataset!r}")
    return found


def strategies(params):
    """params.yaml's `strategies`: {strategy: what its ResNet-50 starts from (RESNET50: random
    weights; WEIGHTS: ImageNet's)}, in its order."""
    found = param(params, "strategies", dict)
    for name, start in found.items():
        if not isinstance(name, str) or not NAME.fullmatch(name) or name == "svm" \
                or name in TRANSFER_SETTINGS:
            raise StageError(f"params.yaml: 'strategies' has a strategy named {name!r}: "
                             "lowercase letters, digits and _, and not svm nor a transfer "
                             "setting")
        start_of(name, start)
    return found


def start(params, strategy):
    """random or imagenet: what transfer@<strategy> starts from (its `strategies` entry)."""
    if not NAME.fullmatch(strategy) or strategy == "svm" or strategy in TRANSFER_SETTINGS:
        raise StageError(f"{strategy!r} cannot be a strategy's name: lowercase letters, digits "
                         "and _, and not svm nor a transfer setting")
    return start_of(strategy, param(params, f"strategies.{strategy}", str))


def start_of(strategy, start):
    if start not in STARTS:
        raise StageError(f"params.yaml: 'strategies.{strategy}' must be {RESNET50} (random "
                         f"weights) or {WEIGHTS} (ImageNet's), got {start!r}")
    return STARTS[start]


def report_order(strategies):
    """Every strategy of part 3 in the order the report, metrics and figures list them: those
    trained from random weights, the SVM on frozen ImageNet features, then the fine-tuned
    ones (the practical's order: scratch, svm, finetune, finetune_aug)."""
    random = [s for s, start in strategies.items() if STARTS.get(start) == "random"]
    return random + ["svm"] + [s for s in strategies if s not in random]


# Names a model or a strategy cannot take: they are sections or settings already.
SECTIONS = {"models", "strategies", "seed", "device", "precision", "deterministic",
            "distributed", "download", "transfer", "tsne", "report"}
TRANSFER_SETTINGS = {f.name for f in fields(TransferData)} | {"svm"}
