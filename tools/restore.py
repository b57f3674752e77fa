"""Back to the last commit's results after a failed `dvc exp run` or `dvc repro`.

    python -m tools.restore      # make restore

DVC deletes a stage's outputs before it runs the stage; when the run fails, they stay deleted,
and `dvc exp run -S` has already written its values into params.yaml. `dvc checkout` alone
cannot mend that: it restores only the outputs DVC caches, and fails on the others (metrics,
plots and run records, which git keeps). So, in order:

1. git: params.yaml, dvc.lock and every output dvc.yaml declares that git keeps, as the last
   commit has them (files the failed run added inside those outputs are removed);
2. DVC: the cached outputs (models, data, the report) from the cache, as that dvc.lock names
   them (`dvc checkout --force --allow-missing`); the ones your cache does not hold are named
   (`dvc pull` or `dvc repro` makes them).

It touches nothing else: your code and other uncommitted files stay as they are."""
import subprocess
import sys

from tools.plan import ROOT, plan

ALWAYS = ["params.yaml", "dvc.lock"]


def fail(message):
    print(f"restore: error: {message}", file=sys.stderr, flush=True)
    sys.exit(1)


def git(*args):
    result = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True)
    if result.returncode != 0:
        fail(f"git {' '.join(args[:2])}: {result.stderr.strip()}")
    return result.stdout


def main():
    head = git("rev-parse", "--short", "HEAD").strip()
    outs = plan(ROOT).outs
    tracked = sorted({path for stage in outs.values() for path, cached in stage if not cached})
    cached = sorted({path for stage in outs.values() for path, cached in stage if cached})
    in_head = git("ls-tree", "-r", "--name-only", "HEAD", "--", *ALWAYS, *tracked).split()
    # files the failed run added inside git-kept outputs (never those git ignores)
    git("clean", "-f", "-d", "-q", "--", *tracked)
    # removed first: git skips a file whose size and times match its index entry, and DVC's
    # run-cache checkout can leave other bytes under those (seen with a metrics file)
    for name in in_head:
        (ROOT / name).unlink(missing_ok=True)
    git("checkout", "HEAD", "--", *in_head)
    done = subprocess.run([sys.executable, "-m", "dvc", "checkout", "--force", "--allow-missing",
                           "--quiet"], cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        fail(f"dvc checkout: {lines[0] if lines else f'status {done.returncode}'}")
    absent = [path for path in cached if not (ROOT / path).exists()]
    print(f"restore: params.yaml, dvc.lock and the results git keeps are the last commit's "
          f"({head}); the cached outputs come from DVC's cache")
    if absent:
        print(f"restore: not in your DVC cache (`dvc pull`, or `dvc repro` makes them): "
              f"{', '.join(absent)}")


if __name__ == "__main__":
    if len(sys.argv) > 1:
        fail("takes no arguments (see the top of tools/restore.py)")
    main()
