"""The training engine: one loop for every model, resident tensors or a DataLoader alike.

A "batches" argument is any iterable of (images, labels); fit() calls `train_batches(epoch)`
for a fresh pass each epoch. Mixed precision: autocast to `amp_dtype` (None = fp32), with a
GradScaler for fp16. channels_last memory layout on CUDA and CPU, where oneDNN and cuDNN
convolutions prefer it (benchmarks/epoch_speed.py compares).
"""
import math
import time

import torch
import torch.nn.functional as F

from . import distributed
from .checkpoints import (
    StateWriter,
    get_rng_state,
    load_training_state,
    set_rng_state,
    state_problem,
    tidy_checkpoints,
)
from .common import StageError
from .inference import to_device
from .params import OPTIMIZERS
from .progress import Progress


def make_optimizer(name, groups, lr, momentum=0.9, weight_decay=0.0):
    """`groups`: parameters, or a list of {"params": ..., "lr": ...} (per-group learning rates).

    Uses torch's fused kernel (one pass over every tensor per step, instead of several small
    kernels per tensor) when all parameters are floating-point tensors on a CPU or CUDA device;
    elsewhere (MPS, XLA, ...) torch's default implementation."""
    if name not in OPTIMIZERS:
        raise ValueError(f"unknown optimizer {name!r}")
    groups = list(groups)
    if groups and isinstance(groups[0], dict):   # materialise generators: read twice below
        groups = [{**g, "params": list(g["params"])} for g in groups]
        params = [p for g in groups for p in g["params"]]
    else:
        params = groups
    fused = bool(params) and all(p.device.type in ("cpu", "cuda") and p.is_floating_point()
                                 for p in params)
    extra = {"fused": True} if fused else {}
    if name == "sgd":
        return torch.optim.SGD(groups, lr=lr, momentum=momentum, weight_decay=weight_decay,
                               **extra)
    if name == "adam":
        return torch.optim.Adam(groups, lr=lr, weight_decay=weight_decay, **extra)
    return torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, **extra)


def make_scheduler(name, optimizer, epochs, step_size=7, gamma=0.1):
    if name == "none":
        return None
    if name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=step_size, gamma=gamma)
    if name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs)
    raise ValueError(f"unknown scheduler {name!r}")


def run_epoch(model, batches, device, amp_dtype, optimizer=None, scaler=None, progress=None,
              ctx=distributed.SINGLE):
    """One pass over `batches`; trains when an optimizer is given. Returns (mean loss, accuracy).
    `progress`: None (nothing shown), a description ("epoch 3/15 train") or a Progress.
    On several processes (`ctx`, a distributed.Context) `batches` is this rank's share and the
    loss and accuracy are those of every rank's samples together."""
    training = optimizer is not None
    model.train(training)
    # float64 sums (MPS has no float64); accumulated on the device, read once per epoch
    total_loss = torch.zeros((), device=device,
                             dtype=torch.float32 if device.type == "mps" else torch.float64)
    correct = torch.zeros((), device=device, dtype=torch.int64)
    count = 0
    with torch.set_grad_enabled(training), Progress.of(progress, batches) as shown:
        for x, y in batches:
            x, y = to_device(x, y, device)
            with torch.autocast(device.type, dtype=amp_dtype or torch.float32,
                                enabled=amp_dtype is not None):
                logits = model(x)
                loss = F.cross_entropy(logits, y)
            if training:
                optimizer.zero_grad(set_to_none=True)
                if scaler is not None:
                    scaler.scale(loss).backward()
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    optimizer.step()
            total_loss += loss.detach().to(total_loss.dtype) * len(y)
            correct += (logits.argmax(1) == y).sum()
            count += len(y)
            shown.step(total_loss, count)
    loss_sum, right = total_loss.item(), correct.item()
    if ctx.world > 1:   # sums over the ranks: each sample counted once
        loss_sum, right, count = ctx.sum(torch.tensor(
            [loss_sum, right, count], dtype=torch.float64, device=device)).tolist()
        count = int(count)
    if count == 0:
        raise StageError("no batches: the dataset split is empty")
    return loss_sum / count, right / count


def advice(optimizer, lr_key, amp_dtype, batches):
    """What to change after a loss that is not finite, naming the settings with their values:
    nothing when the inputs themselves are not finite (the first batch of `batches` is looked
    at: a lower learning rate cannot help then); else a lower learning rate, and fp32 when
    training ran in bf16 or fp16 (their range can overflow where fp32's does not)."""
    x, _ = next(iter(batches), (None, None))
    if isinstance(x, torch.Tensor) and x.is_floating_point() and not torch.isfinite(x).all():
        return ("the inputs themselves are not finite numbers: check the dataset, e.g. an image "
                "channel with no variation, normalised by a standard deviation of 0; no setting "
                "fixes that")
    lr = optimizer.param_groups[0].get("initial_lr", optimizer.param_groups[0]["lr"])
    text = f"try a lower '{lr_key}', now {lr:g}, e.g. {lr / 10:g}"
    if amp_dtype is not None:
        text += f", or 'precision: fp32', now {str(amp_dtype).removeprefix('torch.')}"
    return text


def fit(model, *, train_batches, val_batches, epochs, optimizer, device, amp_dtype,
        scheduler=None, on_epoch=None, lr_key="lr", checkpoint=None, fingerprint="",
        generators=(), ctx=distributed.SINGLE):
    """Train `epochs` epochs, validating after each. Returns (history, state): history has one
    dict per epoch (epoch, train_loss, train_accuracy, val_loss, val_accuracy, seconds); state
    is the model's state dict after the last epoch, the one model every number of the stage
    describes (the best epoch is only named, by summarize). A loss or accuracy that is not
    finite stops training with a StageError.

    With `checkpoint` (a path), the whole training state is saved there after every epoch but
    the last (then the stage writes the model, a fraction of the state's size: a disk with room
    for the model alone finishes the run)
    (checkpoints.training_state, written in the background: StateWriter) and a run that finds
    a checkpoint of the same `fingerprint` (params, code, data) goes on from its epoch: the
    epochs already done are not trained again, and the result is the same, to the byte, as a
    run that was never interrupted.
    `generators`: the torch.Generators that draw the batches (shuffling, augmentation,
    DataLoader worker seeds), saved and restored with the global RNGs. `on_epoch(record)` is
    called for every epoch, also for those restored from the checkpoint, so logs are rebuilt.

    On several processes (`ctx`, a distributed.Context): `train_batches(epoch)` and
    `val_batches()` give this rank's share, the model trains wrapped in DDP, the history holds
    the numbers of all ranks together, and only rank 0 reads and writes the checkpoint (it
    holds every rank's random state; rank 0 hands it out on resume), shows progress, and
    returns the state (None elsewhere)."""
    scaler = torch.amp.GradScaler(device.type) if amp_dtype == torch.float16 else None
    history = []
    net = ctx.wrap(model)   # what trains: DDP around the model on several processes
    state = None
    if checkpoint:
        if ctx.main:
            tidy_checkpoints(checkpoint)
        state = load_training_state(checkpoint, fingerprint) if ctx.main else None
        if state is not None and (problem := state_problem(state, epochs, ctx.world)):
            print(f"checkpoint {checkpoint} does not fit this run ({problem}); training from "
                  "the first epoch", flush=True)
            state = None
        state = ctx.share(state)
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        if scheduler is not None:
            scheduler.load_state_dict(state["scheduler"])
        if scaler is not None:
            scaler.load_state_dict(state["scaler"])
        set_rng_state(state["rng"][ctx.rank], generators)
        history = state["history"]
        if ctx.main:
            print(f"resuming after epoch {len(history)} of {epochs} from {checkpoint}",
                  flush=True)
        for record in history:
            if on_epoch is not None:
                on_epoch(record)
    passes = {}   # batches per pass last epoch: the progress's total (a generator has no len)
    with StateWriter() as writer:   # each epoch's state written while the next trains
        for epoch in range(len(history) + 1, epochs + 1):
            start = time.perf_counter()
            shown = Progress(f"epoch {epoch}/{epochs} train", passes.get("train"),
                             disable=None if ctx.main else True)
            train_loss, train_accuracy = run_epoch(net, train_batches(epoch), device, amp_dtype,
                                                   optimizer, scaler, progress=shown, ctx=ctx)
            passes["train"] = shown.n
            if not math.isfinite(train_loss):
                hint = advice(optimizer, lr_key, amp_dtype, train_batches(epoch))
                raise StageError(f"training diverged: the loss became {train_loss} in epoch "
                                 f"{epoch} ({hint})")
            shown = Progress(f"epoch {epoch}/{epochs} val", passes.get("val"),
                             disable=None if ctx.main else True)
            val_loss, val_accuracy = run_epoch(model, val_batches(), device, amp_dtype,
                                               progress=shown, ctx=ctx)
            passes["val"] = shown.n
            if not math.isfinite(val_loss):
                hint = advice(optimizer, lr_key, amp_dtype, val_batches())
                raise StageError(f"training diverged: the validation loss became {val_loss} in "
                                 f"epoch {epoch} ({hint})")
            if scheduler is not None:
                scheduler.step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            record = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_accuracy,
                      "val_loss": val_loss, "val_accuracy": val_accuracy,
                      "seconds": time.perf_counter() - start}
            history.append(record)
            if checkpoint and epoch < epochs:   # after the last, the stage writes the model:
                rng = ctx.gather(get_rng_state(generators))   # every rank takes part
                if ctx.main:
                    writer.save(checkpoint, fingerprint, model=model, optimizer=optimizer,
                                scheduler=scheduler, scaler=scaler, rng=rng, history=history)
            if on_epoch is not None:
                on_epoch(record)
    return history, model.state_dict() if ctx.main else None
