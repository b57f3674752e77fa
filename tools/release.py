"""Release the trained models: each artifact of dvc.yaml whose model the last commit holds gets
a version (a GTO git tag `<name>@vX.Y.Z` on that commit), its weights on the DVC remote, so
that anyone with the repository's URL can fetch it:

    python -m tools.release [--version vX.Y.Z] [-r REMOTE]   # make release (RELEASE_FLAGS)
    git push origin --tags                                   # the tags it printed
    dvc artifacts get <repository URL> simple-cnn-mnist      # elsewhere: the latest version

Without --version each artifact gets its next patch version (GTO's bump; v0.0.1 first). An
artifact whose stage has not run (a model that needs the ImageNet weights, on a machine
without them) is left out, named. Refused, in one line and before any tag: uncommitted
changes to dvc.yaml, dvc.lock or params.yaml (a tag names a commit: its models must be the
ones in it), a model that is not in DVC's cache, no DVC remote, a push that failed."""
import argparse
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fail(message):
    print(f"release: error: {message}", file=sys.stderr)
    sys.exit(1)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="release", description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", help="vX.Y.Z for every artifact (default: the next patch)")
    parser.add_argument("-r", "--remote", help="the DVC remote (default: the project's)")
    args = parser.parse_args(argv)
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from gto.api import register
    from gto.exceptions import GTOException

    project = Path.cwd()
    changed = subprocess.run(["git", "status", "--porcelain", "--", "dvc.yaml", "dvc.lock",
                              "params.yaml"], cwd=project, capture_output=True, text=True)
    if changed.returncode != 0:
        fail(f"not a git repository: {changed.stderr.strip()}")
    if changed.stdout.strip():
        fail("dvc.yaml, dvc.lock or params.yaml has uncommitted changes: commit the results "
             "first (a version names a commit)")
    with Repo(str(project)) as repo:
        if not (args.remote or repo.config["core"].get("remote")):
            fail("no DVC remote (dvc remote add -d NAME URL): `dvc artifacts get` fetches the "
                 "weights from it")
        artifacts = repo.artifacts.read().get("dvc.yaml", {})
        outs = {str(out.def_path): out for stage in repo.index.stages for out in stage.outs}
        ready, skipped = {}, []
        for name, artifact in artifacts.items():
            out = outs.get(artifact.path)
            if out is None:
                skipped.append(f"{name} ({artifact.path}: no stage of dvc.yaml writes it)")
            elif not (out.hash_info and out.hash_info.value):
                skipped.append(f"{name} ({artifact.path}: its stage has not run)")
            elif not out.cache.exists(out.hash_info.value):
                fail(f"{artifact.path} is not in DVC's cache (dvc pull or dvc repro it first)")
            else:
                ready[name] = artifact.path
        if not ready:
            fail("no artifact's model has been trained: nothing to release")
        try:
            pushed = repo.push(targets=list(ready.values()), remote=args.remote)
        except DvcException as error:
            fail(f"dvc push failed: {error}")
    print(f"release: {len(ready)} models on the DVC remote ({pushed} files sent)")
    tags = []
    for name in ready:
        try:
            tag = register(str(project), name, ref="HEAD", version=args.version)
        except GTOException as error:
            fail(f"{name}: {error}")
        tags.append(f"{name}@{tag.version}")
        print(f"release: {name} {tag.version} ({ready[name]})")
    for line in skipped:
        print(f"release: left out {line}")
    print(f"release: next: git push origin {' '.join(tags)}; then anyone runs `dvc artifacts "
          f"get <repository URL> {next(iter(ready))}` (the latest version, or NAME@vX.Y.Z)")
    return 0


if __name__ == "__main__":
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    sys.exit(main())
