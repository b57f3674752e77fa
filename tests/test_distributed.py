"""Training on several processes (stages/lib/core/distributed.py): torchrun + DDP with gloo on CPU.

Unit tests check that the ranks' shares make up the one-process batches; the end-to-end tests
run real torchrun jobs on 127.0.0.1 (2 processes; 2 "nodes"; a failing rank; a rendezvous
that is not there) on the tiny mirror."""
import json
import os
import socket
import sys
import time

import pytest
import torch

from helpers import closed_port, copy_project, edit_params, run, saved_states, stage_env
from stages.lib import images
from stages.lib.core import data, distributed
from stages.lib.core.common import StageError

# ---------------------------------------------------------------- the shares of a batch


@pytest.mark.parametrize("n, batch, world", [(10, 4, 2), (11, 4, 2), (13, 6, 3), (7, 8, 2)])
def test_the_shares_of_each_step_are_the_one_process_batch(n, batch, world):
    images = torch.arange(n, dtype=torch.uint8).view(n, 1, 1, 1)
    labels = torch.arange(n)
    norm = dict(mean=(0.0,), std=(1 / 255,))   # x == the image's value

    def steps(rank, w):
        g = torch.Generator().manual_seed(5)
        return [y.tolist() for _, y in data.batches(images, labels, batch, generator=g,
                                                    shard=(rank, w), **norm)]

    one = steps(0, 1)
    shares = [steps(rank, world) for rank in range(world)]
    assert len({len(s) for s in shares}) == 1            # every rank takes as many steps
    assert len(shares[0]) == len(one)
    for k, whole in enumerate(one):
        together = sorted(i for s in shares for i in s[k])
        padded = sorted(whole + one[0][:len(together) - len(whole)])   # the last step's repeats
        assert together == padded
        assert len({len(s[k]) for s in shares}) == 1     # equal shares: DDP's mean is the mean


def test_an_image_set_shard_takes_its_positions_of_the_one_process_order():
    def order(rank, world, epoch):   # ImageSet.batches' steps of 4 images (2 per rank of 2)
        share = images.pass_order(10, 3, epoch, (rank, world))
        return [share[i:i + 4 // world] for i in range(0, len(share), 4 // world)]

    for epoch in (1, 2):
        one = [i for b in order(0, 1, epoch) for i in b]
        ranks = [order(r, 2, epoch) for r in range(2)]
        assert [len(b) for b in ranks[0]] == [len(b) for b in ranks[1]] == [2, 2, 1]
        assert [i for step in zip(*ranks) for pair in zip(*step) for i in pair] == one
        # DistributedSampler's shuffle: the order every transfer run has had
        assert one == torch.randperm(10, generator=torch.Generator().manual_seed(3 + epoch)) \
            .tolist()
    assert order(0, 1, 1) != order(0, 1, 2)                      # each epoch its own order
    evaluation = [images.pass_order(10, 3, None, (r, 3)) for r in range(3)]
    assert sorted(i for share in evaluation for i in share) == list(range(10))


# ---------------------------------------------------------------- settings and checks

@pytest.mark.parametrize("nproc, backend, pattern", [
    (0, "auto", r"'distributed\.nproc_per_node' must be an integer >= 1 or auto, got 0"),
    ("many", "auto", r"must be an integer >= 1 or auto, got 'many'"),
    (2, "mpi", r"'distributed\.backend' must be one of auto, nccl, gloo; got 'mpi'"),
])
def test_bad_settings(nproc, backend, pattern):
    with pytest.raises(StageError, match=pattern):
        distributed.settings({"distributed": {"nproc_per_node": nproc, "backend": backend,
                                              "sync_batchnorm": True}})


def test_auto_is_one_process_per_gpu():
    cfg = distributed.settings({"distributed": {"nproc_per_node": "auto", "backend": "auto",
                                                "sync_batchnorm": False}})
    assert (cfg.nproc_per_node, cfg.sync_batchnorm) == (None, False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the errors of a machine without GPUs")
def test_nccl_without_gpus_is_refused():
    cfg = distributed.Settings(nproc_per_node=2, backend="nccl", sync_batchnorm=True)
    with pytest.raises(StageError, match=r"^params\.yaml: 'distributed\.backend' nccl needs "
                                         r"CUDA GPUs"):
        distributed.start(cfg, "auto", 64, "simple_cnn.batch_size", "stages.train", [])


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_more_processes_than_gpus_is_refused():
    cfg = distributed.Settings(nproc_per_node=torch.cuda.device_count() + 1, backend="auto",
                               sync_batchnorm=True)
    with pytest.raises(StageError, match=r"'distributed\.nproc_per_node' is \d+ but this "
                                         r"machine has \d+ GPU"):
        distributed.start(cfg, "cuda", 64, "simple_cnn.batch_size", "stages.train", [])


def test_the_global_batch_must_divide_by_the_processes(monkeypatch):
    cfg = distributed.Settings(nproc_per_node=2, backend="gloo", sync_batchnorm=True)
    with pytest.raises(StageError, match=r"^params\.yaml: 'alexnet\.batch_size' \(33\) must "
                                         r"divide by the number of processes \(2\)"):
        distributed.start(cfg, "cpu", 33, "alexnet.batch_size", "stages.train", [])
    monkeypatch.setenv("PET_NNODES", "2")
    with pytest.raises(StageError, match=r"\(34\) must divide by the number of processes \(4\)"):
        distributed.start(cfg, "cpu", 34, "alexnet.batch_size", "stages.train", [])


def test_one_process_asks_for_nothing():
    cfg = distributed.Settings(nproc_per_node=1, backend="auto", sync_batchnorm=True)
    assert distributed.start(cfg, "cpu", 33, "a.batch_size", "stages.train", []) \
        is distributed.SINGLE


# ---------------------------------------------------------------- real runs

TINY = {"simple_cnn.epochs": 2, "simple_cnn.batch_size": 32, "simple_cnn.eval_batch_size": 64,
        "distributed.backend": "gloo"}
OUTPUTS = ["models/simple_cnn.pt", "models/simple_cnn.run.json", "metrics/simple_cnn.json",
           "plots/simple_cnn/evaluation.json", "plots/simple_cnn/curves.png",
           "plots/simple_cnn/confusion.csv", "plots/simple_cnn/confusion.png"]


def loopback(mirror, **extra):
    """The environment of a run that stays on 127.0.0.1 (gloo and torchrun on loopback)."""
    return stage_env(mirror, **{"GLOO_SOCKET_IFNAME": "lo", "PET_LOCAL_ADDR": "127.0.0.1",
                                "DISTRIBUTED_TIMEOUT": "60", "PROGRESS_INTERVAL": "off",
                                **extra})


@pytest.fixture(scope="module")
def mnist(tmp_path_factory, mirror):
    where = copy_project(tmp_path_factory.mktemp("mnist") / "project")
    result = run([sys.executable, "-m", "stages.download", "mnist", "data/raw/mnist"], where,
                 stage_env(mirror), check=False)
    assert result.returncode == 0, result.stderr
    return where / "data/raw/mnist"


def project_with(root, mnist, changes):
    project = copy_project(root)
    (project / "data/raw").mkdir(parents=True)
    os.symlink(mnist, project / "data/raw/mnist")
    edit_params(project, {**TINY, **changes})
    return project


def train(project, env, timeout=600):
    """The stage on `project`; a run that hangs (a rank waiting on one that died) fails the
    test by its timeout instead of blocking the suite."""
    return run([sys.executable, "-m", "stages.train", "simple_cnn", "mnist"], project, env,
               check=False, timeout=timeout)


def files_in(folder):
    """The files in `folder`, less Python's caches and DVC's scratch space (.dvc/tmp, where
    each node's launcher holds the stage's lock)."""
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*")
                  if p.is_file() and "__pycache__" not in p.parts
                  and not str(p.relative_to(folder)).startswith(".dvc/tmp/"))


@pytest.fixture(scope="module")
def one_process(tmp_path_factory, mnist, mirror):
    project = project_with(tmp_path_factory.mktemp("one") / "project", mnist, {})
    result = train(project, loopback(mirror))
    assert result.returncode == 0, result.stderr
    return project


def history(project):
    folder = project / "plots/simple_cnn/live/plots/metrics"
    return {f"{split}/{name}": [float(line.split("\t")[-1]) for line in
                                (folder / split / f"{name}.tsv").read_text().splitlines()[1:]]
            for split in ("train", "val") for name in ("loss", "accuracy")}


# Two processes see the same samples in each step as one, but not the same random numbers:
# rank 1 draws its own dropout masks, and the gradients and counts are summed in another
# order. On 200 images and 2 epochs the curves stay within these bounds of one process
# (measured differences are a few thousandths; the bounds leave room for other CPUs).
LOSS_TOLERANCE = 0.1
ACCURACY_TOLERANCE = 0.05


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory, mnist, mirror):
    project = project_with(tmp_path_factory.mktemp("two") / "project", mnist,
                           {"distributed.nproc_per_node": 2})
    return project, train(project, loopback(mirror))


def test_two_processes_train_like_one(two_processes, one_process):
    project, result = two_processes
    assert result.returncode == 0, result.stderr
    assert "train@simple_cnn: 2 processes on this node (torchrun, DDP)" in result.stdout
    assert result.stdout.count("epoch   1/2") == 1        # rank 0 alone prints
    assert "error" not in result.stderr.lower(), result.stderr
    two, one = history(project), history(one_process)
    for key in one:
        tolerance = LOSS_TOLERANCE if key.endswith("loss") else ACCURACY_TOLERANCE
        assert two[key] == pytest.approx(one[key], abs=tolerance), key
    record = json.loads((project / "models/simple_cnn.run.json").read_text())
    assert (record["world_size"], record["backend"], record["rank_devices"]) == \
        (2, "gloo", ["cpu", "cpu"])
    assert record["distributed"] == {"nproc_per_node": 2, "backend": "gloo",
                                     "sync_batchnorm": True}
    assert record["sync_batchnorm"] is False   # a CPU run: each rank's own statistics
    # exactly one dvclive folder, with one line per epoch; nothing but the declared outputs
    live = [p for p in project.rglob("dvclive*")] + \
        [p.parent for p in project.rglob("metrics.json") if p.parent.name == "live"]
    assert [str(p.relative_to(project)) for p in live] == ["plots/simple_cnn/live"]
    assert len(two["val/accuracy"]) == 2
    assert files_in(project) == files_in(one_process)
    counts = sum(int(line.split(",")[2]) for line in
                 (project / "plots/simple_cnn/confusion.csv").read_text().splitlines()[1:])
    assert counts == 100   # the whole validation set, each image once


def test_two_nodes_on_loopback(tmp_path, mnist, mirror, one_process):
    """Two torchrun "nodes" (two launchers, one process each) meet at torchrun's static
    rendezvous on 127.0.0.1, as the README's commands do; node 1 runs in another folder, and
    writes nothing there."""
    nodes = [project_with(tmp_path / f"node{i}", mnist, {}) for i in range(2)]
    before = files_in(nodes[1])
    port = closed_port()
    procs = []
    for rank, project in enumerate(nodes):
        env = loopback(mirror, PET_NNODES="2", PET_NODE_RANK=str(rank),
                       PET_MASTER_ADDR="127.0.0.1", PET_MASTER_PORT=str(port))
        procs.append(__import__("subprocess").Popen(
            [sys.executable, "-m", "stages.train", "simple_cnn", "mnist"], cwd=project, env=env,
            stdout=-1, stderr=-1, text=True))
    results = [p.communicate(timeout=240) for p in procs]
    for p, (_, err) in zip(procs, results):
        assert p.returncode == 0, err
    assert "2 nodes, rendezvous at 127.0.0.1" in results[0][0]
    assert "2 processes (gloo)" in results[0][0]
    assert files_in(nodes[0]) == files_in(one_process)
    assert files_in(nodes[1]) == before      # rank 1 wrote nothing
    assert not (nodes[1] / ".dvc/tmp/stage-locks").exists()   # nor took the stage's lock
    record = json.loads((nodes[0] / "models/simple_cnn.run.json").read_text())
    assert record["world_size"] == 2


RESULTS = ["metrics/simple_cnn.json", "plots/simple_cnn/evaluation.json",
           "plots/simple_cnn/confusion.csv", "plots/simple_cnn/live/metrics.json",
           *[f"plots/simple_cnn/live/plots/metrics/{split}/{name}.tsv"
             for split in ("train", "val") for name in ("loss", "accuracy")]]


def test_a_failing_rank_ends_the_job_with_its_message(tmp_path, mnist, mirror, two_processes):
    """Rank 1 raises in its second epoch: every rank stops, the stage prints that one line and
    exits 1, and no model, metric or plot is written. The next run resumes from epoch 1's
    checkpoint (rank 0 hands it to rank 1) and ends with the bytes of an uninterrupted run."""
    project = project_with(tmp_path / "project", mnist, {"distributed.nproc_per_node": 2})
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import os\n"
        "if os.environ.get('RANK') == '1':\n"
        "    import stages.lib.core.engine as engine\n"
        "    from stages.lib.core.common import StageError\n"
        "    calls, real = [], engine.run_epoch\n"
        "    def run_epoch(*args, **kwargs):\n"
        "        calls.append(1)\n"
        "        if len(calls) == 3:\n"
        "            raise StageError('injected failure in epoch 2')\n"
        "        return real(*args, **kwargs)\n"
        "    engine.run_epoch = run_epoch\n")
    env = loopback(mirror, PYTHONPATH=f"{hook}{os.pathsep}{project}")
    result = train(project, env, timeout=300)   # rank 0 does not wait for its timeout
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines() == ["error: rank 1: injected failure in epoch 2"], \
        result.stderr
    for path in OUTPUTS:
        assert not (project / path).exists(), path
    assert saved_states(project, "simple_cnn")   # epoch 1's state stays, to resume from

    result = train(project, loopback(mirror))
    assert result.returncode == 0, result.stderr
    assert "resuming after epoch 1 of 2" in result.stdout
    uninterrupted = two_processes[0]
    for path in RESULTS:
        assert (project / path).read_bytes() == (uninterrupted / path).read_bytes(), path


def test_an_unreachable_rendezvous_is_one_line(tmp_path, mnist, mirror):
    project = project_with(tmp_path / "project", mnist, {})
    port = closed_port()
    env = loopback(mirror, PET_NNODES="2", PET_RDZV_BACKEND="c10d", DISTRIBUTED_TIMEOUT="3",
                   PET_RDZV_ENDPOINT=f"127.0.0.1:{port}", PET_RDZV_CONF="is_host=0")
    result = train(project, env)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        f"error: cannot start the distributed run: the rendezvous at 127.0.0.1:{port} "
        "(PET_RDZV_ENDPOINT) failed within 3 s (DISTRIBUTED_TIMEOUT)"), result.stderr
    assert not (project / "models").exists()


def test_a_node_that_waits_in_vain_stops_with_one_line(tmp_path, mnist, mirror):
    """Node 0 of two serves the static rendezvous; node 1 never comes."""
    project = project_with(tmp_path / "project", mnist, {})
    env = loopback(mirror, PET_NNODES="2", PET_NODE_RANK="0", PET_MASTER_ADDR="127.0.0.1",
                   PET_MASTER_PORT=str(closed_port()), DISTRIBUTED_TIMEOUT="3")
    result = train(project, env)
    assert result.returncode == 1, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith(
        "error: cannot start the distributed run: the rendezvous at 127.0.0.1:"), result.stderr
    assert "(PET_MASTER_ADDR/PET_MASTER_PORT) failed within 3 s (DISTRIBUTED_TIMEOUT)" in lines[0]
    assert not (project / "models").exists()


def test_transfer_on_two_processes(tmp_path, mirror):
    """The ImageFolder path: DistributedSampler shares, ResNet-50 in DDP (per-rank BatchNorm on
    CPUs), sharded validation; rank 0 evaluates the whole validation set."""
    project = copy_project(tmp_path / "project")
    result = run([sys.executable, "-m", "stages.download", "hymenoptera",
                  "data/raw/hymenoptera"], project, stage_env(mirror), check=False)
    assert result.returncode == 0, result.stderr
    edit_params(project, {"transfer.image_size": 32, "transfer.batch_size": 4,
                          "transfer.eval_batch_size": 4, "transfer.num_workers": 0,
                          "transfer.scratch.epochs": 1, "transfer.scratch.lr": 0.0005,
                          "distributed.nproc_per_node": 2, "distributed.backend": "gloo"})
    result = run([sys.executable, "-m", "stages.transfer", "scratch"], project,
                 loopback(mirror), check=False)
    assert result.returncode == 0, result.stderr
    assert "16 train / 10 val" in result.stdout and "2 processes (gloo)" in result.stdout
    record = json.loads((project / "models/transfer/scratch.run.json").read_text())
    assert (record["world_size"], record["sync_batchnorm"]) == (2, False)
    counts = sum(int(line.split(",")[2]) for line in
                 (project / "plots/transfer/scratch/confusion.csv").read_text().splitlines()[1:])
    assert counts == 10


def test_sigterm_to_the_launcher_ends_every_rank(tmp_path, mnist, mirror):
    """`dvc` stopped (SIGTERM to the stage's process): torchrun's agent stops the workers, and
    the stage ends as a single process does: `error: terminated`, exit 143, nobody left."""
    import signal
    import subprocess

    project = project_with(tmp_path / "project", mnist, {"simple_cnn.epochs": 50,
                                                         "distributed.nproc_per_node": 2})
    proc = subprocess.Popen([sys.executable, "-m", "stages.train", "simple_cnn", "mnist"],
                            cwd=project, env=loopback(mirror), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    for line in proc.stdout:
        if line.startswith("epoch   1/50"):
            break
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143
    assert err.strip().splitlines() == ["error: terminated"]

    import psutil

    def in_project(process):
        try:
            return process.cwd() == str(project)
        except psutil.Error:
            return False

    left = [p for p in psutil.process_iter() if in_project(p)]
    _, alive = psutil.wait_procs(left, timeout=60)   # dying ranks flush and exit: no hang
    assert alive == [], f"ranks outlived their launcher: {alive}"


# Every process of a run records, in BIND_RECORDS/<pid>.jsonl (sitecustomize on PYTHONPATH):
# first, what torchrun set in its environment; then each address it binds a socket to from
# Python (an audit hook on "socket.bind", called before every bind, so none can be missed);
# and the launcher, each time it starts a process (an audit hook on "subprocess.Popen": torchrun
# starting a rank), the TCP sockets it is listening on at that moment.
BIND_HOOK = '''
import json, os, sys

_path = os.path.join(os.environ["BIND_RECORDS"], f"{os.getpid()}.jsonl")
_keys = ("RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GLOO_SOCKET_IFNAME")


def _write(record):
    with open(_path, "a") as f:
        f.write(json.dumps(record) + "\\n")


def _hook(event, args):
    if event == "socket.bind":
        sock, address = args
        host = address if isinstance(address, (str, bytes)) else address[0]
        _write({"bind": [sock.family.name, repr(host)]})
    elif event == "subprocess.Popen" and "RANK" not in os.environ:
        import psutil

        listening = [[c.laddr.ip, c.laddr.port] for c in psutil.Process().net_connections("tcp")
                     if c.status == psutil.CONN_LISTEN]
        _write({"popen": [str(a) for a in args[1]], "listening": listening})


_write({"env": {key: os.environ.get(key) for key in _keys}})
sys.addaudithook(_hook)
'''
LOOPBACK_IPS = {"127.0.0.1", "::1"}


def test_a_one_node_run_listens_on_loopback_only(tmp_path, mnist, mirror):
    """Every socket a 2-process run listens on (torchrun's store, the ranks' gloo pairs) is
    bound to 127.0.0.1 or ::1.

    What each check covers: (1) every bind made from Python in any process of the run (the
    launcher's store socket, any free-port probe), seen by an audit hook: none can be missed,
    however short-lived; (2) the rendezvous: the ranks are told (MASTER_ADDR/MASTER_PORT) to
    meet at 127.0.0.1 on a port the launcher listens on at 127.0.0.1, and at the moment it
    starts them the launcher listens on loopback only (torchrun's stores, made in C++, bind
    without a Python event: this snapshot, taken on an event, sees the one it uses); the
    ranks' gloo listeners follow GLOO_SOCKET_IFNAME, which they are given as the loopback
    interface; (3) the listeners made in C++ (gloo's, the stores'), sampled from the
    processes' own sockets while they train: these live as long as the run, so the sampling
    sees them (a rank must be seen listening), but one that came and went between two
    samples could escape it; (1) and (2) do not depend on sampling."""
    import subprocess

    import psutil

    from stages.lib.core.launcher import LOOPBACK

    project = project_with(tmp_path / "project", mnist, {"distributed.nproc_per_node": 2})
    hook, records = tmp_path / "hook", tmp_path / "binds"
    hook.mkdir()
    records.mkdir()
    (hook / "sitecustomize.py").write_text(BIND_HOOK)
    env = {k: v for k, v in loopback(mirror).items()
           if k not in ("GLOO_SOCKET_IFNAME", "PET_LOCAL_ADDR")}   # the stage's own defaults
    env.update(PYTHONPATH=f"{hook}{os.pathsep}{project}", BIND_RECORDS=str(records))
    process = subprocess.Popen([sys.executable, "-m", "stages.train", "simple_cnn", "mnist"],
                               cwd=project, env=env, stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    listening = set()
    try:
        launcher = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                for proc in [launcher, *launcher.children(recursive=True)]:
                    listening |= {(c.laddr.ip, proc.pid) for c in proc.net_connections("tcp")
                                  if c.status == psutil.CONN_LISTEN}
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                pass
            time.sleep(0.05)   # (3)'s sampling interval; (1) and (2) take no samples
    finally:
        if process.poll() is None:
            process.kill()
        stdout, stderr = process.communicate(timeout=60)
    assert process.returncode == 0, stderr

    found = {int(path.stem): [json.loads(line) for line in path.read_text().splitlines()]
             for path in records.glob("*.jsonl")}
    assert process.pid in found and found[process.pid][0]["env"]["RANK"] is None
    ranks = {pid: lines[0]["env"] for pid, lines in found.items() if lines[0]["env"]["RANK"]}
    assert sorted(e["RANK"] for e in ranks.values()) == ["0", "1"], found   # both had the hook
    # (1) every Python bind, in every process
    binds = [(pid, *line["bind"]) for pid, lines in found.items() for line in lines
             if "bind" in line]
    assert ("AF_INET", "'127.0.0.1'") in {tuple(b[1:]) for b in binds
                                          if b[0] == process.pid}   # the launcher's store
    assert all(family == "AF_UNIX" or host in {"'127.0.0.1'", "'::1'", "'localhost'"}
               for _, family, host in binds), binds
    # (2) the rendezvous and the gloo interface the ranks were given, and what the launcher
    # listened on when it started them
    for e in ranks.values():
        assert (e["MASTER_ADDR"], e["GLOO_SOCKET_IFNAME"], e["WORLD_SIZE"]) == \
            ("127.0.0.1", LOOPBACK, "2"), e
    ports = {e["MASTER_PORT"] for e in ranks.values()}
    assert len(ports) == 1
    starts = [line for line in found[process.pid] if "popen" in line
              and "stages.train" in line["popen"]]
    assert len(starts) == 2, found[process.pid]   # torchrun started the two ranks
    for start in starts:
        assert ["127.0.0.1", int(*ports)] in start["listening"], start
        assert {ip for ip, _ in start["listening"]} <= LOOPBACK_IPS, start
    # (3) the listeners seen while the ranks trained
    assert {pid for _, pid in listening} & set(ranks), "no rank was seen listening"
    assert {ip for ip, _ in listening} <= LOOPBACK_IPS, listening


@pytest.mark.parametrize("host, expected", [
    ("127.0.0.1", True), ("localhost", True), ("::1", True), (socket.gethostname(), True),
    ("192.0.2.1", False),   # TEST-NET-1: documentation only, never this machine
    ("no-such-host.invalid", False)])
def test_a_rendezvous_host_is_this_machine_or_not(host, expected):
    from stages.lib.core import launcher

    assert launcher.is_this_machine(host) is expected
