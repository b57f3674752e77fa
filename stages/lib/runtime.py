"""Where and how a stage computes: the device, the autocast precision, the seeds."""
import random

from .common import StageError


def setup(shared):
    """Seed every generator and pick the device and autocast dtype for a params.Shared: the
    set-up every stage that runs a network starts with. Returns (device, amp_dtype)."""
    seed_everything(shared.seed)
    device = pick_device(shared.device)
    return device, autocast_dtype(device, shared.precision)


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
    instructions (AVX512-BF16/AMX), where it is faster at the same accuracy (see benchmarks/);
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
