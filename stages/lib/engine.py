"""The training engine: one loop for every model, resident tensors or a DataLoader alike.

A "batches" argument is any iterable of (images, labels); fit() calls `train_batches(epoch)`
for a fresh pass each epoch. Mixed precision: autocast to `amp_dtype` (None = fp32), with a
GradScaler for fp16. channels_last memory layout on CUDA and CPU, where oneDNN and cuDNN
convolutions prefer it (benchmarks/epoch_speed.py compares).
"""
import math
import platform
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from . import cpu_layers, distributed, models
from .common import StageError, private_dir
from .files import load_error, load_torch, torch_load
from .params import OPTIMIZERS


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


def cpu_name():
    """The CPU model ("model name" in /proc/cpuinfo on Linux), else what platform knows."""
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def precision_name(amp_dtype):
    """"bfloat16", "float16" or "float32" (amp_dtype None: no autocast)."""
    return str(amp_dtype or torch.float32).removeprefix("torch.")


def run_info(device, amp_dtype, why=None):
    """How a stage ran, for models/*.run.json and the report header; `why`: why that
    precision (runtime.precision_choice)."""
    return {"device": str(device), "precision": precision_name(amp_dtype),
            "precision_reason": why,
            "torch": torch.__version__, "python": platform.python_version(),
            "cpu": cpu_name(), "cpu_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(device) if device.type == "cuda" else None}


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


def prepare(model, device):
    """Move the model to `device` in the memory layout the engine uses there, and on a CPU swap
    in the CPU-fast layers (cpu_layers.convert_for_cpu: a cheaper dropout mask, and a weight
    gradient by forward convolution for AlexNet's small-map convolutions under bf16).

    models.py keeps the plain nn layers the practical describes; device-specific versions are
    swapped in here, at set-up, as torchvision's reference training scripts do with
    SyncBatchNorm.convert_sync_batchnorm(model). The swap keeps every Parameter (state_dict and
    optimizers unchanged). It is done for every CPU model, fp32 included: the cheaper dropout
    mask helps in every precision, and SmallMapConv2d is nn.Conv2d by itself wherever its trick
    does not apply (fp32, no_grad, frozen weights)."""
    model = model.to(device)
    if device.type in ("cuda", "cpu"):
        model = model.to(memory_format=torch.channels_last)
    if device.type == "cpu":
        model = cpu_layers.convert_for_cpu(model)
    return model


def _to_device(x, y, device):
    x = x.to(device, non_blocking=True)
    if device.type in ("cuda", "cpu") and x.ndim == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    return x, y.to(device, non_blocking=True)


PROGRESS_ENV = "PROGRESS_INTERVAL"
# Seconds between progress lines when the output is a log, not a terminal (default 30; 0:
# after every batch; "off": no progress at all, bar included). An environment variable, not a
# params.yaml key: it changes no result, and DVC reruns a stage when one of its params changes.
DEFAULT_PROGRESS_INTERVAL = 30.0
# Seconds between reads of the running loss shown in a terminal's bar (each read waits for
# the device on CUDA; the bar itself reads nothing from the device).
BAR_LOSS_INTERVAL = 2.0


def progress_interval():
    """PROGRESS_ENV's seconds between progress lines in a log; None when it says "off"."""
    import os

    value = os.environ.get(PROGRESS_ENV, "").strip()
    if not value:
        return DEFAULT_PROGRESS_INTERVAL
    if value.lower() == "off":
        return None
    try:
        seconds = float(value)
    except ValueError:
        seconds = math.nan
    if not (0 <= seconds < math.inf):
        raise StageError(f"{PROGRESS_ENV}={value}: expected the seconds between progress lines "
                         "(0: every batch) or 'off'")
    return seconds


class Progress:
    """Progress through one pass over batches, shown while it runs: a tqdm bar (batches, rate,
    ETA, running loss) when the output is a terminal, else (a log: `dvc exp run --queue`, a
    pipe) a flushed line at most every `interval` seconds. It never changes what the pass
    computes, and reads nothing from the device but the running loss, every so often.

    desc: what the pass is ("epoch 3/15 train"); total: its number of batches, when known
    (run_epoch and predict take len(batches) where there is one). interval: seconds between
    lines in a log, by default from PROGRESS_ENV. file: the stream of the bar and the lines
    (default: the bar on stderr, as tqdm, the lines on stdout). disable: True shows nothing;
    None (tqdm's meaning) a bar only when `file` is a terminal, else lines; False a bar always.
    `n` is the number of batches done."""

    def __init__(self, desc, total=None, *, interval=None, file=None, disable=None):
        self.desc, self.total, self.file, self.disable, self.n = desc, total, file, disable, 0
        self.interval, self.bar = interval, None
        if disable is not True and interval is None:
            self.interval = progress_interval()
            if self.interval is None:   # PROGRESS_ENV=off
                self.disable = True

    @classmethod
    def of(cls, progress, batches):
        """`progress` (None: nothing shown, a string: its description, or a Progress) as a
        Progress, its total taken from len(batches) when it has none."""
        if not isinstance(progress, Progress):
            progress = cls("", disable=True) if progress is None else cls(progress)
        if progress.total is None and progress.disable is not True:
            try:
                progress.total = len(batches)
            except TypeError:   # a generator: the number of batches is not known
                pass
        return progress

    def __enter__(self):
        self.start = self.shown = time.monotonic()
        if self.disable is not True:
            from tqdm import tqdm

            bar = tqdm(total=self.total, desc=self.desc, unit="batch", leave=False,
                       file=self.file, disable=self.disable, dynamic_ncols=True)
            self.bar = None if bar.disable else bar
        return self

    def step(self, loss_sum=None, count=0):
        """One batch done; `loss_sum` (a tensor) over `count` samples is the running loss."""
        self.n += 1
        if self.disable is True:
            return
        now = time.monotonic()
        if self.bar is not None:
            if loss_sum is not None and now - self.shown >= BAR_LOSS_INTERVAL:
                self.shown = now
                self.bar.set_postfix_str(f"loss {loss_sum.item() / count:.4f}")  # redraws now
            self.bar.update()
        elif self.interval is not None and now - self.shown >= self.interval:
            self.shown = now
            print(self.line(now, loss_sum, count), file=self.file, flush=True)

    def line(self, now, loss_sum=None, count=0):
        """"  epoch 3/15 train: batch 120/782, 4.10 batch/s, 2:41 left, loss 1.2345" (indented:
        the per-epoch summary lines stay the only ones that start with "epoch")."""
        from tqdm import tqdm

        elapsed = now - self.start
        rate = self.n / elapsed if elapsed > 0 else 0.0
        parts = [f"batch {self.n}" + (f"/{self.total}" if self.total else ""),
                 f"{rate:.2f} batch/s"]
        if self.total and rate > 0:
            parts.append(f"{tqdm.format_interval(max(self.total - self.n, 0) / rate)} left")
        else:
            parts.append(f"{tqdm.format_interval(elapsed)} elapsed")
        if loss_sum is not None and count:
            parts.append(f"loss {loss_sum.item() / count:.4f}")
        return f"  {self.desc}: {', '.join(parts)}"

    def __exit__(self, *exc):
        if self.bar is not None:
            self.bar.close()
        return False


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
            x, y = _to_device(x, y, device)
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


def fit(model, *, train_batches, val_batches, epochs, optimizer, device, amp_dtype,
        scheduler=None, on_epoch=None, lr_key="lr", checkpoint=None, fingerprint="",
        generators=(), ctx=distributed.SINGLE):
    """Train `epochs` epochs, validating after each. Returns (history, state): history has one
    dict per epoch (epoch, train_loss, train_accuracy, val_loss, val_accuracy, seconds); state
    is the model's state dict after the last epoch, the one model every number of the stage
    describes (the best epoch is only named, by summarize). A loss or accuracy that is not
    finite stops training with a StageError.

    With `checkpoint` (a path), the whole training state is saved there after every epoch
    (see save_training_state) and a run that finds a checkpoint of the same `fingerprint`
    (params, code, data) goes on from its epoch: the epochs already done are not trained
    again, and the result is the same, to the byte, as a run that was never interrupted.
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
    for epoch in range(len(history) + 1, epochs + 1):
        start = time.perf_counter()
        shown = Progress(f"epoch {epoch}/{epochs} train", passes.get("train"),
                         disable=None if ctx.main else True)
        train_loss, train_accuracy = run_epoch(net, train_batches(epoch), device, amp_dtype,
                                               optimizer, scaler, progress=shown, ctx=ctx)
        passes["train"] = shown.n
        if not math.isfinite(train_loss):
            raise StageError(f"training diverged: the loss became {train_loss} in epoch {epoch} "
                             f"(try a lower '{lr_key}')")
        shown = Progress(f"epoch {epoch}/{epochs} val", passes.get("val"),
                         disable=None if ctx.main else True)
        val_loss, val_accuracy = run_epoch(model, val_batches(), device, amp_dtype,
                                           progress=shown, ctx=ctx)
        passes["val"] = shown.n
        if not math.isfinite(val_loss):
            raise StageError(f"training diverged: the validation loss became {val_loss} in "
                             f"epoch {epoch} (try a lower '{lr_key}')")
        if scheduler is not None:
            scheduler.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        record = {"epoch": epoch, "train_loss": train_loss, "train_accuracy": train_accuracy,
                  "val_loss": val_loss, "val_accuracy": val_accuracy,
                  "seconds": time.perf_counter() - start}
        history.append(record)
        if checkpoint:
            rng = ctx.gather(get_rng_state(generators))   # every rank takes part
            if ctx.main:
                save_training_state(checkpoint, fingerprint, model=model, optimizer=optimizer,
                                    scheduler=scheduler, scaler=scaler, rng=rng,
                                    history=history)
        if on_epoch is not None:
            on_epoch(record)
    return history, model.state_dict() if ctx.main else None


# ---------------------------------------------------------------- checkpoints

def fingerprint_of(*parts):
    """A short SHA-256 over `parts` (params dicts, file and folder paths whose content counts):
    what a checkpoint must match to be resumed. Files count by their content, a folder by the
    names and contents of all its files (an image replaced by another of the same size during
    an interruption is seen); digests are remembered by size and modification time
    (DigestCache) so that thousands of images are hashed once."""
    import hashlib
    import json

    cache = DigestCache()
    h = hashlib.sha256()
    for part in parts:
        if isinstance(part, Path):
            if part.is_dir():
                for f in sorted(p for p in part.rglob("*") if p.is_file()):
                    h.update(f"{f.relative_to(part)}\0{cache.digest(f)}\0".encode())
            elif part.is_file():
                h.update(cache.digest(part).encode())
            else:
                h.update(f"missing {part}".encode())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\1")
    cache.save()
    return h.hexdigest()[:16]


class DigestCache:
    """SHA-256 of files, remembered in .dvc/tmp/digests/digests.json by path, size and
    modification time (as DVC's own state database does): a file is read again only when one
    of them changed."""

    def __init__(self):
        import json

        self.path = private_dir("digests") / "digests.json"
        try:
            self.known = json.loads(self.path.read_text())
            if not isinstance(self.known, dict):
                self.known = {}
        except (OSError, ValueError):
            self.known = {}
        self.changed = False

    def digest(self, path):
        import hashlib

        stat = path.stat()
        key, stamp = str(path.resolve()), [stat.st_size, stat.st_mtime_ns]
        entry = self.known.get(key)
        if isinstance(entry, list) and entry[:2] == stamp and len(entry) == 3:
            return entry[2]
        with open(path, "rb") as f:
            value = hashlib.file_digest(f, "sha256").hexdigest()
        self.known[key], self.changed = [*stamp, value], True
        return value

    def save(self):
        import json

        from .files import write_atomic

        if self.changed:
            write_atomic(self.path, json.dumps(self.known).encode())


def code_files():
    """The pipeline's own source files: a checkpoint written by other code is not resumed."""
    root = Path(__file__).resolve().parents[1]
    return sorted(root.rglob("*.py"))


def save_training_state(path, fingerprint, *, model, optimizer, scheduler, scaler, rng,
                        history):
    """Everything the next epoch depends on, written atomically (a kill during the save leaves
    the previous checkpoint as it was). Loadable with weights_only=True: tensors, numbers,
    strings, lists and dicts only. `rng`: every rank's get_rng_state(), in rank order."""
    from .files import save_torch

    save_torch({"fingerprint": fingerprint, "epoch": len(history),
                "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict() if scheduler is not None else None,
                "scaler": scaler.state_dict() if scaler is not None else None,
                "rng": rng, "history": history}, path)


CHECKPOINTS_KEPT = 2   # unfinished runs of one stage whose state is kept, to resume them


def checkpoint_path(name, fingerprint):
    """Where a training stage keeps its state after each epoch: a file named for the stage and
    its fingerprint in .dvc/tmp/checkpoints/ (common.private_dir), outside DVC's outputs, so
    that DVC can restore the stage from its run-cache. A run killed with one set of params and
    a run with another keep separate files: going back to the first resumes it."""
    return private_dir("checkpoints") / f"{name}.{fingerprint}.pt"


def tidy_checkpoints(path):
    """Before training into checkpoint `path`: remove what killed runs of the same stage left
    in its folder (the hidden temporary files of an interrupted save; the stage lock says no
    other run of this stage is alive) and the states of older unfinished runs of other params,
    code or data beyond the CHECKPOINTS_KEPT newest, each removal said in one line."""
    path = Path(path)
    name = path.name.split(".")[0]
    for leftover in path.parent.glob(f".{name}.*"):
        leftover.unlink(missing_ok=True)
    others = sorted((p for p in path.parent.glob(f"{name}.*.pt") if p != path),
                    key=lambda p: p.stat().st_mtime, reverse=True)
    for old in others[CHECKPOINTS_KEPT:]:
        old.unlink(missing_ok=True)
        print(f"removed the training state of an older unfinished run: {old}", flush=True)


def finish_checkpoint(path):
    """The stage finished: its training state is no longer needed (the next run of the same
    params is DVC's to restore from the run-cache; `dvc repro -f` trains anew)."""
    Path(path).unlink(missing_ok=True)


def load_training_state(path, fingerprint):
    """The saved state at `path` when it belongs to an unfinished run with the same
    fingerprint, else None (with one line saying why it is not used)."""
    path = Path(path)
    if not path.is_file():
        return None
    try:
        state = torch_load(path)
    except Exception as error:   # torch.load raises many types for a damaged file
        print(f"checkpoint {path} is unreadable ({load_error(error)}); training from the first "
              "epoch", flush=True)
        return None
    if not isinstance(state, dict) or state.get("fingerprint") != fingerprint:
        print(f"checkpoint {path} is from other params, code or data; discarded, training from "
              "the first epoch", flush=True)
        return None
    return state


STATE_KEYS = ("model", "optimizer", "scheduler", "scaler", "rng", "history")
RECORD_KEYS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "seconds")


def state_problem(state, epochs, world):
    """Why a saved training state cannot go on into a run of `epochs` epochs on `world`
    processes, or None: its keys, its history (1 .. epochs-1 records, numbered 1, 2, ...),
    one random state per process."""
    missing = [k for k in STATE_KEYS if k not in state]
    if missing:
        return f"it lacks {', '.join(missing)}"
    history = state["history"]
    if not isinstance(history, list) or not 0 < len(history) < epochs:
        return f"its history does not fit a run of {epochs} epochs"
    for number, record in enumerate(history, 1):
        if not isinstance(record, dict) or any(k not in record for k in RECORD_KEYS) \
                or record["epoch"] != number:
            return f"its history's record {number} is malformed"
    processes = len(state["rng"]) if isinstance(state["rng"], list) else 0
    if processes != world:
        return f"it holds the random state of {processes} processes, not {world}"
    return None


def get_rng_state(generators=()):
    """Every random state training draws from: torch's global (CPU and each CUDA device),
    `generators`, numpy's and Python's, as tensors and plain lists."""
    import random

    import numpy as np

    kind, keys, pos, has_gauss, cached = np.random.get_state()
    python = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "generators": [g.get_state() for g in generators],
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": [python[0], list(python[1]), python[2]]}


def set_rng_state(state, generators=()):
    import random

    import numpy as np

    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if len(state["generators"]) != len(generators):
        raise StageError("checkpoint does not match this stage's random generators")
    for generator, saved in zip(generators, state["generators"]):
        generator.set_state(saved)
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"],
                         n["has_gauss"], n["cached"]))
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))


@torch.no_grad()
def predict(model, batches, device, amp_dtype, embed=False, progress="predict"):
    """(predicted classes, true labels) over `batches`; with embed=True also the intermediate
    representation and the logits, as float32 CPU tensors. `progress`: as in run_epoch."""
    model.eval()
    preds, labels, features, logits_all = [], [], [], []
    with Progress.of(progress, batches) as shown:
        for x, y in batches:
            x, y = _to_device(x, y, device)
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


def summarize(history):
    """The numbers a training history comes to. `accuracy` is the last epoch's validation
    accuracy (what the practical reports), `best_accuracy` and `best_epoch` the best epoch's
    (the earliest on ties): the keys of every trained model's metrics file."""
    best = max(history, key=lambda r: (r["val_accuracy"], -r["epoch"]))
    last = history[-1]
    min_val_loss = min(history, key=lambda r: (r["val_loss"], r["epoch"]))
    return {"accuracy": last["val_accuracy"], "best_accuracy": best["val_accuracy"],
            "best_epoch": best["epoch"], "final_val_loss": last["val_loss"],
            "final_train_accuracy": last["train_accuracy"], "final_train_loss": last["train_loss"],
            "min_val_loss": min_val_loss["val_loss"], "min_val_loss_epoch": min_val_loss["epoch"],
            "overfitting_from_epoch": overfitting_epoch(history)}


HEADLINE = ("accuracy", "best_accuracy", "best_epoch")   # metrics/**.json of a trained model


def overfitting_epoch(history):
    """The epoch after which validation loss stops improving while training loss keeps
    falling: the epoch of the minimum val loss, provided it is not the last epoch and the
    training loss at the end is below its value then; None otherwise (no sign of overfitting)."""
    best = min(range(len(history)), key=lambda i: (history[i]["val_loss"], i))
    if best == len(history) - 1:
        return None
    later = history[best + 1:]
    if later[-1]["train_loss"] < history[best]["train_loss"]:
        return history[best]["epoch"]
    return None
