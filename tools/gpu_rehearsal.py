"""The GPU check rehearsed here, on the CPU, as the lent GPU machine will run it: everything but
CUDA (docs/gpu.md).

    python -m tools.gpu_rehearsal                    # make gpu-rehearsal (needs PyPI once)
    python -m tools.gpu_rehearsal --link-packages    # offline: no wheels installed

1. A stand-in for the machine's interpreter: a fresh virtual environment of this Python that
   holds only the packages of the machine's image (tools/gpu_machine.txt) this environment has,
   linked from it, nothing else.
2. The bundle's wheels installed into it offline, as the check installs them there (pip
   --no-index --no-deps --target). A compiled wheel made for the machine's Python that this
   Python cannot load is replaced by the same version's wheel for this one (downloaded once),
   the only difference from the machine. --link-packages links the bundle's packages from this
   environment instead (no network; what the test suite runs): the package list is proven,
   the install is not.
3. python -m tools.gpu_check --bundle DIR --cpu --quick with the stand-in, from the checkout's
   root: its summary must say passed.

Exit status 0 when the check passed; the summary is in --out (build/gpu-rehearsal/).
"""
import argparse
import importlib.metadata as metadata
import json
import os
import shutil
import subprocess
import sys
import venv
from pathlib import Path

from packaging.tags import sys_tags
from packaging.utils import canonicalize_name, parse_wheel_filename

from tools.gpu_bundle import machine_packages

ROOT = Path(__file__).resolve().parents[1]


def say(message):
    print(f"gpu_rehearsal: {message}", flush=True)


def fail(message):
    print(f"gpu_rehearsal: error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def stand_in(folder, names):
    """A virtual environment at `folder` whose site-packages holds links to the installed
    distributions `names` (canonical names) of this environment, and nothing else. Its python."""
    shutil.rmtree(folder, ignore_errors=True)
    venv.create(folder, with_pip=False, symlinks=True)
    python = folder / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path("
                                "'purelib'))"], capture_output=True, text=True,
                               check=True).stdout.strip())
    linked = set()
    for dist in metadata.distributions():
        if canonicalize_name(dist.metadata["Name"]) not in names:
            continue
        base = Path(dist.locate_file(""))
        for top in {Path(str(f)).parts[0] for f in dist.files or []}:
            if top in ("..", "__pycache__") or top.endswith(".pth") or top in linked:
                continue
            if (base / top).exists():
                (site / top).symlink_to(base / top)
                linked.add(top)
    return python


def loadable(wheel):
    tags = set(sys_tags())
    return any(tag in tags for tag in parse_wheel_filename(wheel.name)[3])


def rehearsal_wheels(bundle, folder):
    """The bundle's wheels this Python can load, and for each it cannot, the same version's
    wheel for this Python (downloaded into folder/local/ once): links in folder/wheels/."""
    local, wheels = folder / "local", folder / "wheels"
    shutil.rmtree(wheels, ignore_errors=True)
    wheels.mkdir(parents=True)
    local.mkdir(exist_ok=True)
    replaced = []
    for wheel in sorted((bundle / "wheels").glob("*.whl")):
        if loadable(wheel):
            (wheels / wheel.name).symlink_to(wheel.resolve())
            continue
        name, version, *_ = parse_wheel_filename(wheel.name)
        mine = [w for w in local.glob("*.whl") if parse_wheel_filename(w.name)[:2] ==
                (name, version) and loadable(w)]
        if not mine:
            got = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                                  "--only-binary=:all:", "-d", str(local),
                                  f"{name}=={version}"], capture_output=True, text=True)
            mine = [w for w in local.glob("*.whl") if parse_wheel_filename(w.name)[:2] ==
                    (name, version) and loadable(w)]
            if got.returncode != 0 or not mine:
                fail(f"no wheel of {name}=={version} for this Python to stand in for "
                     f"{wheel.name} (offline? --link-packages rehearses without wheels)")
        (wheels / mine[0].name).symlink_to(mine[0].resolve())
        replaced.append(f"{wheel.name} -> {mine[0].name}")
    return wheels, replaced


def main(argv=None):
    parser = argparse.ArgumentParser(prog="gpu_rehearsal", description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundle", type=Path, default=ROOT / "build" / "gpu")
    parser.add_argument("--out", type=Path, default=ROOT / "build" / "gpu-rehearsal")
    parser.add_argument("--link-packages", action="store_true")
    parser.add_argument("--budget", type=float, default=900.0)
    args = parser.parse_args(argv)
    if not (args.bundle / "bundle.json").is_file():
        fail(f"{args.bundle} is not a bundle (no bundle.json): make gpu-bundle first")
    carried = set(json.loads((args.bundle / "bundle.json").read_text())["packages"])
    names = machine_packages() | (carried if args.link_packages else set())
    python = stand_in(args.out / "standin", names)
    say(f"stand-in interpreter {python}: this environment's packages of the GPU machine's "
        f"image{' and the bundle' if args.link_packages else ''}, linked")
    check = [str(python), "-m", "tools.gpu_check", "--bundle", str(args.bundle),
             "--cpu", "--quick", "--budget", str(args.budget), "--out", str(args.out / "out")]
    if args.link_packages:
        check.append("--no-install")
    else:
        wheels, replaced = rehearsal_wheels(args.bundle, args.out)
        check += ["--wheels", str(wheels)]
        for line in replaced:
            say(f"stands in for a wheel of the machine's Python: {line}")
    env = {k: v for k, v in os.environ.items()
           if k not in ("VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME", "OUT")}
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p != venv_bin)
    result = subprocess.run(check, cwd=ROOT, env=env)
    summary = args.out / "out" / "gpu_check.md"
    if result.returncode != 0:
        fail(f"the check did not pass on the stand-in (exit {result.returncode}); {summary}")
    say(f"passed; summary {summary}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
