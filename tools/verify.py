"""Verify a result by computing it again: `make verify STAGE=train@simple_cnn`.

    python -m tools.verify STAGE [--tolerance 0.005]

A shared run (`make pull`, `dvc exp run --pull`) or a pulled commit brings outputs somebody
else computed; the project checks their form (docs/sharing.md), but a number forged within its
range looks like any other. This recomputes STAGE from the same code, params and inputs, in a
temporary clone (`dvc exp run --temp --force --single-item STAGE`: the workspace is not
touched, DVC's run-cache is not used), compares, and removes that experiment:
- the same bytes for every output (the run record `*.run.json` aside: it holds times):
  verified;
- otherwise, where the two run records (`*.run.json`) name the same device and CPU or GPU
  model, the project promises the same bytes (seeded, deterministic): not verified;
- on different hardware, which rounds differently: verified when every number of the stage's
  metrics files is within --tolerance (absolute; 0.005 = half a point of accuracy) of the
  shared one, each difference listed.
Exit status 0 when verified, 1 when not (one line saying why), 2 for a wrong STAGE."""
import argparse
import json
import os
import subprocess
import sys
import uuid

import yaml


def say(message):
    print(f"verify: {message}", flush=True)


def fail(message, status=1):
    print(f"verify: error: {message}", file=sys.stderr, flush=True)
    sys.exit(status)


def run(*command):
    return subprocess.run(command, capture_output=True, text=True,
                          env={**os.environ, "DVC_NO_ANALYTICS": "1"})


def lock_outs(text, stage):
    """{path: md5} of `stage`'s outputs in the dvc.lock `text` (foreach stages as name@item)."""
    entry = (yaml.safe_load(text) or {}).get("stages", {}).get(stage, {})
    return {o["path"]: o.get("md5") for o in entry.get("outs", [])}


def numbers(node, prefix=""):
    """{dotted key: number} of a metrics file's content."""
    if isinstance(node, dict):
        return {k: v for key, value in node.items() for k, v in numbers(value, f"{prefix}{key}.")
                .items()}
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return {prefix.rstrip("."): node}
    return {}


def show(rev, path):
    result = run("git", "show", f"{rev}:{path}")
    return result.stdout if result.returncode == 0 else None


def hardware(record):
    return None if record is None else {k: record.get(k) for k in ("device", "cpu", "gpu")}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("stage", help="e.g. train@simple_cnn")
    parser.add_argument("--tolerance", type=float, default=0.005)
    args = parser.parse_args(argv)
    from dvc.repo import Repo

    with Repo(os.getcwd()) as repo:
        stages = {s.addressing: s for s in repo.index.stages}
        if args.stage not in stages:
            fail(f"no stage {args.stage!r} in dvc.yaml (e.g. {', '.join(list(stages)[:4])})", 2)
        metrics = [str(o.def_path) for o in stages[args.stage].outs if o.is_metric]
    shared = lock_outs(open("dvc.lock").read() if os.path.exists("dvc.lock") else "", args.stage)
    if not shared or not all(shared.values()):
        fail(f"{args.stage} has no result in dvc.lock to verify: pull or run it first")
    name = f"verify-{uuid.uuid4().hex[:8]}"
    say(f"computing {args.stage} again in a temporary clone (experiment {name}) ...")
    ran = run(sys.executable, "-m", "dvc", "exp", "run", "--temp", "--force", "--single-item",
              "-n", name, args.stage)
    try:
        if ran.returncode != 0:
            lines = [line for line in ran.stderr.splitlines() if line.strip()]
            fail(f"recomputing {args.stage} failed: {lines[-1] if lines else ran.returncode}")
        refs = run("git", "for-each-ref", "--format=%(objectname) %(refname)", "refs/exps")
        revs = [line.split()[0] for line in refs.stdout.splitlines()
                if line.endswith(f"/{name}")]
        if not revs:
            fail(f"the experiment {name} left no commit")
        rev = revs[0]
        again = lock_outs(show(rev, "dvc.lock") or "", args.stage)
        # the run record holds times: the one output that differs run to run
        compared = [p for p in shared if not p.endswith(".run.json")]
        differ = sorted(p for p in compared if again.get(p) != shared[p])
        if not differ:
            aside = "; the run record, which holds times, aside" \
                if len(compared) < len(shared) else ""
            say(f"{args.stage}: verified, the same bytes ({len(compared)} outputs{aside})")
            return 0
        records = [p for p in shared if p.endswith(".run.json")]
        mine = hardware(json.loads(show(rev, records[0]) or "null")) if records else None
        theirs = hardware(json.loads(open(records[0]).read())) if records and \
            os.path.exists(records[0]) else None
        if mine is not None and mine == theirs:
            model = mine["gpu"] or mine["cpu"]
            fail(f"{args.stage}: not verified: on the same hardware ({model}) it gives other "
                 f"bytes for {', '.join(differ)}: the shared result is not what this code, "
                 "params and data compute")
        gaps = []
        for path in metrics:
            old = numbers(json.loads(open(path).read())) if os.path.exists(path) else {}
            new = numbers(json.loads(show(rev, path) or "{}"))
            gaps += [(f"{path}:{key}", old.get(key), new.get(key)) for key in sorted({*old, *new})
                     if old.get(key) is None or new.get(key) is None
                     or abs(old[key] - new[key]) > 1e-12]
        worst = [g for g in gaps if g[1] is None or g[2] is None
                 or abs(g[1] - g[2]) > args.tolerance]
        listing = "; ".join(f"{k} {a} shared, {b} recomputed" for k, a, b in gaps) or "none"
        if worst:
            fail(f"{args.stage}: not verified: {len(worst)} metrics differ by more than "
                 f"{args.tolerance:g} on other hardware: {listing}")
        say(f"{args.stage}: verified within {args.tolerance:g} on other hardware (other bytes "
            f"for {', '.join(differ)}); metrics that differ: {listing}")
        return 0
    finally:
        run(sys.executable, "-m", "dvc", "exp", "remove", name)


if __name__ == "__main__":
    sys.exit(main())
