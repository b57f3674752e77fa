"""`make pull`: the runs others shared on the DVC remote, checked before any of them is used.

    python -m tools.pull_runs [-r REMOTE]     # make pull; run from the project's folder

`dvc pull --run-cache` copies every run-cache entry of the remote as it finds it, and DVC later
restores an entry's outputs to the paths the entry itself lists: whoever can write the remote
can plant a file anywhere in your project (an extra output `yaml.py` is imported by the next
stage) or, through an object key with `..`, outside it (docs/sharing.md: trust model). This
reads the remote's entries first and refuses them all, writing nothing, when any one is not
what this project's stages write:
  - its object key is not runs/<sha256>/<sha256> (a `..` key leaves the cache folder);
  - it is not a small YAML file in DVC's lock format, or it uses YAML aliases;
  - its name is not the hash of its content (DVC names entries so: an entry edited by hand);
  - its command is no stage's of dvc.yaml, or its outputs differ from that stage's declared
    outputs (one more, one fewer, a path outside the project);
  - a hash in it is not a plain hexadecimal digest.
Then it adds them to the local run-cache, fetches the outputs they name and checks those as the
stages would have written them (metrics in their ranges, class names by the stages' rule,
models through the safe loader); an entry whose outputs fail is taken out again. The exit
status is 1 on any refusal, with one line saying what and where."""
import argparse
import copy
import csv
import io
import json
import os
import posixpath
import re
import sys
from pathlib import Path

import yaml

from stages.lib.core.common import StageError
from stages.lib.core.files import write_atomic
from stages.lib.core.names import check_class_name

RUN_KEY = re.compile(r"runs/([0-9a-f]{2})/([0-9a-f]{64})/([0-9a-f]{64})")
DIGEST = re.compile(r"[0-9a-f]{32}(\.dir)?")
MAX_ENTRY = 64 << 10      # bytes: an entry lists a stage's deps, params and outs
MAX_RECORD = 16 << 20     # bytes of a JSON or CSV output read back to check it
RANGES = {"accuracy": (0, 1), "best_accuracy": (0, 1), "probe": (0, 1), "silhouette": (-1, 1)}


class Refused(Exception):
    pass


def declared_outputs(repo):
    """{command: (stage name, {output paths})} of dvc.yaml's stages, as DVC resolves them."""
    found = {}
    for stage in repo.index.stages:
        if getattr(stage, "cmd", None):
            cmd = stage.cmd if isinstance(stage.cmd, str) else " && ".join(stage.cmd)
            found[cmd] = (stage.addressing, {out.def_path for out in stage.outs})
    return found


def inside(path):
    """A relative path that stays in the project."""
    clean = posixpath.normpath(path)
    return not (posixpath.isabs(path) or clean == ".." or clean.startswith("../")
                or "\\" in path or ":" in path.split("/")[0])


def check_entry(rel, raw, declared):
    """The entry at object key `rel` (bytes `raw`) as DVC wrote it for one of our stages, or
    Refused saying why. Returns (key, value, entry)."""
    from dvc.schema import COMPILED_LOCK_FILE_STAGE_SCHEMA
    from dvc.stage.cache import _get_cache_hash
    from voluptuous import Invalid

    match = RUN_KEY.fullmatch(rel)
    if not match or not match.group(2).startswith(match.group(1)):
        raise Refused(f"object key {rel[:120]!r} is not runs/<hash>/<hash>")
    key, value = match.group(2), match.group(3)
    if len(raw) > MAX_ENTRY:
        raise Refused(f"{len(raw):,} bytes, more than a run's record ever takes")
    try:
        text = raw.decode("utf-8")
        if any(isinstance(token, (yaml.AliasToken, yaml.AnchorToken))
               for token in yaml.scan(text)):
            raise Refused("YAML aliases, which DVC's records never use")
        entry = COMPILED_LOCK_FILE_STAGE_SCHEMA(yaml.safe_load(text))
    except (UnicodeDecodeError, yaml.YAMLError, Invalid, TypeError) as error:
        raise Refused(f"not a run record ({str(error).splitlines()[0][:100]})") from None
    if _get_cache_hash(copy.deepcopy(entry)) != value or \
            _get_cache_hash(copy.deepcopy(entry), key=True) != key:
        raise Refused("its name is not the hash of its content (edited after DVC wrote it)")
    cmd = entry["cmd"] if isinstance(entry["cmd"], str) else " && ".join(entry["cmd"])
    outs = [out["path"] for out in entry.get("outs", [])]
    for path in outs + [dep["path"] for dep in entry.get("deps", [])]:
        if not inside(path):
            raise Refused(f"path {path!r} is outside the project")
    if cmd not in declared:
        raise Refused(f"a run of {cmd[:80]!r}, which no stage of dvc.yaml runs")
    stage, expected = declared[cmd]
    if set(outs) != expected or len(outs) != len(set(outs)):
        extra, missing = sorted(set(outs) - expected), sorted(expected - set(outs))
        raise Refused(f"outputs that stage {stage} does not declare: "
                      + ", ".join([f"+{p}" for p in extra] + [f"-{p}" for p in missing]))
    for item in entry.get("outs", []) + entry.get("deps", []):
        digest = item.get("md5")
        if digest is not None and not DIGEST.fullmatch(str(digest)):
            raise Refused(f"hash {str(digest)[:40]!r} of {item['path']} is not a digest")
    return key, value, entry


def check_output(path, data):
    """An output's bytes as the stage that writes `path` would have written them: metrics in
    their ranges, class names by the stages' rule, a model loadable by the safe loader."""
    if path.endswith(".json"):
        record = json.loads(data[:MAX_RECORD])

        def walk(node, where):
            for name, value in node.items() if isinstance(node, dict) else ():
                if name in RANGES and value is not None:
                    low, high = RANGES[name]
                    if isinstance(value, bool) or not isinstance(value, (int, float)) \
                            or not low <= value <= high:
                        raise Refused(f"{where}{name} is {value!r}, outside {low}..{high}")
                walk(value, f"{where}{name}.")
        walk(record, f"{path}: ")
    elif path.endswith(".csv"):
        rows = csv.DictReader(io.StringIO(data[:MAX_RECORD].decode("utf-8")))
        for row in rows:
            for column in ("actual", "predicted", "class"):
                if row.get(column) is not None:
                    try:
                        check_class_name(row[column], path)
                    except StageError as error:
                        raise Refused(str(error)) from None
    elif path.endswith(".pt"):
        import torch
        try:
            torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as error:   # noqa: BLE001 (any refusal of the safe loader)
            raise Refused(f"{path} does not load with weights_only=True "
                          f"({str(error).splitlines()[0][:100]})") from None


def check_outputs(repo, entry):
    """check_output for every single-file output of `entry` that is in the local cache."""
    for out in entry.get("outs", []):
        digest = out.get("md5")
        if digest and not digest.endswith(".dir"):
            local = repo.cache.local.oid_to_path(digest)
            if os.path.exists(local):
                check_output(out["path"], Path(local).read_bytes())


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-r", "--remote", help="the DVC remote (default: the project's)")
    args = parser.parse_args(argv)
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        repo = Repo(os.getcwd())
        odb = repo.cloud.get_remote_odb(args.remote, "fetch --run-cache",
                                        hash_name="md5-dos2unix")
        fs, runs = odb.fs, odb.fs.join(odb.path, "runs")
        found = sorted(fs.find(runs)) if fs.exists(runs) else []
        declared = declared_outputs(repo)
        accepted, refused = [], []
        base = odb.path.rstrip("/") + "/"
        for src in found:
            rel = src[len(base):] if src.startswith(base) else src   # as stored: no normalising
            try:
                if fs.size(src) > MAX_ENTRY:
                    raise Refused(f"{fs.size(src):,} bytes, more than a run's record takes")
                accepted.append(check_entry(rel, fs.cat_file(src), declared))
            except Refused as why:
                refused.append(f"{rel[:120]}: {why}")
        if refused:
            print(f"error: the remote's run-cache holds {len(refused)} entries this project "
                  f"refuses, nothing was pulled (tell whoever can write the remote): "
                  f"{refused[0]}" + (f"; and {len(refused) - 1} more" if len(refused) > 1
                                     else ""), file=sys.stderr)
            return 1
        for key, value, entry in accepted:
            path = Path(repo.stage_cache.cache_dir) / key[:2] / key / value
            write_atomic(path, yaml.safe_dump(entry, sort_keys=False).encode())
        objects = repo.stage_cache.get_used_objs([(k, v) for k, v, _ in accepted])
        fetched = failed = 0
        for local_odb, objs in objects.items():
            result = repo.cloud.pull(objs, remote=args.remote, odb=local_odb)
            fetched, failed = fetched + len(result.transferred), failed + len(result.failed)
        bad = []
        for key, value, entry in accepted:
            try:
                check_outputs(repo, entry)
            except (Refused, ValueError, UnicodeDecodeError) as why:
                (Path(repo.stage_cache.cache_dir) / key[:2] / key / value).unlink()
                bad.append(f"runs/{key[:2]}/{key}/{value}: {why}")
    except DvcException as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if bad:
        print(f"error: {len(bad)} of {len(accepted)} shared runs hold outputs no stage of this "
              f"project writes, taken out again: {bad[0]}", file=sys.stderr)
        return 1
    print(f"pulled {len(accepted)} shared runs, checked, and {fetched} of their outputs"
          + (f"; {failed} could not be fetched" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
