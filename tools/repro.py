"""`make repro`: `dvc repro`, the whole practical, or all of it that can run here.

    python -m tools.repro [dvc repro options] [targets]     # make repro (REPRO_FLAGS=...)

Without targets and without a way to get the ImageNet weights (an offline mirror that lacks
them), the stages that need them are left out up front (plan.py) and named in the last line,
as `make smoke` does: `dvc repro` alone would stop at download@resnet50 with the rest of the
practical not run. Given targets, it is `dvc repro` with them, unchanged. The exit status is
DVC's. params.yaml is read the way the stages read it first: a file DVC would spend minutes on
(too large, an alias bomb, not UTF-8) or a value no stage accepts (`report.language: fr`)
stops here, in one line, before DVC parses it or any training starts. After DVC, every output
in the workspace must have its objects in DVC's cache (check_cache.unsaved): DVC reports a save
that failed on a full disk as a warning and exits 0, and its next run would delete the only
copy."""
import subprocess
import sys
import time

from stages.lib.core import params
from stages.lib.core.common import StageError
from tools.check_cache import unsaved
from tools.plan import ROOT, plan


def main(argv):
    try:
        params.load(ROOT / "params.yaml")
    except StageError as error:
        print(f"repro: error: {error}", file=sys.stderr)
        return 1
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
    from dvc.repo import Repo

    lost = unsaved(Repo(str(ROOT)))
    for output, objects in lost:
        print(f"repro: error: {output} is in the workspace but {len(objects)} of its objects "
              "are not in DVC's cache (a save that failed: disk full?): the workspace copy is "
              "the only one; free some space and run `dvc commit`", file=sys.stderr)
    if lost:
        return 1
    if todo and todo.missing:
        print(f"repro: {len(todo.runnable)} of {len(todo.stages)} stages up to date "
              f"({minutes:.1f} min)")
        print(f"repro: {todo.skipped_line()}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
