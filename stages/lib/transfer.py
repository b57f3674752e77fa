"""What the transfer-learning stages share: the ImageNet weights and the ImageFolder dataset."""
from pathlib import Path

import torch

from . import images, models
from .core import data, registry
from .core.common import StageError
from .core.files import load_torch

WEIGHTS = Path(registry.WEIGHTS)
# The input normalization of every strategy's ResNet-50: the ImageNet weights' (scratch too, so
# that the four see the same inputs)
NORMALIZATION = data.NORMALIZATION["imagenet"]


def dataset_root(cfg):
    """data/raw/<transfer.dataset> (cfg: a params.TransferData), which must exist."""
    root = data.raw_folder(cfg.dataset)
    if not root.is_dir():
        raise StageError(f"{root} not found: set transfer.dataset to a downloaded ImageFolder "
                         f"dataset and run `dvc repro download@{cfg.dataset}`")
    return root


def load_state_dict(path=WEIGHTS):
    """The ImageNet state dict from `path`, loaded without unpickling arbitrary objects."""
    state = load_torch(path, "a PyTorch weights file", "dvc repro -f download@resnet50")
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise StageError(f"{path} is not a state dict of tensors (expected torchvision's "
                         "ResNet-50 ImageNet state dict)")
    return state


def pretrained_resnet50(num_classes, path=WEIGHTS):
    """ResNet-50 with the ImageNet weights from `path` and a new head for `num_classes`."""
    model = models.build("resnet50", num_classes)
    problems = model.load_imagenet(load_state_dict(path))
    if problems:
        raise StageError(f"{path} does not fit torchvision's ResNet-50 (wrong architecture?): "
                         f"{len(problems)} mismatched keys, e.g. {'; '.join(problems[:3])}")
    return model


def start_model(start, cfg, num_classes):
    """The ResNet-50 of a strategy that starts from `start` (random or imagenet) and trains as
    `cfg` (a params.Strategy) says, and its parameter groups for the optimizer: every layer
    (the backbone at `backbone_lr` when it starts from ImageNet), or the new head only."""
    model = models.build("resnet50", num_classes) if start == "random" \
        else pretrained_resnet50(num_classes)
    if cfg.train == "head":
        model.freeze_backbone()
        return model, list(model.head.parameters())
    if start == "random":
        return model, list(model.parameters())
    backbone_lr = cfg.backbone_lr if cfg.backbone_lr is not None else cfg.lr
    return model, [{"params": list(model.backbone.parameters()), "lr": backbone_lr},
                   {"params": list(model.head.parameters()), "lr": cfg.lr}]


def classes_of(root):
    return images.image_folder_classes(root, label=f"dataset {root}")


def image_set(root, split, cfg, seed, device, augment=None, rank=0):
    """`split` of the transfer set as a stage uses it (images.ImageSet), cut to its
    `transfer.<split>_samples`; `augment` (a params.Augment): training's, drawn on `rank`'s
    own random stream."""
    return images.ImageSet(root, split, image_size=cfg.image_size, device=device,
                           resident_mb=cfg.resident_mb, num_workers=cfg.num_workers,
                           normalization=NORMALIZATION, samples=cfg.samples(split), seed=seed,
                           augment=augment, rank=rank)
