"""What every stage shares: one-line errors, parameter checks, device, precision and seeding."""
import errno
import hashlib
import json
import math
import os
import random
import re
import signal
import sys
import tempfile
import time
from pathlib import Path

import yaml


class StageError(Exception):
    """An expected failure (bad input, missing file, bad params): one line, exit status 1."""


def one_line(error):
    """The message of a StageError as one line, also when a DataLoader worker re-raised it
    (PyTorch then prepends "Caught StageError in DataLoader worker ..." and a traceback)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    if not lines:
        return type(error).__name__
    last = re.sub(r"^[\w.]*StageError: ", "", lines[-1])
    return last if len(lines) > 1 else lines[0]


def keep_freed_memory():
    """Ask glibc's malloc to keep freed memory for reuse instead of handing large blocks back to
    the OS after every training step (the page faults that follow cost ~1/3 of a CPU epoch of
    the Simple CNN here; see benchmarks/). Same as MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_;
    does nothing where libc is not glibc."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass


class Terminated(BaseException):
    """SIGTERM (or the death of the process that started the stage) arrived: unwind, so that
    every `finally` removes its temporary files, then exit 143."""


def _terminate(signum, frame):
    raise Terminated()


def _watch_parents(depth=2):
    """End this process (SIGTERM to itself) when one of its nearest `depth` ancestors dies,
    e.g. `dvc` killed with SIGKILL while its `sh -c` child still waits for us: an orphaned stage
    would otherwise go on writing outputs beside the next `dvc repro`. The direct parent is
    also covered by Linux's PR_SET_PDEATHSIG; the watcher thread covers the ones above it
    and other systems (pidfd where Linux has it, else polling)."""
    import threading

    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    pids, pid = [], os.getppid()
    for _ in range(depth):
        if pid <= 1:
            break
        pids.append(pid)
        pid = _parent_of(pid)
        if pid is None:
            break
    if not pids:
        return

    def watch():
        handles = []
        for ancestor in pids:
            try:
                handles.append(os.pidfd_open(ancestor))
            except (AttributeError, OSError):
                handles = None
                break
        if handles is not None:
            import select

            poller = select.poll()
            for handle in handles:
                poller.register(handle, select.POLLIN)
            poller.poll()   # readable once one of them has exited
        else:
            first = os.getppid()
            while os.getppid() == first and all(_alive(p) for p in pids):
                time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _parent_of(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def stage_lock(name):
    """Hold an exclusive lock named after the stage for as long as this process lives, so a
    second instance of the same stage in the same workspace (an orphan of a killed `dvc`, or
    two terminals) stops at once instead of writing the same outputs. The lock is an flock on
    .dvc/tmp/stage-locks/<name>.lock: the kernel drops it when the process ends, however."""
    import fcntl

    folder = Path(".dvc/tmp/stage-locks") if Path(".dvc").is_dir() else \
        Path(tempfile.gettempdir()) / "stage-locks" / hashlib.sha256(
            str(Path.cwd()).encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    handle = open(folder / f"{name.replace('/', '_')}.lock", "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "unknown"
        handle.close()
        raise StageError(f"another {name} is running in this workspace (pid {holder}); wait "
                         "for it to finish or stop it, then run again") from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"{os.getpid()}\n")
    handle.flush()
    return handle   # keep a reference: closing it releases the lock


def stage_name(argv):
    """`train@alexnet` for `python -m stages.train alexnet cifar10`: the module's name and its
    first argument, as dvc.yaml names the stage."""
    module = Path(sys.argv[0]).stem
    return f"{module}@{argv[0]}" if argv else module


def run(main):
    """Run a stage's main(argv); expected failures print `error: ...` and exit 1. The stage
    holds its lock, dies with the process that started it, and unwinds on SIGTERM."""
    keep_freed_memory()
    argv = sys.argv[1:]
    try:
        signal.signal(signal.SIGTERM, _terminate)
        _watch_parents()
        lock = stage_lock(stage_name(argv))  # noqa: F841 (held until exit)
        main(argv)
    except StageError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)
    except Terminated:
        print("error: terminated", file=sys.stderr)
        sys.exit(143)


class _UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that refuses a key given twice in one mapping (PyYAML keeps the last one
    silently; DVC refuses the file, so the stages must not read it differently)."""

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if key in seen:
                mark = key_node.start_mark
                raise StageError(f"{Path(mark.name).name or 'params.yaml'}:{mark.line + 1}:"
                                 f"{mark.column + 1}: duplicate key {key!r}")
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_yaml(path):
    try:
        with open(path) as f:
            data = yaml.load(f, Loader=_UniqueKeyLoader)  # noqa: S506 (a SafeLoader)
    except FileNotFoundError:
        raise StageError(f"{path} not found (run from the project root)") from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None) or getattr(error, "context_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(error, "problem", None) or one_line(error)
        raise StageError(f"{where}: not valid YAML: {problem}") from None
    if not isinstance(data, dict):
        raise StageError(f"{path} must be a mapping of keys to values")
    return data


_KIND_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string",
               list: "a list", dict: "a mapping", object: "a value"}


def param(params, key, kind, *, choices=None, minimum=None, above=None, maximum=None,
          optional=False):
    """The value at dotted `key` in `params`, checked; a StageError names the key and what is
    allowed. `optional` lets the value be null (None) but the key must still be present."""
    node = params
    for i, part in enumerate(key.split(".")):
        if not isinstance(node, dict) or part not in node:
            raise StageError(f"params.yaml: missing key '{key}'"
                             + (f" (no '{part}' under '{'.'.join(key.split('.')[:i])}')" if i else ""))
        node = node[part]
    value = shown = node
    if value is None and optional:
        return None
    ok = isinstance(value, kind) and not (kind in (int, float) and isinstance(value, bool))
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        raise StageError(f"params.yaml: '{key}' must be {_KIND_NAMES[kind]}"
                         f"{' or null' if optional else ''}, got {value!r}")
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


def write_json(path, data):
    """Write JSON atomically (temporary file in the same folder, then rename), readable by all
    (0644 less the umask, like any file the user writes). NaN and infinity are refused: they
    are not JSON, and a metric that is not finite is an error to report, not a value."""
    path = Path(path)
    try:
        text = json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n"
    except ValueError:
        raise StageError(f"{path}: a value is not a finite number (NaN or infinity): the "
                         "training probably diverged; try a lower learning rate") from None
    write_atomic(path, text.encode())


def write_atomic(path, payload):
    """Write bytes `payload` to `path` through a temporary file beside it and a rename, so a
    crash or a full disk never leaves a partial file; mode 0644 less the umask."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.fchmod(fd, 0o666 & ~_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as error:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(error, OSError) and error.errno in (28, 122):   # ENOSPC, EDQUOT
            raise StageError(f"no space left on device while writing {path}") from None
        raise


def save_torch(obj, path):
    """torch.save `obj` to `path` atomically (a kill or a full disk leaves the previous file, or
    none), with one line when the disk is full."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(obj, buffer)
    write_atomic(path, buffer.getbuffer())


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def check_writable(*folders):
    """Stop before any work when an output folder cannot be created or written (rather than
    after hours of training, at the first save). Creates nothing: a folder that does not exist
    yet is checked through the nearest one above it that does."""
    for folder in map(Path, folders):
        probe_in = folder
        while not probe_in.exists() and probe_in != probe_in.parent:
            probe_in = probe_in.parent
        try:
            if not probe_in.is_dir():
                raise NotADirectoryError(errno.ENOTDIR, f"{probe_in} is not a folder")
            fd, probe = tempfile.mkstemp(prefix=".writable.", dir=probe_in)
            os.close(fd)
            os.unlink(probe)
        except OSError as error:
            raise StageError(f"cannot write to {folder}/: {error.strerror}") from None


def read_json(path):
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise StageError(f"{path} not found: run the stage that writes it first (dvc repro)") from None
    except json.JSONDecodeError as error:
        raise StageError(f"{path} is not valid JSON: {error}") from None


def pick_device(name):
    """`auto` picks CUDA, then MPS, then CPU; an explicit device must be available."""
    import torch

    available = {"cuda": torch.cuda.is_available(),
                 "mps": getattr(torch.backends, "mps", None) is not None
                 and torch.backends.mps.is_available(),
                 "cpu": True}
    if name == "auto":
        name = next(d for d in ("cuda", "mps", "cpu") if available[d])
    elif name not in available:
        raise StageError(f"params.yaml: 'device' must be one of auto, cuda, mps, cpu; got {name!r}")
    elif not available[name]:
        raise StageError(f"params.yaml: device '{name}' is not available on this machine "
                         "(use device: auto or cpu)")
    return torch.device(name)


def autocast_dtype(device, precision):
    """The autocast dtype for `precision` (auto|fp32|bf16|fp16) on `device`, None for fp32.
    auto: bf16 on CUDA cards that support it, else fp16; bf16 on CPUs with native bf16
    instructions (AVX512-BF16/AMX), where it was measured faster at the same accuracy;
    fp32 elsewhere (MPS, older CPUs)."""
    import torch

    if precision == "fp32":
        return None
    if precision == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        if device.type == "cpu" and torch.backends.mkldnn.is_available() \
                and torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return torch.bfloat16
        return None
    if precision == "fp16" and device.type == "cpu":
        raise StageError("params.yaml: precision fp16 is for GPUs; use bf16, fp32 or auto on CPU")
    return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision]


def seed_everything(seed):
    import numpy as np
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def engine_params(params):
    """The shared keys every training-like stage reads: seed, device, precision."""
    return {"seed": param(params, "seed", int, minimum=0),
            "device": param(params, "device", str, choices=("auto", "cuda", "mps", "cpu")),
            "precision": param(params, "precision", str, choices=("auto", "fp32", "bf16", "fp16"))}
