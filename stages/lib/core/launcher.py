"""The launcher side of a run on several processes (distributed.start calls it): torchrun's
engine in this process, starting the stage's own command as N workers, a rendezvous that stays
on 127.0.0.1 when the run is this node's alone, and the first failure in one line."""
import datetime
import ipaddress
import logging
import os
import socket
import sys
import time

import torch.distributed as dist
from torch.distributed import DistStoreError
from torch.distributed.elastic.multiprocessing.api import SignalException
from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
from torch.distributed.elastic.rendezvous import RendezvousError
from torch.distributed.run import parse_args
from torch.distributed.run import run as torchrun

from .common import LAUNCHED_ENV, StageError, Terminated, one_line

# seconds a rank waits for the others (rendezvous, then each collective)
TIMEOUT_ENV = "DISTRIBUTED_TIMEOUT"
DEFAULT_TIMEOUT = 300


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


def nnodes():
    """The number of nodes asked of torchrun (PET_NNODES: N, or MIN:MAX for elastic runs,
    whose size is only known at the rendezvous: then 1 here)."""
    value = os.environ.get("PET_NNODES", "1")
    return int(value) if value.isdigit() else 1




def launch(module, argv, nproc):
    """Run `python -m <module> <argv>` as `nproc` torchrun workers on this node and wait.
    torchrun's own settings come from the environment (PET_NNODES, PET_NODE_RANK,
    PET_MASTER_ADDR, PET_MASTER_PORT, PET_RDZV_BACKEND, PET_RDZV_ENDPOINT, PET_RDZV_CONF, ...;
    see `torchrun --help`); alone, one node with a rendezvous on a free local port. Several
    nodes: torchrun's static rendezvous (PET_MASTER_ADDR/PORT and PET_NODE_RANK) puts global
    rank 0, which writes the outputs, on node 0; c10d's ranks nodes in an order of its own.
    A worker's failure ends the others; the first failure's message is raised here as a
    StageError."""
    seconds = timeout()
    conf = [c for c in os.environ.get("PET_RDZV_CONF", "").split(",") if c]
    # c10d's waits (join_timeout, read_timeout) and the static rendezvous's (timeout)
    conf += [f"{key}={seconds:g}" for key in ("join_timeout", "read_timeout", "timeout")
             if not any(c.startswith(f"{key}=") for c in conf)]
    alone = nnodes() == 1 and not any(os.environ.get(f"PET_{key}") for key in RENDEZVOUS_KEYS)
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
    for item in conf:
        key, _, value = item.partition("=")
        if key == "is_host":
            return args.rdzv_endpoint, "PET_RDZV_ENDPOINT", \
                value.strip().lower() in ("1", "true", "yes")
    return args.rdzv_endpoint, "PET_RDZV_ENDPOINT", \
        is_this_machine(args.rdzv_endpoint.rsplit(":", 1)[0].strip("[]"))


def is_this_machine(host):
    """Whether `host` names this machine: its host name, a loopback address, or a name or
    address that resolves to one of this machine's own addresses. torchrun's c10d rendezvous
    serves the store on the node whose endpoint this is (its own check is a private function,
    not kept across torch versions)."""
    if host in ("localhost", socket.gethostname(), socket.getfqdn()):
        return True
    try:
        theirs = {info[4][0] for info in socket.getaddrinfo(host, None)}
        ours = {info[4][0] for info in socket.getaddrinfo(socket.gethostname(), None)}
    except OSError:   # a name that does not resolve is not this machine
        return False
    return bool(theirs & ours) or any(ipaddress.ip_address(ip.split("%")[0]).is_loopback
                                      for ip in theirs)


def _wait_for(endpoint, variable, seconds):
    """Wait until the rendezvous at host:port (on another node) accepts connections, for at
    most `seconds`: a node that cannot reach it stops with one line instead of torch's
    socket errors."""

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
