"""Training on several processes, GPUs or nodes: PyTorch DDP, launched by torchrun.

A training stage (train@*, transfer@*) calls start() first. With `distributed.nproc_per_node: 1`
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
import os
import sys
import time
from dataclasses import dataclass

from . import params
from .common import LAUNCHED_ENV, StageError, Terminated, is_worker, one_line, seed_for

BACKENDS = params.BACKENDS
# seconds a rank waits for the others (rendezvous, then each collective)
TIMEOUT_ENV = "DISTRIBUTED_TIMEOUT"
DEFAULT_TIMEOUT = 300


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
            import torch.distributed as dist

            dist.all_reduce(tensor)
        return tensor

    def share(self, value):
        """Rank 0's `value` on every rank: tensors, numbers, strings, lists and dicts (a
        training state, run records), sent as the bytes of torch.save and read back with
        weights_only=True, so that no rank unpickles code another process sent."""
        if self.world == 1:
            return value
        import torch
        import torch.distributed as dist

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
        import torch
        import torch.distributed as dist

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
        import torch

        return torch.device("cuda", self.local_rank) if self.backend == "nccl" \
            else torch.device("cpu")

    def wrap(self, model):
        """The model to train with: DDP around it on several processes, else itself. With
        sync_batchnorm, on GPUs, its BatchNorm layers become SyncBatchNorm in place (the same
        Parameters and buffers: the optimizer and state_dict are unchanged), as torchvision's
        reference scripts do with --sync-bn; torch has no SyncBatchNorm on CPUs."""
        if self.world == 1:
            return model
        import torch
        from torch.nn.parallel import DistributedDataParallel

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
            import torch.distributed as dist

            if dist.is_initialized():
                dist.barrier()
                dist.destroy_process_group()


SINGLE = Context()


def _to_bytes(value, device):
    """`value` as a uint8 tensor of torch.save's bytes, on `device`."""
    import io

    import torch

    buffer = io.BytesIO()
    torch.save(value, buffer)
    return torch.frombuffer(bytearray(buffer.getbuffer()), dtype=torch.uint8).to(device)


def _from_bytes(data):
    """What _to_bytes sent, read with weights_only=True (files.torch_load)."""
    import io

    from .files import torch_load

    return torch_load(io.BytesIO(data.cpu().numpy().tobytes()))


# distributed.* in params.yaml (read with the other sections in params.py)
Settings, settings = params.Distributed, params.distributed


def timeout():
    """TIMEOUT_ENV's seconds (default DEFAULT_TIMEOUT), how long a rank waits for the others."""
    value = os.environ.get(TIMEOUT_ENV, "").strip() or str(DEFAULT_TIMEOUT)
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise StageError(f"{TIMEOUT_ENV}={value}: expected the seconds a rank waits for the "
                         "others")
    return seconds


def _uses_cuda(device):
    """params' `device` (auto, cuda, mps, cpu) resolves to CUDA here."""
    from .runtime import pick_device

    return pick_device(device).type == "cuda"


def _check(cfg, device, nproc, world, batch_size, batch_key):
    """The one-line errors a launcher (nproc: its processes on this node) and a worker (nproc
    None) give alike; world: the number of processes in all."""
    import torch

    from .runtime import pick_device

    if pick_device(device).type == "mps" and (nproc is None or nproc > 1 or _nnodes() > 1):
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


def _nnodes():
    """The number of nodes asked of torchrun (PET_NNODES: N, or MIN:MAX for elastic runs,
    whose size is only known at the rendezvous: then 1 here)."""
    value = os.environ.get("PET_NNODES", "1")
    return int(value) if value.isdigit() else 1


def start(cfg, device, batch_size, batch_key, module, argv):
    """Begin a training stage: the Context to train in, or None when this process launched
    the workers and they finished (the stage has nothing left to do).

    cfg: a Settings; device: params' `device`; batch_size (from `batch_key`): the global batch;
    module and argv: the stage's command (`stages.train`, ["alexnet", "cifar10"])."""
    if is_worker():
        return join(cfg, device, batch_size, batch_key)
    import torch

    nproc = cfg.nproc_per_node
    if nproc is None:
        nproc = torch.cuda.device_count() if _uses_cuda(device) else 1
    _check(cfg, device, nproc, nproc * _nnodes(), batch_size, batch_key)
    if nproc == 1 and _nnodes() == 1 and "PET_NNODES" not in os.environ:
        return SINGLE
    launch(module, argv, nproc)
    return None


def join(cfg, device, batch_size, batch_key):
    """In a torchrun worker: check, pick this rank's device, join the process group."""
    import torch
    import torch.distributed as dist

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
    import torch

    if ctx.world > 1 and device.type == "cuda":
        return torch.device("cuda", ctx.local_rank)
    return device


def reseed(ctx, seed):
    """After the model is built (the same weights on every rank), give each rank other than 0
    its own torch random stream: dropout masks then differ between the shares of a batch."""
    if ctx.rank:
        import torch

        torch.manual_seed(seed_for(seed, "global", ctx.rank))


def launch(module, argv, nproc):
    """Run `python -m <module> <argv>` as `nproc` torchrun workers on this node and wait.
    torchrun's own settings come from the environment (PET_NNODES, PET_NODE_RANK,
    PET_MASTER_ADDR, PET_MASTER_PORT, PET_RDZV_BACKEND, PET_RDZV_ENDPOINT, PET_RDZV_CONF, ...;
    see `torchrun --help`); alone, one node with a rendezvous on a free local port. Several
    nodes: torchrun's static rendezvous (PET_MASTER_ADDR/PORT and PET_NODE_RANK) puts global
    rank 0, which writes the outputs, on node 0; c10d's ranks nodes in an order of its own.
    A worker's failure ends the others; the first failure's message is raised here as a
    StageError."""
    import logging

    from torch.distributed import DistStoreError
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous import RendezvousError
    from torch.distributed.run import parse_args
    from torch.distributed.run import run as torchrun

    seconds = timeout()
    conf = [c for c in os.environ.get("PET_RDZV_CONF", "").split(",") if c]
    # c10d's waits (join_timeout, read_timeout) and the static rendezvous's (timeout)
    conf += [f"{key}={seconds:g}" for key in ("join_timeout", "read_timeout", "timeout")
             if not any(c.startswith(f"{key}=") for c in conf)]
    alone = _nnodes() == 1 and not any(os.environ.get(f"PET_{key}") for key in RENDEZVOUS_KEYS)
    store, where = _loopback_store(seconds) if alone else (None, [])
    args = parse_args(["--nproc-per-node", str(nproc), "--max-restarts", "0", "--rdzv-conf",
                       ",".join(conf), *where, "--module", module, *argv])
    # each worker gets its share of the cores, unless the user says otherwise (torchrun
    # would set 1 and print a warning about it)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // nproc)))
    os.environ[LAUNCHED_ENV] = "1"
    # torchrun's agent logs every start and stop, and each failure again: the stage prints
    # the first failure in one line instead (its modules set their loggers' levels themselves)
    for name in list(logging.root.manager.loggerDict):
        if name.startswith("torch.distributed.elastic"):
            logging.getLogger(name).setLevel(logging.CRITICAL)
    endpoint, variable, hosting = _rendezvous(args, conf)
    if endpoint and not hosting:
        _wait_for(endpoint, variable, seconds)
    name = module.removeprefix("stages.") + (f"@{argv[0]}" if argv else "")
    print(f"{name}: {nproc} process{'es' if nproc > 1 else ''} on "
          f"this node" + (f", {args.nnodes} nodes, rendezvous at {endpoint}"
                         if endpoint else "") + " (torchrun, DDP)", flush=True)
    try:
        torchrun(args)
        del store   # closes the loopback store once the workers are done
    except SignalException:   # SIGTERM: torchrun's agent stopped the workers and says so
        raise Terminated() from None
    except ChildFailedError as error:
        # the first rank that said why (its error file); the others were ended after it
        said = {r: f for r, f in error.failures.items() if f.error_file != "<N/A>"}
        rank, failure = min(said.items(), key=lambda item: (item[1].timestamp, item[0])) \
            if said else error.get_first_failure()
        message = failure.message
        if isinstance(message, dict):   # an error file in torch's own format
            message = message.get("message", "")
        message = one_line(str(message)).removeprefix("StageError: ")
        if failure.error_file == "<N/A>":   # no error file: a crash, a signal
            message = (f"exit code {failure.exitcode}" if failure.exitcode >= 0 else
                       f"killed by signal {-failure.exitcode} ({failure.signal_name()})") + \
                "; its output is above"
        raise StageError(f"rank {rank}: {message}") from None
    except (RendezvousError, DistStoreError) as error:   # e.g. the other nodes did not come
        raise StageError(f"cannot start the distributed run: the rendezvous at "
                         f"{endpoint or 'this node'} ({variable or 'torchrun'}) failed within "
                         f"{seconds:g} s ({TIMEOUT_ENV}): {one_line(error)}") from None


# torchrun's settings that place a rendezvous elsewhere than this machine's loopback
RENDEZVOUS_KEYS = ("MASTER_ADDR", "MASTER_PORT", "RDZV_ENDPOINT", "RDZV_BACKEND", "STANDALONE")
LOOPBACK = "lo0" if sys.platform == "darwin" else "lo"


def _loopback_store(seconds):
    """A run on this node alone listens on 127.0.0.1 only: (the store that torchrun's static
    rendezvous then uses, the arguments that point torchrun at it).

    torchrun's stores bind to every interface whatever host they are given; a TCPStore made
    from a socket bound here to 127.0.0.1 (master_listen_fd) and registered for its port
    (multi_tenant) is the one torchrun's static rendezvous takes for that port. The workers'
    gloo listeners follow GLOO_SOCKET_IFNAME (loopback, unless the user set it). On a torch
    without master_listen_fd: (None, []), torchrun's own choice, as before."""
    import socket

    import torch.distributed as dist

    os.environ.setdefault("GLOO_SOCKET_IFNAME", LOOPBACK)
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    port, fd = listener.getsockname()[1], listener.detach()   # the store owns the socket
    try:
        store = dist.TCPStore("127.0.0.1", port, is_master=True, multi_tenant=True,
                              wait_for_workers=False,
                              timeout=datetime.timedelta(seconds=seconds), master_listen_fd=fd)
    except TypeError:
        os.close(fd)
        return None, []
    return store, ["--master-addr", "127.0.0.1", "--master-port", str(port)]


def _rendezvous(args, conf):
    """(endpoint, the variable that set it, whether this node serves it) of a run on several
    nodes, as torchrun decides; (None, None, True) on one node."""
    if args.nnodes in ("1", "1:1"):
        return None, None, True
    if args.rdzv_backend == "static":
        return (f"{args.master_addr}:{args.master_port or 29500}",
                "PET_MASTER_ADDR/PET_MASTER_PORT", args.node_rank == 0)
    from torch.distributed.elastic.rendezvous.utils import _matches_machine_hostname

    for item in conf:
        key, _, value = item.partition("=")
        if key == "is_host":
            return args.rdzv_endpoint, "PET_RDZV_ENDPOINT", \
                value.strip().lower() in ("1", "true", "yes")
    return args.rdzv_endpoint, "PET_RDZV_ENDPOINT", \
        _matches_machine_hostname(args.rdzv_endpoint.rsplit(":", 1)[0].strip("[]"))


def _wait_for(endpoint, variable, seconds):
    """Wait until the rendezvous at host:port (on another node) accepts connections, for at
    most `seconds`: a node that cannot reach it stops with one line instead of torch's
    socket errors."""
    import socket

    host, _, port = endpoint.rpartition(":")
    if not port.isdigit():
        raise StageError(f"{variable}: expected host:port, got {endpoint!r}")
    deadline = time.monotonic() + seconds
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)),
                                          timeout=max(0.1, min(5.0, deadline - time.monotonic()))):
                return
        except OSError as error:
            if time.monotonic() >= deadline:
                raise StageError(f"cannot start the distributed run: the rendezvous at "
                                 f"{endpoint} ({variable}) failed within {seconds:g} s "
                                 f"({TIMEOUT_ENV}): {error.strerror or error}") from None
            time.sleep(0.5)
