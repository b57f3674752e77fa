"""Many experiments at once: `dvc exp run --queue` a two-point sweep of `simple_cnn.lr`, run it
with `OMP_NUM_THREADS=<cores / 2> dvc queue start -j 2` (1 thread each on 2 cores), compare with
`dvc exp show`, keep the best with `dvc exp apply` and `dvc exp branch` (as in the README).

The queued experiments run in temporary copies of the repo (.dvc/tmp/exps/), which hold only
what git and DVC track: the data comes from the DVC cache (download@mnist ran and was committed
first) and DATASETS_MIRROR is absolute. Only train@simple_cnn is queued, with 1 epoch on the
tiny mirror, so that each experiment takes seconds. Every process the queue starts carries a
tag in its environment; whatever the test's outcome, the workers are stopped through DVC and
any tagged process left is ended by its pid."""
import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
import uuid

import psutil
import pytest
from small_pipeline import dvc, make

from helpers import run, run_tool, stage_env

pytestmark = pytest.mark.e2e

SWEEP = (0.003, 0.0003)  # simple_cnn.lr of the two queued experiments (the baseline: 0.001)
JOBS = 2
TAG = "QUEUE_TEST_TAG"
LIVE = "plots/simple_cnn/live/plots/metrics"  # dvclive's curves
# what the README shows: the columns that matter, readable at 200 columns
SHOW = ["exp", "show", "--no-pager", "--drop", ".*", "--keep",
        r"Experiment|simple_cnn\.lr|(metrics/simple_cnn\.json:)?(best_accuracy|best_epoch)"]


def tagged(tag):
    """The processes (workers, executors, stages) whose environment carries this run's tag."""
    found = []
    for proc in psutil.process_iter():
        try:
            if proc.pid != os.getpid() and proc.environ().get(TAG) == tag:
                found.append(proc)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass
    return found


def end_tagged(tag, grace=20.0):
    """Wait up to `grace` s for the tagged processes to exit, then end them by pid."""
    deadline = time.monotonic() + grace
    while (left := tagged(tag)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for proc in left:
            try:
                proc.send_signal(sig)
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(left, timeout=5)
        left = tagged(tag)
    return left


def queue_tasks(project, env):
    """{task name: status} from `dvc queue status`."""
    out = dvc(project, "queue", "status", env=env).stdout
    tasks = {}
    for line in out.splitlines()[1:]:
        if not line.strip() or line.startswith("Worker status"):
            break
        fields = line.split()
        tasks[fields[1]] = fields[-1]
    return tasks


def threads_per_job():
    return max(1, len(os.sched_getaffinity(0)) // JOBS)


def start_queue(project, env, jobs, threads):
    """`OMP_NUM_THREADS=<threads> dvc queue start -j <jobs>`; its output and when it started.
    Its output goes to a file: the workers it spawns keep that stream open, and a pipe would
    hold the call until they exit."""
    log = project.parent / "queue-start.log"
    with open(log, "w") as out:
        start = time.monotonic()
        subprocess.run([sys.executable, "-m", "dvc", "queue", "start", "-j", str(jobs)],
                       cwd=project, env=dict(env, OMP_NUM_THREADS=str(threads)),
                       stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                       check=True, timeout=120)
    return log.read_text(), start


CELERY = ".dvc/tmp/exps/celery"   # DVC's queue: celery with a broker and results in files
RUN_EXP = "dvc.repo.experiments.queue.tasks.run_exp"   # the task of one queued experiment
DONE = ("SUCCESS", "FAILURE", "REVOKED")   # celery's ready states: DVC's Success and Failed


def read_json(path):
    """The JSON in `path`, or None while it is not there or half written."""
    try:
        return json.loads(path.read_text())
    except (FileNotFoundError, ValueError):
        return None


def task_states(project):
    """{celery task id: state} of the queue's experiments, from the queue's own files, as
    `dvc queue status` finds them (the broker's messages of run_exp tasks, queued in broker/in,
    taken by a worker in broker/processed; a task's state in result/ once it is done: None
    before), without its broadcast to the workers through the broker they poll."""
    states = {}
    for folder in ("in", "processed"):
        for path in (project / CELERY / "broker" / folder).glob("*.msg"):
            headers = (read_json(path) or {}).get("headers", {})
            if headers.get("task") == RUN_EXP:
                meta = read_json(project / CELERY / "result" / f"celery-task-meta-{headers['id']}")
                states[headers["id"]] = (meta or {}).get("status")
    return states


def worker_exits(project):
    """The exit status of each worker `dvc queue start -j JOBS` spawned, as DVC's process
    manager records it (dvc-exp-worker-<n>.json, written once the worker runs and again once it
    has exited): None while it is starting or running."""
    return [(read_json(project / CELERY / f"dvc-exp-worker-{n}.json") or {}).get("returncode")
            for n in range(1, JOBS + 1)]


def celery_logs(project):
    return "\n".join(f"--- {path.name}\n{path.read_text()}"
                     for path in sorted((project / CELERY).glob("*.out")))


def wait_until(condition, timeout, what, details=lambda: ""):
    """Poll `condition` until it holds; fail after `timeout` s naming `what`."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not within {timeout} s\n{details()}")
        time.sleep(0.2)


def wait_for_queue(project, count, start, timeout=300):
    """Until the `count` queued experiments are done, by the queue's own state (task_states):
    the seconds from `start`. The workers are started once: should they all exit while an
    experiment is not done, nothing would ever run it, and the test fails there with their
    logs (not waiting for its timeout, nor starting them again)."""
    def done():
        exits = worker_exits(project)   # first: a worker stores its results before it exits
        states = task_states(project)
        finished = len(states) == count and all(s in DONE for s in states.values())
        if not finished and None not in exits:
            raise AssertionError(f"the queue's workers exited ({exits}) with experiments not "
                                 f"done: {states}\n{celery_logs(project)}")
        return finished

    wait_until(done, timeout, f"{count} experiments done",
               lambda: f"{task_states(project)}\n{celery_logs(project)}")
    return time.monotonic() - start


def stop_queue(project, env):
    """`dvc queue stop` (idle workers exit now), and wait until every worker has exited."""
    dvc(project, "queue", "stop", env=env, check=False)
    wait_until(lambda: None not in worker_exits(project), 60, "the workers' exit",
               lambda: celery_logs(project))


def experiments(project, env):
    """[(name, rev, params, metrics)] of the experiments of HEAD, from `dvc exp show --json`."""
    shown = json.loads(dvc(project, "exp", "show", "--json", env=env).stdout)
    found = []
    for baseline in shown:
        for exp in baseline.get("experiments") or ():
            rev = exp["revs"][0]
            data = rev["data"]
            found.append((rev["name"], rev["rev"],
                          data["params"]["params.yaml"]["data"]["simple_cnn"],
                          data["metrics"]["metrics/simple_cnn.json"]["data"]))
    return found


def without_nulls(metrics):
    """What `dvc exp show --json` reports of a metrics file: null values left out."""
    return {k: without_nulls(v) if isinstance(v, dict) else v for k, v in metrics.items()
            if v is not None}


def git_show(project, env, rev, path):
    return run(["git", "show", f"{rev}:{path}"], project, env).stdout


def git_json(project, env, rev, path):
    return json.loads(git_show(project, env, rev, path))


@pytest.fixture(scope="module")
def queued(tmp_path_factory, mirror):
    tag = uuid.uuid4().hex
    env = stage_env(mirror.resolve(), **{TAG: tag})
    project = make(tmp_path_factory.mktemp("queue") / "project", env)
    dvc(project, "repro", "train@simple_cnn", env=env)  # the data the experiments start from
    run(["git", "add", "-A"], project, env)
    run(["git", "commit", "-q", "-m", "baseline"], project, env)
    lrs = ",".join(str(lr) for lr in SWEEP)
    dvc(project, "exp", "run", "--queue", "-S", f"simple_cnn.lr={lrs}", "train@simple_cnn",
        env=env)
    try:
        queued = queue_tasks(project, env)
        started, start = start_queue(project, env, JOBS, threads_per_job())
        seconds = wait_for_queue(project, len(queued), start)
        stop_queue(project, env)
        # DVC's own account, once no worker is left for its broadcast to reach
        tasks = queue_tasks(project, env)
        logs = {name: dvc(project, "queue", "logs", name, env=env, check=False).stdout
                for name, status in tasks.items() if status != "Success"}
        yield project, env, queued, started, tasks, logs, seconds
    finally:
        dvc(project, "queue", "stop", "--kill", env=env, check=False)
        left = end_tagged(tag)
        assert not left, f"processes left behind: {left}"


def test_both_experiments_succeed_in_parallel_jobs(queued):
    project, env, before, started, tasks, logs, seconds = queued
    assert len(before) == 2 and set(before.values()) == {"Queued"}
    assert f"Started '{JOBS}' new experiments task queue workers" in started
    assert set(tasks) == set(before)
    assert set(tasks.values()) == {"Success"}, logs
    print(f"\nqueue -j {JOBS}: two experiments in {seconds:.1f} s")


def test_each_job_ran_with_its_share_of_the_cores(queued):
    project, env, *_ = queued
    threads = threads_per_job()
    for name, rev, params, _ in experiments(project, env):
        record = git_json(project, env, rev, "models/simple_cnn.run.json")
        assert record["cpu_threads"] == threads, (name, record["cpu_threads"])
        assert record["params"]["lr"] == params["lr"]


def test_results_are_separate(queued):
    project, env, *_ = queued
    found = experiments(project, env)
    assert sorted(params["lr"] for _, _, params, _ in found) == sorted(SWEEP)
    curves = []
    for _, rev, _, metrics in found:
        # each experiment's commit holds its own params, metrics and curves
        assert without_nulls(git_json(project, env, rev, "metrics/simple_cnn.json")) == metrics
        val = git_show(project, env, rev, f"{LIVE}/val/accuracy.tsv").splitlines()
        assert float(val[-1].split("\t")[1]) == metrics["accuracy"]
        curves.append(git_show(project, env, rev, f"{LIVE}/train/loss.tsv"))
    assert curves[0] != curves[1]  # two learning rates, two trainings
    # the workspace is untouched: the baseline's lr and metrics
    assert "lr: 0.001" in (project / "params.yaml").read_text()
    assert run(["git", "status", "--porcelain"], project, env).stdout == ""


def test_exp_show_fits_in_200_columns(queued):
    project, env, *_ = queued
    table = dvc(project, *SHOW, env=dict(env, COLUMNS="200")).stdout
    lines = table.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 200
    header = next(line for line in lines if "Experiment" in line)
    assert "best_accuracy" in header and "simple_cnn.lr" in header
    assert "…" not in table  # nothing cut
    for name, _, params, metrics in experiments(project, env):
        row = next(line for line in lines if f"[{name}]" in line)
        assert str(params["lr"]) in row and str(metrics["best_accuracy"]) in row
    rows = list(csv.DictReader(io.StringIO(dvc(project, "exp", "show", "--csv", env=env).stdout)))
    assert {row["Experiment"] for row in rows} >= {name for name, *_ in experiments(project, env)}


def test_make_exps_shows_the_changed_param_first_in_120_columns(queued):
    """tools/exps.py (make exps): DVC's table reduced to what tells the experiments apart,
    `simple_cnn.lr` first with its header on two lines, short metric names, no pager."""
    project, env, *_ = queued
    shown = run_tool("exps", cwd=project, env=env).stdout
    lines = shown.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= 120 and "…" not in shown, shown
    first, second = (line.split() for line in lines[1:3])
    assert first[0] == "simple_cnn." and second[:2] == ["Experiment", "lr"], shown
    assert "simple_cnn" in first and "acc" in second   # the metric, named short
    assert "metrics/" not in shown and "Created" not in shown and "tsne" not in shown
    for name, _, params, metrics in experiments(project, env):
        row = next(line for line in lines if f"[{name}]" in line)
        assert row.split()[3] == str(params["lr"]) and str(metrics["accuracy"]) in row


def test_apply_and_branch_the_best_then_reproduce_it(queued):
    project, env, *_ = queued
    found = experiments(project, env)
    name, rev, params, metrics = max(found, key=lambda e: (e[3]["best_accuracy"], e[0]))
    dvc(project, "exp", "branch", name, "best-lr", env=env)
    assert f"lr: {params['lr']}" in run(["git", "show", "best-lr:params.yaml"], project,
                                        env).stdout
    dvc(project, "exp", "apply", name, env=env)
    assert f"lr: {params['lr']}" in (project / "params.yaml").read_text()
    applied = json.loads((project / "metrics/simple_cnn.json").read_text())
    assert without_nulls(applied) == metrics
    assert (project / "models/simple_cnn.pt").exists()  # checked out from the shared cache
    # the queued result is the one a plain run with the same params and threads gives
    dvc(project, "repro", "--force", "--single-item", "train@simple_cnn",
        env=dict(env, OMP_NUM_THREADS=str(threads_per_job())))
    assert json.loads((project / "metrics/simple_cnn.json").read_text()) == applied
