"""The smoke run: the whole pipeline, report included, on a slice of the data (the overrides in
smoke.yaml), without touching the workspace's results.

    python tools/smoke.py                     # make smoke
    python tools/smoke.py --out DIR           # where its results go (default: smoke/)
    python tools/smoke.py --keep-experiment   # keep it as the DVC experiment `smoke`

How: `dvc exp run --temp -n smoke -S <key=value of smoke.yaml> ...`. Why that and not a second
params file or a copy of the project made here:
- `-S` overrides only the keys that make the run small; everything else is params.yaml's, so
  the smoke checks the params you have, and a key added to params.yaml needs no second copy.
- `--temp` is DVC's own isolation: it runs in a temporary clone (.dvc/tmp/exps/) of the last
  commit plus the workspace's uncommitted changes to git-tracked files, with the data checked
  out from the DVC cache. Files git does not track (a new module not yet `git add`ed) are not
  in that clone. The workspace's outputs, params.yaml and dvc.lock stay as they are; the cache
  gains the smoke's outputs, and DVC's run cache remembers its stages (a second smoke with the
  same code, data and params restores them instead of running them).
- Its git-tracked outputs (metrics, plots) are in the experiment's commit, from which they
  are copied to smoke/, with the report from DVC's cache. Then the experiment is removed:
  left in `dvc exp show`, the smoke's changed params and all its metrics would widen
  `--only-changed` for every sweep (one learning-rate sweep: from 11 columns to 52).
  `--keep-experiment` keeps it (`dvc exp apply smoke` then puts all of it, models included,
  in the workspace).
- In an experiment a failed stage fails the whole run (also with --keep-going: nothing is
  kept), so without ImageNet weights the stages that need them are left out of the targets
  up front, and named at the end. The exit status is 0 then too; non-zero only when a stage
  or DVC failed.
"""
import argparse
import io
import os
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
NAME = "smoke"
WEIGHTS_STAGE = "download@resnet50"
RESULTS = ["metrics", "plots", "params.yaml"]   # copied from the experiment's commit (git)
CACHED = ["reports"]                             # and from DVC's cache at that commit


def say(message):
    print(f"smoke: {message}", flush=True)


def fail(message, status=1):
    print(f"smoke: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def git(*args, check=True):
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    if check and result.returncode != 0:
        fail(f"git {' '.join(args)}: {result.stderr.strip()}")
    return result


def overrides(path):
    """smoke.yaml's `key: value` lines as `-S key=value` arguments; each key must be one of
    params.yaml's (a typo or a renamed key stops here, not after minutes of running)."""
    if not path.is_file():
        fail(f"{path} not found")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        fail(f"{path.name}: expected `key: value` lines")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    arguments = []
    for key, value in values.items():
        node = params
        for part in str(key).split("."):
            if not isinstance(node, dict) or part not in node:
                fail(f"{path.name}: '{key}' is not a key of params.yaml")
            node = node[part]
        if isinstance(value, (dict, list)) or isinstance(node, dict):
            fail(f"{path.name}: '{key}' must be a single value")
        text = "null" if value is None else str(value).lower() if isinstance(value, bool) \
            else str(value)
        arguments += ["-S", f"{key}={text}"]
    return arguments


def plan():
    """(every stage in dvc.yaml's order, the stages that need the ImageNet weights, the reason
    they cannot run here or None)."""
    import networkx as nx
    from dvc.repo import Repo

    with Repo(str(ROOT)) as repo:
        graph = repo.index.graph
        stages = {stage.addressing: stage for stage in repo.index.stages}
        weights = stages.get(WEIGHTS_STAGE)
        if weights is None:   # a pipeline without the ImageNet weights
            return list(stages), set(), None
        needs = {WEIGHTS_STAGE} | {stage.addressing for stage in nx.ancestors(graph, weights)}
        missing = weights_missing(repo, weights)
    return list(stages), needs, missing


def weights_missing(repo, stage):
    """Why the run cannot have the ImageNet weights, or None when it can: downloaded (no
    mirror), copied from the mirror, or already in the workspace and up to date."""
    mirror = os.environ.get("DATASETS_MIRROR")
    if not mirror:
        return None
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    try:
        from torchvision.models import ResNet50_Weights

        filename = Path(ResNet50_Weights[params["download"]["resnet50"]["weights"]].url).name
    except (KeyError, TypeError):
        return None   # bad params: the stage itself says what is wrong
    if (Path(mirror).expanduser() / "resnet50" / filename).is_file():
        return None
    if all(Path(out.fs_path).exists() for out in stage.outs) and \
            not repo.status(targets=[stage.addressing]):
        return None
    return f"the mirror {mirror} has no resnet50/{filename}"


def copy_results(rev, out):
    """The experiment's results into `out`: what git tracks (metrics, plots, params) from its
    commit, and the report, a DVC output, from the cache as that commit's dvc.lock names it."""
    from dvc.api import DVCFileSystem

    present = set(git("ls-tree", "--name-only", rev).stdout.split())
    names = [name for name in RESULTS if name in present]
    archive = subprocess.run(["git", "archive", "--format=tar", rev, "--", *names], cwd=ROOT,
                             capture_output=True, check=True).stdout
    out.mkdir(parents=True, exist_ok=True)
    for name in RESULTS + CACHED:
        path = out / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        elif path.exists() or path.is_symlink():
            path.unlink()
    with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
        tar.extractall(out, filter="data")
    fs = DVCFileSystem(str(ROOT), rev=rev)
    for name in CACHED:
        if fs.exists(name):
            fs.get(name, str(out / name), recursive=True)


# Who DVC's experiment commits name when git knows nobody (a fresh Colab runtime, a new
# container): set through git's own variables for the commands this script runs, never
# written to any git config. Both of DVC's git backends read them (pygit2's would otherwise
# stop with "Git user name and email must be configured").
FALLBACK_IDENTITY = {"GIT_AUTHOR_NAME": "DVC experiment", "GIT_AUTHOR_EMAIL": "dvc@localhost",
                     "GIT_COMMITTER_NAME": "DVC experiment",
                     "GIT_COMMITTER_EMAIL": "dvc@localhost"}


def with_git_identity(env, cwd=ROOT):
    """`env`, plus FALLBACK_IDENTITY's variables that neither `env` nor git's configuration
    (user.name, user.email) provides."""
    env = dict(env)
    configured = {key: subprocess.run(["git", "config", "--get", f"user.{key}"], cwd=cwd,
                                      env=env, capture_output=True, text=True).stdout.strip()
                  for key in ("name", "email")}
    for variable, value in FALLBACK_IDENTITY.items():
        key = variable.rsplit("_", 1)[1].lower()
        if not env.get(variable) and not configured[key]:
            env[variable] = value
    return env


def duration(seconds):
    minutes, seconds = divmod(round(seconds), 60)
    return f"{minutes} min {seconds:02d} s" if minutes else f"{seconds} s"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / NAME,
                        help="folder for the smoke's metrics, plots and report (default: smoke/)")
    parser.add_argument("--overrides", type=Path, default=ROOT / "smoke.yaml",
                        help="the params that make the run small (default: smoke.yaml)")
    parser.add_argument("--keep-experiment", action="store_true",
                        help=f"keep the run as the DVC experiment '{NAME}' (dvc exp show/apply)")
    args = parser.parse_args(argv)
    out, sets = args.out.resolve(), overrides(args.overrides.resolve())
    shown = os.path.relpath(out)
    if os.environ.get("DATASETS_MIRROR"):   # the experiment runs in another folder
        os.environ["DATASETS_MIRROR"] = str(Path(os.environ["DATASETS_MIRROR"]).expanduser()
                                            .resolve())
    os.chdir(ROOT)   # DVC names stages relative to the current folder
    env = with_git_identity(os.environ)   # the experiment is a commit
    # the `python` in dvc.yaml's commands is this one
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"

    head = git("rev-parse", "--verify", "--quiet", "HEAD", check=False).stdout.strip()
    if not head:
        fail("the project has no commit yet: dvc exp run needs one (git commit first)")

    stages, needs, missing = plan()
    targets = [stage for stage in stages if stage not in needs] if missing else []
    untracked = git("ls-files", "--others", "--exclude-standard").stdout.split()
    if untracked:
        listed = ", ".join(untracked[:5]) + (", ..." if len(untracked) > 5 else "")
        say(f"not in the run (git does not track them; `git add` to include): {listed}")

    ref = f"refs/exps/{head[:2]}/{head[2:]}/{NAME}"
    remove_experiment(ref, env)   # the last smoke of this commit, kept with --keep-experiment
    command = [sys.executable, "-m", "dvc", "exp", "run", "--temp", "-n", NAME, *sets, *targets]
    say(" ".join(["dvc", *command[3:]]))
    start = time.monotonic()
    status = subprocess.run(command, cwd=ROOT, env=env).returncode
    took = duration(time.monotonic() - start)
    if status != 0:
        fail(f"dvc exp run failed after {took} (status {status}); the workspace is as it was",
             status)

    copy_results(git("rev-parse", ref).stdout.strip(), out)
    if not args.keep_experiment:
        remove_experiment(ref, env)
    kept = f"kept as experiment '{NAME}'" if args.keep_experiment else \
        "experiment removed: --keep-experiment keeps it"
    if missing:
        say(f"{len(targets)} of {len(stages)} stages in {took}; their metrics and plots in "
            f"{shown}/ ({kept})")
        say(f"skipped {', '.join(s for s in stages if s in needs)}: they need the ImageNet "
            f"weights, and {missing} (README: Offline mirror)")
    else:
        say(f"all {len(stages)} stages in {took}; their metrics, plots and report in {shown}/ "
            f"({kept})")
        say(f"the report: {os.path.join(shown, 'reports', 'report.html')}")


def remove_experiment(ref, env):
    if git("show-ref", "--verify", "--quiet", ref, check=False).returncode == 0:
        subprocess.run([sys.executable, "-m", "dvc", "exp", "remove", ref], cwd=ROOT, env=env,
                       check=True, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
