"""A trained network at work: a model prepared for its device, a model file of this pipeline
loaded, predictions (and representations) over batches. What the stages that only evaluate
(tsne, features, compare) need of the engine, and what training (engine.py) builds on."""
from pathlib import Path

import torch

from .. import models
from . import cpu_layers
from .common import StageError
from .files import load_error, load_torch
from .progress import Progress


def load_checkpoint(path, device):
    """A checkpoint written by a training stage ({arch, classes, state_dict, ...}) as an
    eval-mode model on `device`, and the checkpoint dict."""
    rerun = f"dvc repro -f {stage_of(path)}"
    checkpoint = load_torch(path, "a model file of this pipeline", rerun)
    try:
        model = models.build(checkpoint["arch"], len(checkpoint["classes"]))
        model.load_state_dict(checkpoint["state_dict"])
    except StageError:
        raise
    except Exception as error:   # a damaged file: load_state_dict raises many types
        raise StageError(f"{path} is not a model file of this pipeline "
                         f"({load_error(error)}): run `{rerun}`") from None
    return prepare(model, device).eval(), checkpoint


def stage_of(model_path):
    """The stage that writes a model file: models/alexnet.pt -> train@alexnet,
    models/transfer/scratch.pt -> transfer@scratch."""
    path = Path(model_path)
    return f"{'transfer' if path.parent.name == 'transfer' else 'train'}@{path.stem}"


def prepare(model, device):
    """Move the model to `device` in the memory layout the engine uses there, and on a CPU swap
    in the CPU-fast layers (cpu_layers.convert_for_cpu: a cheaper dropout mask, and a weight
    gradient by forward convolution for AlexNet's small-map convolutions under bf16).

    stages/lib/models/ keeps the plain nn layers the practical describes; device-specific
    versions are swapped in here, at set-up, as torchvision's reference training scripts do
    with SyncBatchNorm.convert_sync_batchnorm(model). The swap keeps every Parameter (state_dict and
    optimizers unchanged). It is done for every CPU model, fp32 included: the cheaper dropout
    mask helps in every precision, and SmallMapConv2d is nn.Conv2d by itself wherever its trick
    does not apply (fp32, no_grad, frozen weights)."""
    model = model.to(device)
    if device.type in ("cuda", "cpu"):
        model = model.to(memory_format=torch.channels_last)
    if device.type == "cpu":
        model = cpu_layers.convert_for_cpu(model)
    return model


def to_device(x, y, device):
    x = x.to(device, non_blocking=True)
    if device.type in ("cuda", "cpu") and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


@torch.no_grad()
def predict(model, batches, device, amp_dtype, embed=False, progress="predict"):
    """(predicted classes, true labels) over `batches`; with embed=True also the intermediate
    representation and the logits, as float32 CPU tensors. `progress`: as in run_epoch."""
    model.eval()
    preds, labels, features, logits_all = [], [], [], []
    with Progress.of(progress, batches) as shown:
        for x, y in batches:
            x, y = to_device(x, y, device)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                enabled=amp_dtype is not None):
                if embed:
                    h = model.embed(x)
                    logits = model.head(h)
                    features.append(h.float().cpu())
                    logits_all.append(logits.float().cpu())
                else:
                    logits = model(x)
            preds.append(logits.argmax(1).cpu())
            labels.append(y.cpu())
            shown.step()
    out = (torch.cat(preds), torch.cat(labels))
    if embed:
        out += (torch.cat(features), torch.cat(logits_all))
    return out


def cpu_state(state):
    """A state dict with every tensor on the CPU: a model trained on a GPU loads anywhere. One
    already on the CPU is returned as it is (its file keeps the same bytes)."""
    if all(not isinstance(v, torch.Tensor) or v.device.type == "cpu" for v in state.values()):
        return state
    moved = type(state)((key, value.detach().cpu() if isinstance(value, torch.Tensor) else value)
                        for key, value in state.items())
    if hasattr(state, "_metadata"):   # state_dict()'s version record, which loading reads
        moved._metadata = state._metadata
    return moved
