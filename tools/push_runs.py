"""Share every computed run: DVC's run-cache with the outputs of each run in it.

    python -m tools.push_runs [-r REMOTE]     # make share; run from the project's folder

`dvc push --run-cache` (DVC 3) sends the run-cache's records, but of the outputs only those the
workspace's dvc.lock names: a classmate who pulls the run-cache finds records of runs whose
outputs are nowhere, and trains again. This sends the records (DVC's own push) and then every
output they name, from the local cache, through DVC's API (StageCache.get_used_objs, the
objects `dvc repro --pull` fetches to restore a run).

Outputs dvc.lock names that are in no cache here (a fresh clone, a stage not run yet) cannot be
sent: they are named in one line, with the stage that computes them, and left out of the push
(DVC itself would print their hashes, not their paths, as `Some of the cache files do not
exist neither locally nor on remote`).

Elsewhere: `make pull`, then `dvc exp run --pull -S key=value` restores any run someone pushed
instead of training it."""
import argparse
import os
import sys


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", "--remote", help="the DVC remote (default: the project's)")
    args = parser.parse_args(argv)
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    from tools.check_cache import cached_outs, missing_objects

    try:
        repo = Repo(os.getcwd())
        outs = [(stage, out, bool(missing_objects(repo, out))) for stage, out in cached_outs(repo)]
        absent = [(stage, out) for stage, out, lost in outs if lost]
        if absent:
            stages = sorted({stage.addressing for stage, _ in absent})
            print(f"share: {len(absent)} outputs of dvc.lock are in no cache here and are not "
                  f"sent: {', '.join(f'{o.def_path} ({s.addressing})' for s, o in absent)}; "
                  f"`dvc repro {' '.join(stages)}` computes them (or `dvc pull` them from a "
                  "remote that has them)")
        present = [str(out.def_path) for _, out, lost in outs if not lost]
        if present:   # the run-cache's records, and the workspace's outputs
            repo.push(targets=present, remote=args.remote, run_cache=True)
        else:         # (no targets would mean all of them)
            repo.stage_cache.push(args.remote)
        root = os.path.join(repo.cache.legacy.path, "runs")
        runs = [(os.path.basename(folder), name) for folder, _, names in os.walk(root)
                for name in names]
        sent = failed = 0
        for odb, objects in repo.stage_cache.get_used_objs(runs, push=True).items():
            result = repo.cloud.push(objects, remote=args.remote, odb=odb)
            sent, failed = sent + len(result.transferred), failed + len(result.failed)
    except DvcException as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    print(f"pushed the run-cache ({len(runs)} runs) and {sent} of their outputs not yet there"
          + (f"; {failed} failed" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
