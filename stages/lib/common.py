"""What every stage shares: one-line errors, parameter checks, device, precision and seeding."""
import json
import os
import random
import re
import sys
import tempfile
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


def run(main):
    """Run a stage's main(argv); expected failures print `error: ...` and exit 1."""
    keep_freed_memory()
    try:
        main(sys.argv[1:])
    except StageError as error:
        print(f"error: {one_line(error)}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("error: interrupted", file=sys.stderr)
        sys.exit(130)


def load_yaml(path):
    try:
        data = yaml.safe_load(Path(path).read_text())
    except FileNotFoundError:
        raise StageError(f"{path} not found (run from the project root)") from None
    except yaml.YAMLError as error:
        raise StageError(f"{path} is not valid YAML: {one_line(error)}") from None
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
    """Write JSON atomically (temporary file in the same folder, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=2, sort_keys=False)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


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
