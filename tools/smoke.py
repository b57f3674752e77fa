"""The smoke run: the whole pipeline, report included, on a slice of the data (the overrides in
smoke.yaml), without touching the workspace's results.

    python -m tools.smoke                     # make smoke
    python -m tools.smoke --out DIR           # where its results go (default: smoke/)
    python -m tools.smoke --keep-experiment   # keep it as the DVC experiment `smoke`

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
- What the experiment produced is copied to smoke/: the outputs of the stages it ran that
  hold results (metrics/, plots/, reports/: not data or models), the git-tracked ones from
  the experiment's commit, the cached ones (the report) from DVC's cache at that commit, with
  the params it ran with. Nothing else: the commit also holds the workspace's results of the
  stages it did not run, which are not the smoke's. smoke/ is built beside and swapped in
  whole. Then the experiment is removed, also when the run or the copy failed: left in
  `dvc exp show`, the smoke's changed params and all its metrics would widen
  `--only-changed` for every sweep (one learning-rate sweep: from 11 columns to 52).
  `--keep-experiment` keeps a finished one (`dvc exp apply smoke` then puts all of it, models
  included, in the workspace).
- In an experiment a failed stage fails the whole run (also with --keep-going: nothing is
  kept), so without ImageNet weights the stages that need them are left out of the targets
  up front (plan.py), and named at the end. The exit status is 0 then too; non-zero only when
  a stage, DVC or the copy failed, with one `smoke: error:` line.
"""
import argparse
import io
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import yaml

from stages.lib.core.files import staged_folder
from tools.plan import plan

ROOT = Path(__file__).resolve().parents[1]
NAME = "smoke"
RESULTS = {"metrics", "plots", "reports"}   # the folders of outputs copied to smoke/ (not data)


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


PLACEHOLDERS = {"<model>": "models", "<strategy>": "strategies"}   # params.yaml's lists


def expand(values, params):
    """smoke.yaml's keys with `<model>` or `<strategy>` written out for each entry of
    params.yaml's `models` or `strategies` (a model added there is cut short too), in order."""
    out = {}
    for key, value in values.items():
        keys = [str(key)]
        for placeholder, section in PLACEHOLDERS.items():
            names = params.get(section) if isinstance(params.get(section), dict) else {}
            keys = [k.replace(placeholder, name) for k in keys for name in names] \
                if any(placeholder in k for k in keys) else keys
        out.update(dict.fromkeys(keys, value))
    return out


def overrides(path):
    """smoke.yaml's `key: value` lines as `-S key=value` arguments (expand's keys); each key
    must be one of params.yaml's (a typo or a renamed key stops here, not after minutes of
    running)."""
    if not path.is_file():
        fail(f"{path} not found")
    values = yaml.safe_load(path.read_text()) or {}
    if not isinstance(values, dict):
        fail(f"{path.name}: expected `key: value` lines")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    arguments = []
    for key, value in expand(values, params).items():
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


def results(plan_, ran):
    """(git-tracked, cached) output paths of the stages in `ran` that hold results."""
    tracked, cached = [], []
    for stage in ran:
        for path, use_cache in plan_.outs[stage]:
            if path.split("/")[0] in RESULTS:
                (cached if use_cache else tracked).append(path)
    return tracked, cached


def copy_results(rev, out, tracked, cached):
    """The experiment's results into `out`, whole or not at all: `tracked` paths and
    params.yaml from its commit, `cached` ones from DVC's cache as that commit's dvc.lock
    names them. Built in a folder beside `out`, then swapped in."""
    from dvc.api import DVCFileSystem

    present = set(git("ls-tree", "-r", "--name-only", rev, "--", *tracked, "params.yaml")
                  .stdout.split())
    absent = [path for path in tracked
              if path not in present and not any(p.startswith(path + "/") for p in present)]
    if absent:
        raise LookupError(f"the experiment's commit lacks {', '.join(absent)}")
    archive = subprocess.run(["git", "archive", "--format=tar", rev, "--", *tracked,
                              "params.yaml"], cwd=ROOT, capture_output=True, check=True).stdout
    with staged_folder(out) as part:   # the smoke's folder written whole
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(part, filter="data")
        fs = DVCFileSystem(str(ROOT), rev=rev)
        for path in cached:
            try:
                fs.get(path, str(part / path), recursive=True)
            except FileNotFoundError:
                raise LookupError(f"{path} of the experiment is not in DVC's cache") from None


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

    todo = plan()
    untracked = git("ls-files", "--others", "--exclude-standard").stdout.split()
    if untracked:
        listed = ", ".join(untracked[:5]) + (", ..." if len(untracked) > 5 else "")
        say(f"not in the run (git does not track them; `git add` to include): {listed}")

    ref = f"refs/exps/{head[:2]}/{head[2:]}/{NAME}"
    remove_experiment(ref, env)   # the last smoke of this commit, kept with --keep-experiment
    targets = todo.runnable if todo.missing else []   # none: the whole graph
    command = [sys.executable, "-m", "dvc", "exp", "run", "--temp", "-n", NAME, *sets, *targets]
    say(" ".join(["dvc", *command[3:]]))
    start = time.monotonic()
    keep = False
    try:
        status = subprocess.run(command, cwd=ROOT, env=env).returncode
        took = duration(time.monotonic() - start)
        if status != 0:
            fail(f"dvc exp run failed after {took} (status {status}); the workspace is as it "
                 "was", status)
        rev = git("rev-parse", "--verify", "--quiet", ref, check=False).stdout.strip()
        if not rev:
            fail(f"dvc exp run finished but left no experiment '{NAME}' to copy from")
        try:
            copy_results(rev, out, *results(todo, todo.runnable))
        except (LookupError, OSError, subprocess.CalledProcessError) as error:
            fail(f"copying the results to {shown}/: {error}; {shown}/ is as it was")
        keep = args.keep_experiment
    finally:
        if not keep:
            remove_experiment(ref, env)
    kept = f"kept as experiment '{NAME}'" if keep else \
        "experiment removed: --keep-experiment keeps it"
    if todo.missing:
        say(f"{len(todo.runnable)} of {len(todo.stages)} stages in {took}; their metrics and "
            f"plots in {shown}/ ({kept})")
        say(todo.skipped_line())
    else:
        say(f"all {len(todo.stages)} stages in {took}; their metrics, plots and report in "
            f"{shown}/ ({kept})")
        say(f"the report: {os.path.join(shown, 'reports', 'report.html')}")


def remove_experiment(ref, env):
    if git("show-ref", "--verify", "--quiet", ref, check=False).returncode == 0:
        done = subprocess.run([sys.executable, "-m", "dvc", "exp", "remove", ref], cwd=ROOT,
                              env=env, capture_output=True, text=True)
        if done.returncode != 0:
            fail(f"dvc exp remove {ref}: {done.stderr.strip() or done.stdout.strip()}")


if __name__ == "__main__":
    main()
