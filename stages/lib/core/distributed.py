"""Training on several processes, GPUs or nodes: PyTorch DDP, launched by torchrun.

A training stage (train@*, transfer@*) calls start() first (the launching itself is in
launcher.py). With `distributed.nproc_per_node: 1`
(the default) nothing changes: one process, as always. With N > 1 the stage's process becomes
a torchrun launcher: it starts N copies of the same command as torchrun workers
(torch.distributed.run, the engine behind the `torchrun` command, so every torchrun setting
applies: PET_NNODES, PET_NODE_RANK, PET_RDZV_ENDPOINT, ... for several nodes), waits for
them, and ends with the first failure's one-line message. A stage started by `torchrun`
itself (`torchrun --nproc-per-node 4 -m stages.train alexnet cifar10`) joins directly.

What a run on W processes means (docs/design.md, "Distributed training"):
- `batch_size` stays the global batch: each rank takes batch_size / W samples per step, and
  the gradients are averaged by DDP, so a step sees the same samples as on one process;
- the seeded order of the samples is the one of a single process: rank r takes positions
  r, r + W, r + 2W, ... of it (torch's DistributedSampler; the resident batches do the same),
  the last few repeated when the set does not divide by W;
- validation is sharded the same way without repeats, and the loss and accuracy are summed
  over the ranks (all-reduce), so every validation image counts exactly once;
- BatchNorm (ResNet-50) normalizes over the whole global batch on GPUs
  (`distributed.sync_batchnorm`), over each rank's share on CPUs;
- only rank 0 writes (models, metrics, plots, dvclive logs, checkpoints).
The results are close to, not identical with, one process: dropout and augmentation draw from
each rank's own random stream, BatchNorm statistics are each rank's own (on CPUs) or summed
in another order, as are the gradients."""
import datetime
import io
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from . import params
from .common import StageError, is_worker, seed_for
from .files import torch_load
from .launcher import launch, nnodes, timeout
from .runtime import pick_device

BACKENDS = params.BACKENDS


@dataclass(frozen=True)
class Context:
    """Where this process stands: rank `rank` of `world` processes (local_rank on its node),
    talking over `backend` (None: a single process, no process group)."""
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    backend: str | None = None
    sync_batchnorm: bool = False

    @property
    def main(self):
        """The process that writes (rank 0)."""
        return self.rank == 0

    def sum(self, tensor):
        """`tensor` summed over every rank, in place (all-reduce); as is on one process."""
        if self.world > 1:
            dist.all_reduce(tensor)
        return tensor

    def share(self, value):
        """Rank 0's `value` on every rank: tensors, numbers, strings, lists and dicts (a
        training state, run records), sent as the bytes of torch.save and read back with
        weights_only=True, so that no rank unpickles code another process sent."""
        if self.world == 1:
            return value
        device = self._device()
        data = _to_bytes(value, device) if self.main else None
        size = torch.tensor([data.numel() if self.main else 0], dtype=torch.int64,
                            device=device)
        dist.broadcast(size, src=0)
        if not self.main:
            data = torch.empty(int(size.item()), dtype=torch.uint8, device=device)
        dist.broadcast(data, src=0)
        return value if self.main else _from_bytes(data)

    def gather(self, value):
        """Every rank's `value` (as share() allows), as a list on rank 0 (None elsewhere)."""
        if self.world == 1:
            return [value]
        device = self._device()
        data = _to_bytes(value, device)
        sizes = [torch.zeros(1, dtype=torch.int64, device=device) for _ in range(self.world)]
        dist.all_gather(sizes, torch.tensor([data.numel()], dtype=torch.int64, device=device))
        longest = max(int(n.item()) for n in sizes)
        padded = torch.zeros(longest, dtype=torch.uint8, device=device)
        padded[:data.numel()] = data
        everyone = [torch.empty(longest, dtype=torch.uint8, device=device)
                    for _ in range(self.world)]
        dist.all_gather(everyone, padded)   # every backend has it (gather is not NCCL's own)
        if not self.main:
            return None
        return [_from_bytes(d[:int(n.item())]) for d, n in zip(everyone, sizes)]

    def _device(self):
        """Where collectives' tensors live: this rank's GPU under NCCL, else the CPU."""
        return torch.device("cuda", self.local_rank) if self.backend == "nccl" \
            else torch.device("cpu")

    def wrap(self, model):
        """The model to train with: DDP around it on several processes, else itself. With
        sync_batchnorm, on GPUs, its BatchNorm layers become SyncBatchNorm in place (the same
        Parameters and buffers: the optimizer and state_dict are unchanged), as torchvision's
        reference scripts do with --sync-bn; torch has no SyncBatchNorm on CPUs."""
        if self.world == 1:
            return model
        device = next(model.parameters()).device
        if self.sync_batchnorm and device.type == "cuda":
            torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
        return DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None)

    def describe(self, device):
        """world size, backend, every rank's device and whether BatchNorm statistics were
        shared, for the run records."""
        return {"world_size": self.world, "backend": self.backend or "none",
                "rank_devices": self.gather(str(device)),
                "sync_batchnorm": self.world > 1 and self.sync_batchnorm
                and device.type == "cuda"}

    def close(self):
        """Leave the process group together: every rank waits here until all are done (rank
        0 comes last, after it has evaluated and written), then each destroys its part. A rank
        that left alone while another still held the group could abort at exit."""
        if self.world > 1:
            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()


SINGLE = Context()


def _to_bytes(value, device):
    """`value` as a uint8 tensor of torch.save's bytes, on `device`."""
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return torch.frombuffer(bytearray(buffer.getbuffer()), dtype=torch.uint8).to(device)


def _from_bytes(data):
    """What _to_bytes sent, read with weights_only=True (files.torch_load)."""
    return torch_load(io.BytesIO(data.cpu().numpy().tobytes()))


# distributed.* in params.yaml (read with the other sections in params.py)
Settings, settings = params.Distributed, params.distributed


def _uses_cuda(device):
    """params' `device` (auto, cuda, mps, cpu) resolves to CUDA here."""
    return pick_device(device).type == "cuda"


def _check(cfg, device, nproc, world, batch_size, batch_key):
    """The one-line errors a launcher (nproc: its processes on this node) and a worker (nproc
    None) give alike; world: the number of processes in all."""
    if pick_device(device).type == "mps" and (nproc is None or nproc > 1 or nnodes() > 1):
        raise StageError("params.yaml: several processes ('distributed.nproc_per_node') run on "
                         "CUDA GPUs or CPUs, not on MPS; set device: cpu to use them here")
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if cfg.backend == "nccl" and not _uses_cuda(device):
        raise StageError("params.yaml: 'distributed.backend' nccl needs CUDA GPUs (and device "
                         "auto or cuda); use gloo or auto on CPUs")
    if nproc is not None and _uses_cuda(device) and nproc > gpus:
        raise StageError(f"params.yaml: 'distributed.nproc_per_node' is {nproc} but this "
                         f"machine has {gpus} GPU{'s' if gpus != 1 else ''} (use auto, or at "
                         f"most {gpus})")
    if batch_size % world:
        raise StageError(f"params.yaml: '{batch_key}' ({batch_size}) must divide by the "
                         f"number of processes ({world}): it is the global batch, split "
                         "evenly across them")


def start(cfg, device, batch_size, batch_key, module, argv):
    """Begin a training stage: the Context to train in, or None when this process launched
    the workers and they finished (the stage has nothing left to do).

    cfg: a Settings; device: params' `device`; batch_size (from `batch_key`): the global batch;
    module and argv: the stage's command (`stages.train`, ["alexnet", "cifar10"])."""
    if is_worker():
        return join(cfg, device, batch_size, batch_key)
    nproc = cfg.nproc_per_node
    if nproc is None:
        nproc = torch.cuda.device_count() if _uses_cuda(device) else 1
    _check(cfg, device, nproc, nproc * nnodes(), batch_size, batch_key)
    if nproc == 1 and nnodes() == 1 and "PET_NNODES" not in os.environ:
        return SINGLE

    launch(module, argv, nproc)
    return None


def join(cfg, device, batch_size, batch_key):
    """In a torchrun worker: check, pick this rank's device, join the process group."""
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    _check(cfg, device, None, world, batch_size, batch_key)
    cuda = _uses_cuda(device)
    if cuda:
        torch.cuda.set_device(local_rank)
    backend = cfg.backend if cfg.backend != "auto" else ("nccl" if cuda else "gloo")
    dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout()),
                            device_id=torch.device("cuda", local_rank) if backend == "nccl"
                            else None)
    return Context(rank=rank, world=world, local_rank=local_rank, backend=backend,
                   sync_batchnorm=cfg.sync_batchnorm)


def device_of(ctx, device):
    """This rank's device: its own GPU (cuda:<local rank>) on CUDA, else `device`."""
    if ctx.world > 1 and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def reseed(ctx, seed):
    """After the model is built (the same weights on every rank), give each rank other than 0
    its own torch random stream: dropout masks then differ between the shares of a batch."""
    if ctx.rank:
        torch.manual_seed(seed_for(seed, "global", ctx.rank))
