"""A training stage's state between epochs: its fingerprint (params, code, data), where it is
kept (.dvc/tmp/checkpoints/, outside DVC's outputs), saving and loading it atomically, and
every random state training draws from, so that a resumed run ends with the same bytes as an
uninterrupted one."""
import hashlib
import json
import random
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

from .common import StageError, private_dir
from .files import load_error, save_torch, torch_load, write_atomic


def fingerprint_of(*parts):
    """A short SHA-256 over `parts` (params dicts, file and folder paths whose content counts):
    what a checkpoint must match to be resumed. Files count by their content, a folder by the
    names and contents of all its files (an image replaced by another of the same size during
    an interruption is seen); digests are remembered by size and modification time
    (DigestCache) so that thousands of images are hashed once."""
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
        self.path = private_dir("digests") / "digests.json"
        try:
            self.known = json.loads(self.path.read_text())
            if not isinstance(self.known, dict):
                self.known = {}
        except (OSError, ValueError):
            self.known = {}
        self.changed = False

    def digest(self, path):
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

        if self.changed:
            write_atomic(self.path, json.dumps(self.known).encode())


def code_files():
    """The pipeline's own source files (every .py under stages/: the stage modules and the
    library): a checkpoint written by other code is not resumed."""
    stages = Path(__file__).resolve().parents[2]   # stages/lib/core/checkpoints.py
    return sorted(stages.rglob("*.py"))


def training_state(fingerprint, *, model, optimizer, scheduler, scaler, rng, history):
    """Everything the next epoch depends on, as a copy on the CPU that training can go on
    changing the model and optimizer under (tensors, numbers, strings, lists and dicts only:
    loadable with weights_only=True). `rng`: every rank's get_rng_state(), in rank order."""
    return _cpu_copy({"fingerprint": fingerprint, "epoch": len(history),
                      "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                      "scheduler": scheduler.state_dict() if scheduler is not None else None,
                      "scaler": scaler.state_dict() if scaler is not None else None,
                      "rng": rng, "history": history})


def _cpu_copy(value):
    if isinstance(value, torch.Tensor):
        return value.detach().to("cpu", copy=True)
    if isinstance(value, dict):
        copied = {k: _cpu_copy(v) for k, v in value.items()}
        if hasattr(value, "_metadata"):   # state_dict()'s version record, which loading reads
            copied = OrderedDict(copied)
            copied._metadata = value._metadata
        return copied
    if isinstance(value, (list, tuple)):
        return type(value)(_cpu_copy(v) for v in value)
    return value


class StateWriter:
    """Writes training states in the background: save() takes the copy (training_state) and
    returns while a thread of its own writes it (files.save_torch: atomically, so a kill
    during the write leaves the previous state), so the next epoch does not wait for the disk.
    A save waits for the one before; wait() for the last, and raises what a write raised (a
    full disk is one line, as in the foreground). Use it as a context manager: leaving it
    waits for the last write."""

    def __init__(self):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self.pending = None

    def save(self, path, fingerprint, **parts):
        self.wait()
        self.pending = self.pool.submit(save_torch, training_state(fingerprint, **parts), path)

    def wait(self):
        pending, self.pending = self.pending, None
        if pending is not None:
            pending.result()

    def __enter__(self):
        return self

    def __exit__(self, kind, error, trace):
        """Wait for the last write, also when training stops on an error or SIGTERM (the
        state of the last finished epoch is then on disk, to resume from); a write's own
        error is raised only when nothing else is already on its way."""
        try:
            self.wait()
        except Exception:
            if kind is None:
                raise
        finally:
            self.pool.shutdown()


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
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    python = random.getstate()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "generators": [g.get_state() for g in generators],
            "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos),
                      "has_gauss": int(has_gauss), "cached": float(cached)},
            "python": [python[0], list(python[1]), python[2]]}


def set_rng_state(state, generators=()):

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
