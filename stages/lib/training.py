"""What train@<model> and transfer@<strategy> share around the engine's loop, in three calls:

    run = training.start(...)     # one process, or torchrun's workers; seeds, device
    ...                           # the stage builds its data, model and optimizer
    fitted = training.fit(run, ...)       # the epochs, resumable, logged with dvclive
    training.finish(run, fitted, ...)     # rank 0 evaluates the last epoch's model and writes

Only rank 0 writes (distributed.py); every rank takes part in training and leaves together."""
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import evaluation, live, plots, png
from .core import checkpoints, distributed, inference, runtime
from .core.common import StageError, writes
from .core.files import check_writable, save_torch, write_json


@dataclass
class Run:
    """A training stage once started: what it is called (its output names, its checkpoint's),
    its shared params and distributed settings, its processes, device and precision, and the
    machine part of its run record."""
    label: str               # for people: simple_cnn, transfer@scratch
    checkpoint_name: str     # simple_cnn, transfer-scratch
    shared: object           # params.Shared
    dist: object             # params.Distributed
    ctx: distributed.Context
    device: torch.device
    amp_dtype: torch.dtype | None
    env: dict                # runtime.run_info + the processes + the distributed settings


@dataclass
class Fitted:
    history: list            # engine.fit's, one record per epoch
    state: dict | None       # the last epoch's state dict (rank 0)
    seconds: float
    checkpoint: Path
    summary: dict            # evaluation.summarize(history)


def start(settings, shared, *, label, checkpoint_name, batch_size, batch_key, module, argv,
          outputs):
    """Check that the `outputs` folders can be written (before any work), then start: a Run,
    or None where this process launched the workers and they are done (the stage has nothing
    left to do). `batch_size` (from `batch_key`) is the global batch; `module` and `argv` the
    stage's command, which the workers run again."""
    if writes():
        check_writable(*outputs)
    dist = distributed.settings(settings)
    ctx = distributed.start(dist, shared.device, batch_size, batch_key, module, argv)
    if ctx is None:
        return None
    device, amp_dtype = runtime.setup(shared)
    device = distributed.device_of(ctx, device)
    env = runtime.run_info(device, amp_dtype, runtime.precision_choice(device,
                                                                         shared.precision)[1]) \
        | ctx.describe(device) | {"distributed": asdict(dist)}
    return Run(label, checkpoint_name, shared, dist, ctx, device, amp_dtype, env)


def announce(run, what):
    """Rank 0 prints what trains, where and how: "<what>, <device>, <precision>[, N processes]"."""
    if run.ctx.main:
        print(f"{run.label}: {what}, {run.env['device']}, {run.env['precision']}"
              + (f", {run.ctx.world} processes ({run.ctx.backend})" if run.ctx.world > 1
                 else ""), flush=True)


def existing(path):
    """`path`, or its nearest ancestor that exists (what a file system question can ask)."""
    path = Path(path).absolute()
    while not path.exists():
        path = path.parent
    return path


def check_room(model, model_path, checkpoint, cache=Path(".dvc/cache")):
    """Stop before training when a file system lacks room for what the run will write: the
    model, DVC's copy of it in its cache, and the training state kept after each epoch (about
    three times the weights with an optimizer's moments, the new one written beside the old):
    a full disk is named now, not after hours of training."""
    weights = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    needs = [(model_path, weights, "the model"), (checkpoint, 6 * weights, "the training state")]
    if Path(cache).is_dir():
        needs.append((cache / "x", weights, "DVC's copy of the model"))
    by_device = {}
    for path, size, what in needs:
        folder = existing(Path(path).parent)
        device = by_device.setdefault(folder.stat().st_dev, [folder, 0, []])
        device[1] += size
        device[2].append(what)
    for folder, size, what in by_device.values():
        free = shutil.disk_usage(folder).free
        if size > free:
            raise StageError(f"no space left on device for {', '.join(what)} (needed about "
                             f"{size / 2**20:.1f} MiB, free {free / 2**20:.1f} MiB in {folder}): "
                             "free some space, then run the stage again")


def fit(run, model, optimizer, *, train_batches, val_batches, epochs, lr_key, record, inputs,
        generators, live_dir, model_path, scheduler=None):
    """engine.fit through dvclive (live.fit), resumed from the checkpoint whose fingerprint
    covers `record` (the params), the device, precision, torch, the processes, the `inputs`
    (data files and folders) and the pipeline's code. First, check_room for `model_path`."""
    fingerprint = checkpoints.fingerprint_of(
        run.checkpoint_name, record, str(run.device), str(run.amp_dtype), torch.__version__,
        run.ctx.world, asdict(run.dist), *inputs, *checkpoints.code_files())
    checkpoint = checkpoints.checkpoint_path(run.checkpoint_name, fingerprint)
    if run.ctx.main:
        check_room(model, model_path, checkpoint)
    history, state, seconds = live.fit(
        live_dir, ctx=run.ctx, model=model, train_batches=train_batches,
        val_batches=val_batches, epochs=epochs, optimizer=optimizer, scheduler=scheduler,
        device=run.device, amp_dtype=run.amp_dtype, lr_key=lr_key, checkpoint=checkpoint,
        fingerprint=fingerprint, generators=generators)
    return Fitted(history, state, seconds, checkpoint, evaluation.summarize(history))


def finish(run, fitted, model, eval_batches, *, title, model_path, about, record, out,
           metrics_path, classes, details):
    """Rank 0: the last epoch's model evaluated on `eval_batches` (every validation image),
    its curves, the model file (`about` + epoch + weights), the run record (`run.env`, the
    params `record`, the times), the metrics and evaluation (`details` beside them); then, on
    every rank, the checkpoint removed and the processes joined."""
    if run.ctx.main:
        preds, labels = inference.predict(model, eval_batches, run.device, run.amp_dtype)
        png.save(plots.curves_figure(fitted.history, title), out / "curves.png")
        save_torch({**about, "epoch": len(fitted.history),
                    "state_dict": inference.cpu_state(fitted.state)}, model_path)
        write_json(Path(model_path).with_suffix(".run.json"),
                   {**run.env, "params": record, "seconds": round(fitted.seconds, 1),
                    "epoch_seconds": [round(r["seconds"], 1) for r in fitted.history]})
        plots.write_evaluation(out, metrics_path, labels.numpy(), preds.numpy(), classes,
                               f"{title}, epoch {len(fitted.history)} (the last)",
                               best=fitted.summary, details=details)
        checkpoints.finish_checkpoint(fitted.checkpoint)
    run.ctx.close()
    if run.ctx.main:
        s = fitted.summary
        print(f"{run.label}: val accuracy {fitted.history[-1]['val_accuracy']:.4f} (last "
              f"epoch), best {s['best_accuracy']:.4f} at epoch {s['best_epoch']}, "
              f"{fitted.seconds:.0f} s", flush=True)
