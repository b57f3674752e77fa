"""Where and how a stage computes: the device, the autocast precision, the seeds."""
import ctypes
import ctypes.util
import os
import platform
import random
import warnings

import numpy as np
import torch

from .common import StageError


def setup(shared):
    """Seed every generator and pick the device and autocast dtype for a params.Shared: the
    set-up every stage that runs a network starts with (and the only stages whose steps
    allocate the same large tensors again and again: keep_freed_memory). Returns (device,
    amp_dtype)."""
    keep_freed_memory()
    seed_everything(shared.seed)
    device = pick_device(shared.device)
    if device.type == "cuda":
        cuda_algorithms(shared.deterministic)
    return device, autocast_dtype(device, shared.precision)


def cuda_algorithms(deterministic):
    """deterministic: the same params give the same bytes on a GPU too: cuDNN's and cuBLAS's
    deterministic algorithms (cuBLAS reads CUBLAS_WORKSPACE_CONFIG when CUDA starts: set
    before any CUDA work), cudnn.benchmark off, torch's deterministic mode (warning, not
    failing, for the few ops that have no deterministic CUDA kernel). False: cudnn.benchmark
    picks the fastest algorithms for each shape, which may differ from run to run. CPUs are
    deterministic either way."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.backends.cudnn.deterministic = deterministic
    torch.backends.cudnn.benchmark = not deterministic
    torch.use_deterministic_algorithms(deterministic, warn_only=True)


_warned = False


def pick_device(name):
    """`auto` picks CUDA, then MPS, then CPU; an explicit device must be available. When an
    NVIDIA GPU is there but CUDA cannot be used (a driver too old for this torch, a CPU-only
    torch), `auto` says so in one warning line before it goes on without it."""
    global _warned
    cuda, why_not = cuda_usable()
    if not cuda and why_not and name == "auto" and not _warned:
        _warned = True   # once per process (a distributed launcher asks several times)
        print(f"warning: an NVIDIA GPU is present but CUDA cannot be used ({why_not}); "
              "going on without it", flush=True)
    available = {"cuda": cuda,
                 "mps": getattr(torch.backends, "mps", None) is not None
                 and torch.backends.mps.is_available(),
                 "cpu": True}
    if name == "auto":
        name = next(d for d in ("cuda", "mps", "cpu") if available[d])
    elif name not in available:
        raise StageError(f"params.yaml: 'device' must be one of auto, cuda, mps, cpu; got {name!r}")
    elif not available[name]:
        because = f": {why_not}" if name == "cuda" and why_not else ""
        raise StageError(f"params.yaml: device '{name}' is not available on this machine"
                         f"{because} (use device: auto or cpu)")
    return torch.device(name)


NVIDIA_PRESENT = ("/proc/driver/nvidia/version", "/dev/nvidia0")


def cuda_usable():
    """(CUDA works, why not when an NVIDIA GPU is present but CUDA does not: torch's own
    reason, e.g. the driver version it needs, else a general one; None without a GPU)."""
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        usable = torch.cuda.is_available()
    if usable:
        return True, None
    if not any(os.path.exists(p) for p in NVIDIA_PRESENT):
        return False, None
    reasons = [" ".join(str(w.message).split()) for w in said if "CUDA" in str(w.message)]
    if reasons:
        return False, reasons[0][:240]
    if torch.version.cuda is None:
        return False, f"this torch {torch.__version__} is built without CUDA"
    return False, f"torch {torch.__version__} (CUDA {torch.version.cuda}) cannot start it"


def autocast_dtype(device, precision):
    """The autocast dtype for `precision` (auto|fp32|bf16|fp16) on `device`, None for fp32
    (precision_choice says why)."""
    return precision_choice(device, precision)[0]


def precision_choice(device, precision):
    """(autocast dtype or None for fp32, why), for the run records. auto: bf16 on GPUs that
    compute it natively (compute capability 8.0 and newer: A100, H100, RTX 30xx...), fp16 with
    the gradient scaler on older ones (T4, V100: torch would emulate bf16, slowly); bf16 on
    CPUs with native bf16 instructions (AVX512-BF16/AMX), where it is faster at the same
    accuracy (see benchmarks/); fp32 elsewhere (MPS, older CPUs)."""
    if precision == "fp32":
        return None, "fp32: set in params.yaml"
    if precision == "fp16" and device.type == "cpu":
        raise StageError("params.yaml: precision fp16 is for GPUs; use bf16, fp32 or auto on CPU")
    if precision != "auto":
        return {"bf16": torch.bfloat16, "fp16": torch.float16}[precision], \
            f"{precision}: set in params.yaml"
    if device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        if (major, minor) >= (8, 0):
            return torch.bfloat16, f"auto: bf16, native on compute capability {major}.{minor}"
        return torch.float16, (f"auto: fp16 with gradient scaling, compute capability "
                               f"{major}.{minor} has no native bf16")
    if device.type == "cpu":
        if torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported():
            return torch.bfloat16, "auto: bf16, the CPU has native bf16 instructions"
        return None, "auto: fp32, the CPU has no native bf16 instructions"
    return None, f"auto: fp32 on {device.type}"


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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


def keep_freed_memory():
    """Ask glibc's malloc to keep freed memory for reuse instead of handing large blocks back to
    the OS after every training step: each step allocates the same large activations again, and
    fresh pages from the OS cost a page fault each. Same as MALLOC_MMAP_THRESHOLD_ and
    MALLOC_TRIM_THRESHOLD_; does nothing where libc is not glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.mallopt(-1, 1 << 30)  # M_TRIM_THRESHOLD
        libc.mallopt(-3, 1 << 30)  # M_MMAP_THRESHOLD
    except (OSError, AttributeError):
        pass
