"""`make check-cache`: DVC's cache checked object by object, and what a failed save left.

    python -m tools.check_cache            # make check-cache

DVC names each cached object by the MD5 of its bytes but never reads one back to compare: a
byte flipped on disk is checked out, loaded and even linked back by `dvc repro --force`, while
`dvc status` says all is up to date. This recomputes every object's MD5 and removes the ones
that do not match their name, each named in one line with the outputs that use it, so that the
next `dvc pull` fetches them again or `dvc repro` recomputes them. It also removes the
temporary files a killed or failed cache save leaves (`*.tmp`, older than STALE seconds, so as
not to take one from a DVC that is running), and checks that every output of dvc.lock that is
in the workspace also has its objects in the cache: DVC reports a save that failed (a full
disk) as a warning and exits 0, and its next run deletes the workspace copy, the only one.
The exit status is 1 when anything was wrong."""
import hashlib
import json
import os
import sys
import time
from pathlib import Path

STALE = 600   # seconds: a temporary file this old belongs to no running DVC


def md5_of(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def corrupted(cache):
    """The objects of the cache folder (files/md5/xx/rest) whose bytes are not their name."""
    bad = []
    for folder in sorted(p for p in Path(cache).iterdir() if p.is_dir() and len(p.name) == 2):
        for path in sorted(folder.iterdir()):
            if not path.is_file() or path.name.endswith(".tmp"):
                continue
            name = folder.name + path.name.removesuffix(".dir")
            if md5_of(path) != name:
                bad.append(path)
    return bad


def stale_temporaries(root, now=None):
    now = time.time() if now is None else now
    return sorted(p for p in Path(root).rglob("*.tmp")
                  if p.is_file() and now - p.stat().st_mtime > STALE)


def missing_objects(repo, out):
    """The objects of the cached output `out` (for a folder: its manifest and each file's)
    that are not in the local cache."""
    oid = out.hash_info.value
    wanted = [oid]
    manifest = Path(repo.cache.local.oid_to_path(oid))
    if oid.endswith(".dir") and manifest.is_file():
        wanted += [entry["md5"] for entry in json.loads(manifest.read_text())]
    return [o for o in wanted if not os.path.exists(repo.cache.local.oid_to_path(o))]


def cached_outs(repo):
    """(stage, output) of every output of dvc.lock that DVC caches and has a hash for."""
    return [(stage, out) for stage in repo.index.stages for out in stage.outs
            if out.use_cache and out.hash_info and out.hash_info.value]


def unsaved(repo):
    """(output path, missing objects) of every output DVC caches, present in the workspace,
    whose object (for a folder: its manifest and each file's) is not in the cache."""
    return [(out.def_path, lost) for _, out in cached_outs(repo)
            if os.path.exists(out.fs_path) and (lost := missing_objects(repo, out))]


def users(repo):
    """{object hash: [output paths]} of dvc.lock's cached outputs."""
    found = {}
    for out in repo.index.outs:
        if out.use_cache and out.hash_info and out.hash_info.value:
            found.setdefault(out.hash_info.value.removesuffix(".dir"), []).append(out.def_path)
    return found


def main(argv=None):
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        repo = Repo(os.getcwd())
    except DvcException as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    cache = Path(repo.cache.local.path)
    wrong = 0
    if cache.is_dir():
        named = users(repo)
        for path in corrupted(cache):
            oid = path.parent.name + path.name.removesuffix(".dir")
            used_by = ", ".join(named.get(oid, [])) or "no output of dvc.lock"
            path.unlink()
            wrong += 1
            print(f"error: cache object {path.relative_to(repo.root_dir)} was damaged (its "
                  f"bytes are not its MD5) and is removed: {used_by}; `dvc pull` or "
                  "`dvc repro` brings it back", file=sys.stderr)
    for path in stale_temporaries(Path(repo.root_dir) / ".dvc"):
        size = path.stat().st_size
        path.unlink()
        print(f"removed {path.relative_to(repo.root_dir)} ({size:,} bytes), left by a cache "
              "save that did not finish")
    for output, lost in unsaved(repo):
        wrong += 1
        print(f"error: {output} is in the workspace but {len(lost)} of its objects are not in "
              "DVC's cache (a save that failed: disk full?): the workspace copy is the only "
              "one; free some space and run `dvc commit`", file=sys.stderr)
    if not wrong:
        print("cache: every object matches its name, every output of dvc.lock is saved")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
