"""`make repro`: `dvc repro`, the whole practical, or all of it that can run here.

    python tools/repro.py [dvc repro options] [targets]     # make repro (REPRO_FLAGS=...)

Without targets and without a way to get the ImageNet weights (an offline mirror that lacks
them), the stages that need them are left out up front (plan.py) and named in the last line,
as `make smoke` does: `dvc repro` alone would stop at download@resnet50 with the rest of the
practical not run. Given targets, it is `dvc repro` with them, unchanged. The exit status is
DVC's."""
import subprocess
import sys
import time

from plan import ROOT, plan


def main(argv):
    targets = [arg for arg in argv if not arg.startswith("-")]
    todo = None if targets else plan(ROOT)
    extra = todo.runnable if todo and todo.missing else []
    command = [sys.executable, "-m", "dvc", "repro", *argv, *extra]
    print(f"repro: dvc {' '.join(command[3:])}", flush=True)
    start = time.monotonic()
    status = subprocess.run(command, cwd=ROOT).returncode
    minutes = (time.monotonic() - start) / 60
    if status != 0:
        print(f"repro: error: dvc repro failed after {minutes:.1f} min (status {status}); "
              "`make restore` brings the last commit's results back", file=sys.stderr)
        return status
    if todo and todo.missing:
        print(f"repro: {len(todo.runnable)} of {len(todo.stages)} stages up to date "
              f"({minutes:.1f} min)")
        print(f"repro: {todo.skipped_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
