"""The project's GPU check: what a machine with an NVIDIA GPU shows that CI cannot, offline, in
one command, within a time budget (docs/gpu.md).

    python3 -m tools.gpu_check --bundle build/gpu          # on the lent GPU machine
    python3 -m tools.gpu_check --mirror DIR                # a GPU machine with the project's venv
    python3 -m tools.gpu_check --bundle DIR --cpu --quick  # the rehearsal (tools/gpu_rehearsal.py)

Steps, each timed, the summary rewritten after each (a run killed at any point still leaves one):
  1. the machine: nvidia-smi, the Python and torch versions, CUDA usable (--cpu: not required)
  2. --bundle/--wheels: the bundle's wheels installed offline (pip --no-index --no-deps) into a
     temporary folder put on PYTHONPATH; then every module the check needs imported once
  3. the GPU tests (pytest -m gpu, the files that hold such tests; they skip without CUDA)
  4. in a copy of the checkout (its own git repo, or DVC without git where git is missing, and
     its own cache): `dvc repro --force --single-item` of each stage that needs no ImageNet
     weights (downloads, datasets, train@ and tsne@ of each model, transfer@ of each strategy
     from random weights), with `deterministic: true`; then train@simple_cnn once more and its
     model, metrics and confusion matrix compared byte for byte with the first run's
  5. OUT/gpu_check.md (and .json): time per step, accuracies, peak GPU memory, same bytes twice,
     what the bundle's data is

--budget SECONDS (default 450) is a hard stop: each step gets what is left; a step that runs
out is killed, the steps after it are listed as not run, and the summary is still written.
--quick applies smoke.yaml's overrides to the copy (a CPU rehearsal in minutes). --out: where
the summary and logs go ($OUT when set, else gpu_check/): at most 7 files, no folders, as the
device tool brings back. Exit status: 0 when every step passed, 1 when one failed, 2 for wrong
arguments.
"""
import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TWICE = "train@simple_cnn"
TWICE_FILES = ("models/simple_cnn.pt", "metrics/simple_cnn.json",
               "plots/simple_cnn/confusion.csv")
NEEDED = ("torch", "torchvision", "dvc", "dvclive", "sklearn", "matplotlib", "yaml", "pytest")
# not copied into the working copy: environments, caches, earlier results, the bundle
LEFT_OUT = {".venv", ".git", "gpu_check", "build", "shared", "smoke", "submission",
            "dvc_plots", ".pytest_cache", "data"}
STAGES = """
from stages.lib.core import params, registry
settings = params.load()
models, strategies = registry.models(settings), registry.strategies(settings)
datasets = dict.fromkeys([*models.values(), settings["transfer"]["dataset"]])
print(*[f"download@{d}" for d in datasets], "datasets", sep="\\n")
for model in models:
    print(f"train@{model}\\ntsne@{model}")
for strategy, start in strategies.items():
    if registry.STARTS[start] == "random":
        print(f"transfer@{strategy}")
"""


def usage_error(message):
    print(f"gpu_check: {message}", file=sys.stderr)
    sys.exit(2)


def arguments(argv):
    parser = argparse.ArgumentParser(prog="gpu_check", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, help="a folder made by tools/gpu_bundle.py")
    parser.add_argument("--wheels", type=Path, help="wheels to install (default: BUNDLE/wheels)")
    parser.add_argument("--no-install", action="store_true", help="use the packages the "
                        "interpreter has (no wheels installed)")
    parser.add_argument("--mirror", type=Path, help="the datasets mirror (default: "
                        "BUNDLE/mirror, else shared/datasets or ../shared/datasets)")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT") or
                                                         ROOT / "gpu_check"))
    parser.add_argument("--budget", type=float, default=450.0)
    parser.add_argument("--cpu", action="store_true", help="rehearsal: no GPU needed")
    parser.add_argument("--quick", action="store_true", help="smoke.yaml's overrides")
    parser.add_argument("--dry-run", action="store_true", help="say what would run")
    parser.error = usage_error
    args = parser.parse_args(argv)
    if args.budget <= 0:
        usage_error("--budget must be a positive number of seconds")
    if args.bundle and not (args.bundle / "bundle.json").is_file():
        usage_error(f"{args.bundle} is not a bundle (no bundle.json: make gpu-bundle)")
    if args.no_install:
        args.wheels = None
    elif args.wheels is None and args.bundle and (args.bundle / "wheels").is_dir():
        args.wheels = args.bundle / "wheels"
    if args.mirror is None:
        candidates = [args.bundle / "mirror"] if args.bundle else \
            [ROOT / "shared" / "datasets", ROOT.parent / "shared" / "datasets"]
        args.mirror = next((c for c in candidates if (c / "SHA256SUMS").is_file()), None)
        if args.mirror is None:
            usage_error("no datasets mirror: pass --mirror DIR (a folder with SHA256SUMS)")
    if not (args.mirror / "SHA256SUMS").is_file():
        usage_error(f"{args.mirror} is not a datasets mirror (no SHA256SUMS in it)")
    args.mirror = args.mirror.resolve()
    return args


class Check:
    """The steps' results, written to OUT after every step; the time budget they share."""

    def __init__(self, args):
        self.args, self.out = args, args.out
        self.deadline = time.monotonic() + args.budget
        self.steps = []          # {"step", "seconds", "status", "detail"}
        self.facts = {}          # machine, versions, peak memory, bundle
        self.accuracies = []
        self.sampler = None      # nvidia-smi sampling the GPU's memory
        self.env = dict(os.environ, DVC_NO_ANALYTICS="1", PYTHONUNBUFFERED="1",
                        DATASETS_MIRROR=str(args.mirror))
        self.env.setdefault("DATASETS_ACCEPT_UNVERIFIED", "cifar10")

    def left(self):
        return self.deadline - time.monotonic()

    def run(self, step, command, log, cwd=ROOT):
        """Run `command` (a list) as step `step`, its output appended to OUT/`log`, killed when
        the budget runs out. True when it exited 0."""
        if self.args.dry_run:
            print(f"would run{'' if cwd == ROOT else f' in {cwd}'}: {' '.join(map(str, command))}")
            return True
        if self.left() <= 1:
            self.record(step, 0, "not run", "out of time")
            return False
        start = time.monotonic()
        with open(self.out / log, "a") as f:
            f.write(f"\n$ {' '.join(map(str, command))}\n")
            f.flush()
            process = subprocess.Popen(command, cwd=cwd, env=self.env, stdout=f,
                                       stderr=subprocess.STDOUT, start_new_session=True)
            try:
                code = process.wait(timeout=self.left())
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
                code = None
        seconds = time.monotonic() - start
        status = "passed" if code == 0 else "out of time" if code is None else "failed"
        self.record(step, seconds, status, "" if code in (0, None) else
                    f"exit {code}: {log}, last line: {last_line(self.out / log)}")
        return code == 0

    def record(self, step, seconds, status, detail=""):
        self.steps.append({"step": step, "seconds": round(seconds, 1), "status": status,
                           "detail": detail})
        print(f"gpu_check: {step}: {status} ({seconds:.1f} s){f': {detail}' if detail else ''}",
              flush=True)
        self.write()

    def passed(self):
        return bool(self.steps) and all(s["status"] == "passed" for s in self.steps)

    def write(self):
        if self.args.dry_run:
            return
        summary = {"passed": self.passed(), **self.facts, "steps": self.steps,
                   "accuracies": self.accuracies}
        write_text(self.out / "gpu_check.json", json.dumps(summary, indent=1) + "\n")
        write_text(self.out / "gpu_check.md", markdown(summary))


def write_text(path, text):
    part = path.with_name(f".{path.name}.part")
    part.write_text(text)
    os.replace(part, path)


def last_line(path):
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    return lines[-1][:300] if lines else "(no output)"


def markdown(summary):
    lines = [f"# GPU check, {time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}", "",
             f"Result: **{'passed' if summary['passed'] else 'not passed'}**", ""]
    for key, value in summary.items():
        if key in ("passed", "steps", "accuracies"):
            continue
        lines += [f"- {key}:", *[f"  - {v}" for v in value]] if isinstance(value, list) else \
            [f"- {key}: {value}"]
    lines += ["", "| step | seconds | status |", "|---|---|---|"]
    lines += [f"| {s['step']} | {s['seconds']} | {s['status']}"
              f"{': ' + s['detail'] if s['detail'] else ''} |" for s in summary["steps"]]
    if summary["accuracies"]:
        lines += ["", "| stage | accuracy | best accuracy (epoch) | device, precision |",
                  "|---|---|---|---|"]
        lines += [f"| {a['stage']} | {a['accuracy']:.4f} | {a['best_accuracy']:.4f} "
                  f"({a['best_epoch']}) | {a['device']}, {a['precision']} |"
                  for a in summary["accuracies"]]
    return "\n".join(lines) + "\n"


def probe(check, code):
    """Run `code` in the checked interpreter (with the installed wheels): its stdout."""
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=check.env,
                            capture_output=True, text=True, timeout=max(check.left(), 1))
    if result.returncode != 0:
        raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip()
                           else f"exit {result.returncode}")
    return result.stdout.strip()


def machine(check):
    """Step 1: the GPU (nvidia-smi, a memory sampler started), Python and torch."""
    args = check.args
    check.facts["python"] = sys.version.split()[0]
    check.facts["params"] = "smoke.yaml's slice (--quick)" if args.quick else "params.yaml's"
    if args.cpu:
        check.facts["GPU"] = "none (--cpu: a rehearsal; the GPU tests skip)"
    elif args.dry_run:
        print("would run: nvidia-smi")
    else:
        if shutil.which("nvidia-smi") is None:
            check.record("machine", 0, "failed", "no nvidia-smi: this machine has no NVIDIA "
                         "driver")
            return False
        with open(args.out / "nvidia-smi.txt", "w") as f:
            subprocess.run(["nvidia-smi"], stdout=f, stderr=subprocess.STDOUT)
        check.facts["GPU"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total",
             "--format=csv,noheader"], capture_output=True, text=True).stdout.strip()
        check.sampler = subprocess.Popen(
            ["nvidia-smi", "--query-gpu=memory.used", "--format=csv,noheader,nounits",
             "-lms", "200"], stdout=open(args.out / "memory.log", "w"),
            stderr=subprocess.DEVNULL)
    if args.dry_run:
        return True
    try:
        check.facts["torch"] = probe(check, "import torch; print(torch.__version__, 'CUDA', "
                                            "torch.version.cuda, torch.cuda.is_available())")
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        check.record("machine", 0, "failed", f"python cannot import torch: {error}")
        return False
    if not args.cpu and not check.facts["torch"].endswith("True"):
        check.record("machine", 0, "failed", f"torch cannot use the GPU ({check.facts['torch']})")
        return False
    return True


def install(check, site):
    """Step 2: the wheels into `site` (offline), then every module the check needs imported."""
    args = check.args
    if args.wheels:
        wheels = sorted(str(p) for p in args.wheels.glob("*.whl"))
        if not wheels and not args.dry_run:
            check.record("install", 0, "failed", f"no wheels in {args.wheels}")
            return False
        if not check.run("install", [sys.executable, "-m", "pip", "install", "-q", "--no-index",
                                     "--no-deps", "--no-compile", "--no-cache-dir", "--target",
                                     str(site), *wheels], "install.log"):
            return False
        check.env["PYTHONPATH"] = os.pathsep.join(
            [str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    if args.dry_run:
        return True
    missing = probe(check, "import importlib.util; print(' '.join(m for m in "
                           f"{NEEDED!r} if importlib.util.find_spec(m) is None))")
    if missing:
        check.record("modules", 0, "failed", f"{sys.executable} lacks {missing} (install the "
                     "bundle's wheels: --bundle DIR, or requirements-test.lock)")
        return False
    return True


def gpu_tests(check):
    """Step 3: pytest -m gpu on the files that hold GPU tests (the others' imports, moto or
    WeasyPrint, are not on a GPU machine)."""
    files = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("test_*.py")
                   if "mark.gpu" in p.read_text())
    ok = check.run("GPU tests", [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p",
                                 "no:cacheprovider", *files], "tests.log")
    if not check.args.dry_run:
        check.facts["GPU tests"] = last_line(check.out / "tests.log")
    return ok


def copy_project(check, work):
    """Step 4's copy: the checkout without environments, caches and earlier results; its own
    git repo (or DVC without git); --quick: smoke.yaml's overrides written into its params."""
    if check.args.dry_run:
        return
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], cwd=ROOT, capture_output=True) \
        if shutil.which("git") and (ROOT / ".git").exists() else None
    if listed and listed.returncode == 0:   # what git would commit: no outputs, no caches
        for name in filter(None, listed.stdout.decode().split("\0")):
            if (ROOT / name).is_file() and Path(name).parts[0] not in LEFT_OUT:
                (work / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(ROOT / name, work / name)
    else:   # a copy without git (the device tool's): all but the outputs and caches
        shutil.copytree(ROOT, work, ignore=lambda folder, names: [
            n for n in names if Path(folder) == ROOT and n in LEFT_OUT
            or Path(folder) == ROOT / ".dvc" and n in ("cache", "tmp")])
    if check.args.quick:
        import yaml

        from tools.smoke import expand
        params = yaml.safe_load((work / "params.yaml").read_text())
        for key, value in expand(yaml.safe_load((ROOT / "smoke.yaml").read_text()),
                                 params).items():
            *parents, last = key.split(".")
            node = params
            for part in parents:
                node = node[part]
            node[last] = value
        (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    identity = {"GIT_AUTHOR_NAME": "gpu_check", "GIT_AUTHOR_EMAIL": "gpu_check@localhost",
                "GIT_COMMITTER_NAME": "gpu_check", "GIT_COMMITTER_EMAIL": "gpu_check@localhost"}
    if shutil.which("git"):
        for command in (["init", "-q"], ["add", "-A"], ["commit", "-q", "-m", "gpu_check"]):
            subprocess.run(["git", *command], cwd=work, check=True, capture_output=True,
                           env={**os.environ, **identity})
        check.facts["git"] = "yes"
    else:
        subprocess.run([sys.executable, "-m", "dvc", "config", "--local", "core.no_scm", "true"],
                       cwd=work, env=check.env, check=True, capture_output=True)
        check.facts["git"] = "not installed: DVC without git (core.no_scm)"


def pipeline(check, work):
    """Step 4: every weights-free stage forced, one at a time; TWICE rerun and compared."""
    args = check.args
    try:
        stages = probe(check, STAGES).split()
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        check.record("stages", 0, "failed", f"cannot list the stages: {error}")
        return False
    copy_project(check, work)
    for stage in stages:
        if not check.run(stage, [sys.executable, "-m", "dvc", "repro", "--force",
                                 "--single-item", stage], "repro.log", cwd=work):
            return False
    first = {f: (work / f).read_bytes() for f in TWICE_FILES} if not args.dry_run else {}
    if not check.run(f"{TWICE} again", [sys.executable, "-m", "dvc", "repro", "--force",
                                        "--single-item", TWICE], "repro.log", cwd=work):
        return False
    if args.dry_run:
        return True
    differ = [f for f in TWICE_FILES if (work / f).read_bytes() != first[f]]
    check.facts[f"{TWICE} twice, same bytes"] = "no: " + ", ".join(differ) if differ else \
        f"yes ({', '.join(TWICE_FILES)})"
    for stage in stages:
        kind, _, name = stage.partition("@")
        if kind in ("train", "transfer"):
            path = name if kind == "train" else f"transfer/{name}"
            metrics = json.loads((work / f"metrics/{path}.json").read_text())
            run = json.loads((work / f"models/{path}.run.json").read_text())
            check.accuracies.append({"stage": stage, "accuracy": metrics["accuracy"],
                                     "best_accuracy": metrics["best_accuracy"],
                                     "best_epoch": metrics["best_epoch"],
                                     "device": run["gpu"] or run["device"],
                                     "precision": run["precision"]})
    if differ:
        check.record("same bytes twice", 0, "failed", ", ".join(differ))
        return False
    check.write()
    return True


def main(argv=None):
    args = arguments(argv)
    check = Check(args)
    if not args.dry_run:
        args.out.mkdir(parents=True, exist_ok=True)
        args.out = args.out.resolve()
        for name in ("gpu_check.md", "gpu_check.json", "install.log", "tests.log", "repro.log",
                     "memory.log", "nvidia-smi.txt"):
            (args.out / name).unlink(missing_ok=True)
    if args.bundle:   # its data is not the releases': accepted unverified, and said so
        bundle = json.loads((args.bundle / "bundle.json").read_text())
        check.facts["bundle"] = bundle["data"]
        accepted = check.env["DATASETS_ACCEPT_UNVERIFIED"].split(",")
        check.env["DATASETS_ACCEPT_UNVERIFIED"] = ",".join(
            dict.fromkeys(filter(None, [*accepted, *bundle["accept_unverified"]])))
    # `python` for the stages' commands (dvc.yaml: `python -m stages...`): this interpreter
    scratch = Path(tempfile.mkdtemp(prefix="gpu_check."))
    shim = scratch / "bin" / "python"
    shim.parent.mkdir()
    shim.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    shim.chmod(0o755)
    check.env["PATH"] = f"{shim.parent}{os.pathsep}{check.env.get('PATH', '')}"
    signal.signal(signal.SIGTERM, lambda *_: (check.record("check", 0, "killed", "SIGTERM"),
                                              sys.exit(1)))
    print(f"gpu_check: mirror {args.mirror}, python {sys.executable}, summary "
          f"{args.out / 'gpu_check.md'}, budget {args.budget:.0f} s", flush=True)
    try:
        ok = machine(check) and install(check, scratch / "site")
        if ok:   # a failed GPU test does not stop the pipeline's check
            tests_ok = gpu_tests(check)
            ok = pipeline(check, scratch / "project") and tests_ok
    finally:
        if check.sampler:
            check.sampler.terminate()
            used = [int(v) for v in (args.out / "memory.log").read_text().split()
                    if v.isdigit()]
            check.facts["peak GPU memory in use"] = f"{max(used, default=0)} MiB (nvidia-smi " \
                                                    "every 200 ms)"
        check.write()
        shutil.rmtree(scratch, ignore_errors=True)
    if args.dry_run:
        print(f"would write: {args.out / 'gpu_check.md'}")
        return 0
    print((args.out / "gpu_check.md").read_text())
    return 0 if ok and check.passed() else 1


if __name__ == "__main__":
    sys.exit(main())
