"""What every stage process shares: one-line errors, and run(), which starts a stage (its
lock, dying with its parent, unwinding on SIGTERM) and turns expected failures into one line
and a non-zero exit."""
import fcntl
import hashlib
import json
import os
import re
import select
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


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


SEED_PURPOSES = ("global", "loader", "augment")


def seed_for(seed, purpose, rank=0):
    """The seed of one random stream: `purpose` (SEED_PURPOSES: torch's global generator, a
    DataLoader's workers, the resident-tensor augmentation) on process `rank`. Every (purpose,
    rank) gets its own stream (numpy's SeedSequence mixes them), so that no two collide. The
    streams of a single process keep `seed` itself (what `seed` in params.yaml has always
    meant), except the augmentation of a run on several processes."""
    if rank == 0 and purpose != "augment":
        return seed
    entropy = [seed, SEED_PURPOSES.index(purpose), rank]
    return int(np.random.SeedSequence(entropy).generate_state(1, dtype=np.uint64)[0] >> 1)


class Terminated(BaseException):
    """SIGTERM (or the death of the process that started the stage) arrived: unwind, so that
    every `finally` removes its temporary files, then exit 143."""


def _terminate(signum, frame):
    raise Terminated()


SHELLS = {"sh", "dash", "bash", "zsh", "ksh"}


def _watch_parents():
    """End this process (SIGTERM to itself) when the process that runs it dies: its parent, and
    when that parent is a shell (DVC runs `sh -c <cmd>`), the shell's parent too, e.g. `dvc`
    killed with SIGKILL while its `sh -c` child still waits for us. An orphaned stage would
    otherwise go on writing outputs beside the next `dvc repro`. Nothing above that is
    watched: a queue worker may legitimately exit while the job it started goes on. The
    parent is also covered by Linux's PR_SET_PDEATHSIG; the watcher thread uses a pidfd where
    Linux has one, else polling."""
    try:
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)   # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    parent = os.getppid()
    if parent <= 1:
        return
    pids = [parent]
    grandparent = _parent_of(parent)
    if _command_of(parent) in SHELLS and grandparent is not None and grandparent > 1:
        pids.append(grandparent)

    def watch():
        handles = []
        for ancestor in pids:
            try:
                handles.append(os.pidfd_open(ancestor))
            except (AttributeError, OSError):
                handles = None
                break
        if handles is not None:
            poller = select.poll()
            for handle in handles:
                poller.register(handle, select.POLLIN)
            poller.poll()   # readable once one of them has exited
        else:
            first = os.getppid()
            while os.getppid() == first and all(alive(p) for p in pids):
                time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def _command_of(pid):
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None


def _parent_of(pid):
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid):
    """True while process `pid` exists (also when it is someone else's)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:   # someone else's live process
        return True
    return True


def private_dir(kind):
    """This workspace's folder for files that are no output of DVC's (stage locks, training
    checkpoints): .dvc/tmp/<kind>/ in a DVC project (ignored by git and by DVC), elsewhere a
    folder in the system's temporary directory keyed by the working directory. Created."""
    folder = Path(".dvc/tmp") / kind if Path(".dvc").is_dir() else \
        Path(tempfile.gettempdir()) / kind / hashlib.sha256(
            str(Path.cwd()).encode()).hexdigest()[:16]
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def stage_lock(name):
    """Hold an exclusive lock named after the stage for as long as this process lives, so a
    second instance of the same stage in the same workspace (an orphan of a killed `dvc`, or
    two terminals) stops at once instead of writing the same outputs. The lock is an flock on
    .dvc/tmp/stage-locks/<name>.lock (private_dir): the kernel drops it when the process ends,
    however."""
    folder = private_dir("stage-locks")
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


# A stage run by torchrun (stages/lib/core/launcher.py): torchrun sets TORCHELASTIC_RUN_ID in its
# workers; the stage's own launcher (launcher.launch) also sets LAUNCHED_ENV, and then prints
# the first failing rank's message itself.
WORKER_ENV = "TORCHELASTIC_RUN_ID"
LAUNCHED_ENV = "STAGES_LAUNCHED"


def is_worker():
    """This process is a torchrun worker (one rank of a distributed run)."""
    return bool(os.environ.get(WORKER_ENV))


def writes():
    """This process writes the stage's outputs: a single process, the launcher on node 0 of a
    run on several nodes (PET_NODE_RANK, torchrun's setting), or rank 0 of the workers."""
    if is_worker():
        return os.environ.get("RANK") == "0"
    return os.environ.get("PET_NODE_RANK", "0").strip() in ("", "0")


def _record_failure(message):
    """In a torchrun worker: leave the one-line `message` in torchrun's error file for this
    worker (TORCHELASTIC_ERROR_FILE, in the format its ProcessFailure reads), where the
    launcher finds the first failure."""
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if path:
        with open(path, "w") as f:
            json.dump({"message": message, "timestamp": int(time.time())}, f)


def run(main):
    """Run a stage's main(argv); expected failures print `error: ...` and exit 1. The stage
    holds its lock, dies with the process that started it, and unwinds on SIGTERM.

    A torchrun worker (distributed.py) takes the lock only as rank 0 of a `torchrun` the user
    started (under the stage's own launcher, the launcher holds it; on nodes other than 0 of
    a run on several nodes, which may share the workspace, nobody), and leaves its error line
    in torchrun's error file; under the stage's launcher it prints nothing itself: the
    launcher prints the first failure, once."""
    argv = sys.argv[1:]
    worker = is_worker()
    quiet = worker and os.environ.get(LAUNCHED_ENV) == "1"

    def fail(message, status):
        if worker:
            _record_failure(message)
        if not quiet:
            print(f"error: {message}", file=sys.stderr)
        sys.exit(status)

    try:
        signal.signal(signal.SIGTERM, _terminate)
        _watch_parents()
        if writes() and not quiet:   # the process that writes holds the lock
            lock = stage_lock(stage_name(argv))  # noqa: F841 (held until exit)
        main(argv)
    except StageError as error:
        fail(one_line(error), 1)
    except KeyboardInterrupt:
        fail("interrupted", 130)
    except Terminated:
        if quiet:   # the launcher ended this rank because another one failed
            sys.exit(143)
        fail("terminated", 143)
    except Exception as error:
        if quiet and _lost_peer(error):   # another rank failed first: its message is the one
            sys.exit(143)                 # the launcher prints
        if worker:   # a bug: its traceback follows, and the launcher names the rank
            _record_failure(f"{type(error).__name__}: {one_line(error)}")
        raise
    finally:
        # the stage is over: a SIGTERM from now on (torchrun ending the other ranks, while
        # this one already exits) ends the process quietly instead of raising Terminated
        # inside Python's exit handlers
        signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _lost_peer(error):
    """A collective of torch.distributed that failed because another rank went away (gloo and
    NCCL raise a DistError, or from DDP's backward a RuntimeError naming the connection)."""
    if any(c.__name__ == "DistError" for c in type(error).__mro__):
        return True
    text = str(error)
    return isinstance(error, RuntimeError) and any(
        s in text for s in ("Connection closed by peer", "Connection reset by peer",
                            "Broken pipe", "NCCL communicator was aborted"))


